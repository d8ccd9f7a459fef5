"""The web login is limited per username and per address; tokens end with a password change and are capped."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.tokens import token_issue

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_rate_windows():
    """Rate-limit counters live in the cache (Redis in CI), across tests: start each test with none."""
    from django.core.cache import cache

    cache.clear()


def _web_login(client, username="north_rep1", password="wrong"):
    return client.post("/accounts/login/", {"username": username, "password": password})


def test_the_web_login_locks_a_username_after_repeated_failures(sales_org, settings):
    limit = settings.AXES_FAILURE_LIMIT
    codes = [_web_login(Client(REMOTE_ADDR=f"192.0.2.{i}")).status_code for i in range(limit + 1)]
    assert codes[:limit - 1] == [200] * (limit - 1)  # the form again, with its error
    assert codes[-1] == 429
    # even the right password waits for the cool-off
    locked = _web_login(Client(REMOTE_ADDR="192.0.2.200"), password="pw-Secret-123")
    assert locked.status_code == 429
    assert b"Too many failed" in locked.content
    # another user from another address is not affected
    assert _web_login(Client(REMOTE_ADDR="192.0.2.201"), username="north_rep2",
                      password="pw-Secret-123").status_code == 302


def test_the_web_login_locks_an_address_trying_many_usernames(sales_org, settings):
    limit = settings.AXES_FAILURE_LIMIT
    client = Client(REMOTE_ADDR="198.51.100.1")
    codes = [_web_login(client, username=f"guess{i}", password="x").status_code for i in range(limit + 1)]
    assert codes[-1] == 429
    forged = Client(REMOTE_ADDR="198.51.100.1", HTTP_X_FORWARDED_FOR="203.0.113.5")
    assert _web_login(forged, password="pw-Secret-123").status_code == 429


def test_the_token_login_counts_toward_the_same_lockout(sales_org, settings):
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "login": "1000/min", "login_user": "1000/min"}
    for i in range(settings.AXES_FAILURE_LIMIT):
        APIClient(REMOTE_ADDR=f"192.0.2.{i}").post("/api/v1/auth/token/", {"username": "north_rep1",
                                                                             "password": "bad"}, format="json")
    locked = APIClient(REMOTE_ADDR="192.0.2.99").post(
        "/api/v1/auth/token/", {"username": "north_rep1", "password": "pw-Secret-123"}, format="json")
    assert locked.status_code == 429
    assert locked["Content-Type"] == "application/problem+json"
    assert int(locked["Retry-After"]) > 0


def test_a_password_change_revokes_the_users_api_tokens(sales_org):
    rep = sales_org["north_rep1"]
    _, key = token_issue(user=rep, name="ERP")
    other_user_token, other_key = token_issue(user=sales_org["north_rep2"])
    web = Client()
    web.force_login(rep)
    response = web.post("/accounts/password_change/", {
        "old_password": "pw-Secret-123", "new_password1": "An0ther-Long-Pass", "new_password2": "An0ther-Long-Pass",
    })
    assert response.status_code == 302
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/v1/customers/").status_code == 401
    api.credentials(HTTP_AUTHORIZATION=f"Token {other_key}")
    assert api.get("/api/v1/customers/").status_code == 200


def test_set_password_anywhere_revokes_tokens(sales_org):
    rep = sales_org["north_rep1"]
    token, _ = token_issue(user=rep)
    rep.set_password("Yet-another-pass-42")
    rep.save()
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_tokens_per_user_are_capped(sales_org, settings):
    settings.API_TOKENS_PER_USER = 3
    client = APIClient()
    codes = [client.post("/api/v1/auth/token/", {"username": "north_rep1", "password": "pw-Secret-123"},
                         format="json").status_code for _ in range(4)]
    assert codes == [201, 201, 201, 409]
    assert ApiToken.objects.filter(user=sales_org["north_rep1"], revoked_at__isnull=True).count() == 3
    # revoking one makes room
    ApiToken.objects.filter(user=sales_org["north_rep1"]).first().delete()
    assert client.post("/api/v1/auth/token/", {"username": "north_rep1", "password": "pw-Secret-123"},
                       format="json").status_code == 201
