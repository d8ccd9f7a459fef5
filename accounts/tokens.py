"""API tokens: issue, authenticate, revoke. Keys are stored as SHA-256 digests only.

A user holds at most API_TOKENS_PER_USER live tokens (each token has its own rate budget, so
an unbounded number would multiply it); a new password revokes all of them.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import ApiToken, User

KEY_PREFIX = "crm_"
LAST_USED_RESOLUTION = timedelta(minutes=1)  # write last_used_at at most once a minute per token


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class TooManyTokens(Exception):
    """The user already holds the most live tokens allowed."""


def live_tokens(user: User):
    now = timezone.now()
    return ApiToken.objects.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now), user=user,
                                   revoked_at__isnull=True)


@transaction.atomic
def token_issue(*, user: User, name: str = "", expires_at=None) -> tuple[ApiToken, str]:
    """Create a token for `user`; returns it and the clear key (never stored, shown once).

    Raises TooManyTokens when the user holds API_TOKENS_PER_USER live tokens already.
    """
    User.objects.select_for_update().filter(pk=user.pk).first()  # one issue at a time per user
    limit = settings.API_TOKENS_PER_USER
    if live_tokens(user).count() >= limit:
        raise TooManyTokens(f"You hold {limit} live API tokens, the most allowed; revoke one you no longer use.")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name, prefix=key[: len(KEY_PREFIX) + 6], key_hash=_digest(key), expires_at=expires_at
    )
    return token, key


def token_authenticate(key: str) -> ApiToken | None:
    """The live token for `key` (its user active), or None."""
    if not key or len(key) > 200:
        return None
    token = ApiToken.objects.select_related("user").filter(key_hash=_digest(key), revoked_at__isnull=True).first()
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.expires_at is not None and token.expires_at <= now:
        return None
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def token_revoke(*, token: ApiToken) -> ApiToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token


def tokens_revoke_all(*, user: User) -> int:
    """Revoke every live token of `user` (a new password ends the old credentials); returns how many."""
    return ApiToken.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=timezone.now())
