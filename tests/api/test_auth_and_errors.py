"""Tokens (hashed, revocable), session auth with CSRF, problem details, throttling, values and analytics."""

from __future__ import annotations

import hashlib
from datetime import date, timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.tokens import token_issue
from clv.models import ClvRun, CustomerValue

pytestmark = pytest.mark.django_db


def test_token_is_issued_once_and_stored_hashed(sales_org):
    client = APIClient()
    response = client.post("/api/v1/auth/token/", {"username": "north_rep1", "password": "pw-Secret-123",
                                                    "name": "ERP"}, format="json")
    assert response.status_code == 201
    key = response.json()["token"]
    stored = ApiToken.objects.get(pk=response.json()["id"])
    assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in str(ApiToken.objects.filter(pk=stored.pk).values().get())
    for scheme in ("Token", "Bearer"):
        client.credentials(HTTP_AUTHORIZATION=f"{scheme} {key}")
        assert client.get("/api/v1/customers/").status_code == 200
    listed = client.get("/api/v1/auth/tokens/").json()["results"]
    assert [t["name"] for t in listed] == ["ERP"]
    assert "token" not in listed[0]
    assert "key_hash" not in listed[0]


def test_wrong_password_and_bad_tokens_get_401(sales_org):
    client = APIClient()
    wrong = client.post("/api/v1/auth/token/", {"username": "north_rep1", "password": "nope"}, format="json")
    assert wrong.status_code == 401
    assert wrong["Content-Type"] == "application/problem+json"
    client.credentials(HTTP_AUTHORIZATION="Token crm_not-a-real-key")
    response = client.get("/api/v1/customers/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Token")
    assert APIClient().get("/api/v1/customers/").status_code == 401


def test_revoked_and_expired_tokens_stop_working(sales_org):
    token, key = token_issue(user=sales_org["north_rep1"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.delete("/api/v1/auth/token/").status_code == 204
    assert client.get("/api/v1/customers/").status_code == 401
    expired, key2 = token_issue(user=sales_org["north_rep1"], expires_at=timezone.now() - timedelta(seconds=1))
    client.credentials(HTTP_AUTHORIZATION=f"Token {key2}")
    assert client.get("/api/v1/customers/").status_code == 401
    other, key3 = token_issue(user=sales_org["north_rep1"])
    client.credentials(HTTP_AUTHORIZATION=f"Token {key3}")
    assert client.delete(f"/api/v1/auth/tokens/{other.pk}/").status_code == 204
    assert client.get("/api/v1/customers/").status_code == 401


def test_session_auth_needs_csrf_for_writes(book, sales_org):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(sales_org["north_rep1"])
    assert client.get("/api/v1/customers/").status_code == 200
    response = client.post("/api/v1/customers/", {"name": "No CSRF"}, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_errors_are_problem_details(api, sales_org):
    client = api(sales_org["north_rep1"])
    missing = client.get("/api/v1/nowhere/")
    assert missing.status_code == 404
    assert missing["Content-Type"] == "application/problem+json"
    assert missing.json()["status"] == 404
    not_allowed = client.put("/api/v1/customers/", {}, format="json")
    assert not_allowed.status_code == 405
    assert not_allowed.json()["title"]
    media = client.post("/api/v1/customers/", "name=x", content_type="application/x-www-form-urlencoded")
    assert media.status_code == 415
    broken = client.post("/api/v1/customers/", "{not json", content_type="application/json")
    assert broken.status_code == 400
    invalid = client.post("/api/v1/customers/", {"name": "", "kind": "planet"}, format="json").json()
    assert invalid["type"].endswith("/validation-error")
    assert {e["field"] for e in invalid["errors"]} == {"name", "kind"}


def test_throttling_answers_429_with_retry_after(api, sales_org, settings):
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "api": "3/min"}
    client = api(sales_org["north_rep1"])
    codes = [client.get("/api/v1/products/").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = client.get("/api/v1/products/")
    assert 1 <= int(limited["Retry-After"]) <= 61
    assert limited["Content-Type"] == "application/problem+json"
    assert api(sales_org["north_rep1"]).get("/api/v1/products/").status_code == 200  # per token


def _run(as_of, current):
    now = timezone.now()
    return ClvRun.objects.create(status=ClvRun.Status.SUCCEEDED, is_current=current, as_of=as_of, started_at=now,
                                 finished_at=now, model="bgnbd")


def test_values_of_the_current_run_and_of_a_given_run(api, book, sales_org):
    old, new = _run(date(2026, 10, 1), False), _run(date(2026, 11, 1), True)
    for run, clv in ((old, "100.00"), (new, "150.00")):
        for name in ("a1", "b1"):
            CustomerValue.objects.create(run=run, customer=book[name]["customer"], clv=clv, p_alive=0.8,
                                         expected_purchases=2, expected_avg_value=50, historical_value=10,
                                         classic_value=20, frequency=2, recency=30, T=60)
    client = api(sales_org["north_rep1"])
    current = client.get("/api/v1/values/").json()["results"]
    assert [(v["customer"], v["clv"], v["run"]) for v in current] == [(book["a1"]["customer"].pk, "150.00", new.pk)]
    older = client.get("/api/v1/values/", {"run": old.pk}).json()["results"]
    assert [v["clv"] for v in older] == ["100.00"]
    history = client.get(f"/api/v1/customers/{book['a1']['customer'].pk}/values/").json()
    assert [v["as_of"] for v in history] == ["2026-11-01", "2026-10-01"]
    assert client.get(f"/api/v1/values/{book['b1']['customer'].pk}/").status_code == 404
    assert client.get("/api/v1/clv-runs/").status_code == 403  # whole-book figures: managers and admins
    runs = api(sales_org["north_manager"]).get("/api/v1/clv-runs/").json()["results"]
    assert [r["id"] for r in runs] == [new.pk, old.pk]


def test_analytics_questions(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    index = client.get("/api/v1/analytics/").json()["questions"]
    assert len(index) == 8
    buyers = client.get("/api/v1/analytics/product-buyers/", {"product": book["a1"]["product"].sku}).json()
    assert buyers["answer"]["customers"] == 1
    assert client.get("/api/v1/analytics/product-buyers/").status_code == 400
    assert client.get("/api/v1/analytics/product-buyers/", {"product": book["b1"]["product"].sku}).json()[
        "answer"]["customers"] == 0  # another rep's buyer is not counted
    assert client.get("/api/v1/analytics/unknown/").status_code == 404
    assert client.get("/api/v1/analytics/most-profitable/", {"by": "luck"}).status_code == 400
    for question in ("contact-frequency", "most-profitable", "customer-products", "loyalty-patterns",
                     "valuable-not-contacted"):
        assert client.get(f"/api/v1/analytics/{question}/").status_code == 200, question


def test_schema_and_docs_are_served_without_a_cdn(api, sales_org, client):
    client.force_login(sales_org["north_rep1"])
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    spec = schema.json()
    assert spec["openapi"].startswith("3.")
    assert "/api/v1/sync/changes/" in spec["paths"]
    assert "/api/v1/purchases/bulk/" in spec["paths"]
    docs = client.get("/api/v1/docs/").content.decode()
    assert "swagger-ui" in docs
    assert "cdn" not in docs.lower()
