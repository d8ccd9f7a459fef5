"""Rate limits: a fixed one-minute window counted in the cache (Redis in production).

Per API token when one is used (so two integrations of one user do not share a budget), else
per user, else per client address. Over the limit: 429 with Retry-After (seconds to the next
window). One cache increment per request, whatever the rate.

Token requests with a password have two more budgets, one per client address and one per
username, so neither a new X-Forwarded-For per try (the address is the one
accounts.login_limits.client_address trusts) nor many addresses against one user get more
tries. Revoking one's own token counts against the ordinary API budget, not these.
"""

from __future__ import annotations

import hashlib
import time

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from rest_framework.throttling import BaseThrottle

from accounts.login_limits import client_address
from accounts.models import ApiToken

WINDOW_SECONDS = 60


def parse_rate(rate: str) -> int:
    """'1200/min' -> 1200 requests per minute."""
    count, _, unit = rate.partition("/")
    per_minute = {"s": 60, "sec": 60, "second": 60, "m": 1, "min": 1, "minute": 1, "h": 1 / 60, "hour": 1 / 60}
    return max(1, int(int(count) * per_minute[unit or "min"]))


def _count(key: str, ttl: int) -> int:
    """Increment and return the counter `key`: one round trip on Redis, add + incr elsewhere."""
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        full_key = backend.make_and_validate_key(key)
        pipe = backend._cache.get_client(full_key, write=True).pipeline(transaction=False)
        pipe.incr(full_key)
        pipe.expire(full_key, ttl, nx=True)
        return int(pipe.execute()[0])
    backend.add(key, 0, timeout=ttl)
    try:
        return backend.incr(key)
    except ValueError:  # expired between add and incr
        backend.set(key, 1, timeout=ttl)
        return 1


class WindowThrottle(BaseThrottle):
    scope = "api"

    def rate(self) -> int:
        return parse_rate(settings.API_THROTTLE_RATES[self.scope])

    def get_ident(self, request) -> str:
        return client_address(request._request if hasattr(request, "_request") else request)

    def ident(self, request) -> str | None:
        if isinstance(request.auth, ApiToken):
            return f"token:{request.auth.key_hash[:24]}"
        if request.user and request.user.is_authenticated:
            return f"user:{request.user.pk}"
        return f"addr:{self.get_ident(request)}"

    def allow_request(self, request, view):
        ident = self.ident(request)
        if ident is None:
            return True
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        key = f"throttle:{self.scope}:{ident}:{window}"
        count = _count(key, WINDOW_SECONDS + 5)
        self._wait = (window + 1) * WINDOW_SECONDS - now
        return count <= self.rate()

    def wait(self):
        return self._wait


class ApiThrottle(WindowThrottle):
    scope = "api"


class LoginThrottle(WindowThrottle):
    """Token requests with a password: per client address, to slow password guessing."""

    scope = "login"

    def ident(self, request) -> str:
        return f"addr:{self.get_ident(request)}"


class LoginUsernameThrottle(WindowThrottle):
    """Token requests with a password: per username tried (case-folded), from any address."""

    scope = "login_user"

    def ident(self, request) -> str | None:
        data = request.data
        username = data.get("username") if isinstance(data, dict) else None
        if not isinstance(username, str) or not username:
            return None  # refused as invalid anyway; the address budget still counts it
        digest = hashlib.sha256(username.strip().casefold().encode()).hexdigest()[:32]
        return f"user:{digest}"
