"""Issue 14's findings against the API: each test is the attack that worked, now refused cleanly."""

from __future__ import annotations

import base64
import json

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from crm.models import Contact, Customer

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_rate_windows():
    """Rate-limit counters live in the cache (Redis in CI), across tests: start each test with none."""
    from django.core.cache import cache

    cache.clear()

PROBLEM = "application/problem+json"


# --- 1. login brute force ----------------------------------------------------------------


def _login(client, username="north_rep1", password="wrong", **extra):
    return client.post("/api/v1/auth/token/", {"username": username, "password": password}, format="json", **extra)


def test_token_login_throttle_ignores_a_forged_forwarded_for(sales_org, settings):
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "login": "3/min", "login_user": "100/min"}
    client = APIClient(REMOTE_ADDR="203.0.113.77")
    codes = [_login(client, username=f"nobody{i}", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}").status_code for i in range(5)]
    assert codes[:3] == [401, 401, 401]
    assert codes[3:] == [429, 429]
    # the right password from the throttled address, with yet another header, gets no token
    right = _login(client, password="pw-Secret-123", HTTP_X_FORWARDED_FOR="10.9.9.9")
    assert right.status_code == 429
    assert right["Content-Type"] == PROBLEM


def test_token_login_is_throttled_per_username_across_addresses(sales_org, settings):
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "login": "100/min", "login_user": "3/min"}
    codes = [_login(APIClient(REMOTE_ADDR=f"192.0.2.{i}")).status_code for i in range(5)]
    assert codes == [401, 401, 401, 429, 429]
    assert _login(APIClient(REMOTE_ADDR="192.0.2.50"), username="north_rep2").status_code == 401


def test_the_trusted_proxy_count_picks_the_address_the_proxy_saw(sales_org, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    settings.NUM_PROXIES = 1
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "login": "2/min", "login_user": "100/min"}
    client = APIClient()
    # one proxy: the last address of the header is the client's; what the client prepends is ignored
    codes = [
        _login(client, username=f"u{i}", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}, 198.51.100.7").status_code
        for i in range(3)
    ]
    assert codes == [401, 401, 429]
    assert _login(client, username="u9", HTTP_X_FORWARDED_FOR="198.51.100.8").status_code == 401


def test_revoking_your_token_does_not_share_the_login_bucket(api, sales_org, settings):
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "login": "2/min", "login_user": "2/min"}
    client = APIClient()
    for _ in range(3):
        _login(client)
    assert _login(client).status_code == 429
    holder = api(sales_org["north_rep1"])
    assert holder.delete("/api/v1/auth/token/").status_code == 204
    assert holder.get("/api/v1/customers/").status_code == 401


# --- 2. people of another customer ------------------------------------------------------------


def test_a_contact_moved_by_the_api_drops_the_people_of_its_old_customer(api, book, sales_org):
    contact = book["a1"]["contact"]
    contact.people.set([book["a1"]["person"]])
    manager = api(sales_org["north_manager"])
    response = manager.patch(f"/api/v1/contacts/{contact.pk}/", {"customer": book["b1"]["customer"].pk},
                             format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["people"] == []
    assert list(Contact.objects.get(pk=contact.pk).people.all()) == []


def test_a_contact_cannot_be_moved_together_with_people_of_its_old_customer(api, book, sales_org):
    contact = book["a1"]["contact"]
    manager = api(sales_org["north_manager"])
    response = manager.patch(
        f"/api/v1/contacts/{contact.pk}/",
        {"customer": book["b1"]["customer"].pk, "people": [book["a1"]["person"].pk]}, format="json",
    )
    assert response.status_code == 400
    assert Contact.objects.get(pk=contact.pk).customer_id == book["a1"]["customer"].pk


# --- 3. external ids of records out of view -----------------------------------------------------


def test_a_taken_external_id_answers_the_same_whether_the_record_is_visible_or_not(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    mine = client.post("/api/v1/customers/", {"name": "X", "external_id": "C-a2"}, format="json")
    theirs = client.post("/api/v1/customers/", {"name": "X", "external_id": "C-s1"}, format="json")
    assert mine.status_code == theirs.status_code == 409
    assert mine.json()["detail"].replace("C-a2", "") == theirs.json()["detail"].replace("C-s1", "")
    assert mine.json()["type"] == theirs.json()["type"]
    customer = book["a1"]["customer"]
    patch_mine = client.patch(f"/api/v1/customers/{customer.pk}/", {"external_id": "C-a2"}, format="json")
    patch_theirs = client.patch(f"/api/v1/customers/{customer.pk}/", {"external_id": "C-s1"}, format="json")
    assert patch_mine.status_code == patch_theirs.status_code == 409
    assert patch_mine.json()["detail"].replace("C-a2", "") == patch_theirs.json()["detail"].replace("C-s1", "")


def test_bulk_does_not_say_an_external_id_belongs_to_someone_you_cannot_see(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    response = client.post("/api/v1/customers/bulk/", {"records": [{"external_id": "C-s1", "name": "X"}]},
                           format="json")
    body = json.dumps(response.json())
    assert "cannot" not in body
    assert "you" not in body.lower().replace("your", "")
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "external_id_taken"
    assert Customer.objects.get(external_id="C-s1").name != "X"


def test_bulk_by_someone_who_sees_every_record_updates_any_of_them(api, book, sales_org):
    """The visibility check is skipped for a caller whose queryset has no filter; the write still happens."""
    admin = User.objects.create_superuser("bulk-admin", password="x-pass-2026")
    assert admin.sees_everything
    response = api(admin).post("/api/v1/customers/bulk/", {"records": [
        {"external_id": "C-s1", "name": "Renamed by admin"}, {"external_id": "C-a2", "name": "Also renamed"},
    ]}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["updated"] == 2
    assert Customer.objects.get(external_id="C-s1").name == "Renamed by admin"


@pytest.mark.parametrize(("path", "field"), [("/api/v1/customers/", "owner"), ("/api/v1/contacts/", "salesperson")])
def test_user_fields_answer_the_same_for_missing_and_forbidden_users(api, book, sales_org, path, field):
    client = api(sales_org["north_rep1"])
    base = {"name": "X"} if field == "owner" else {
        "customer": book["a1"]["customer"].pk, "channel": "call", "subject": "Hi",
    }
    forbidden = client.post(path, {**base, field: sales_org["south_rep1"].pk}, format="json")
    missing = client.post(path, {**base, field: 987654}, format="json")
    assert forbidden.status_code == missing.status_code == 400
    strip = lambda r, pk: [e["message"].replace(str(pk), "") for e in r.json()["errors"]]  # noqa: E731
    assert strip(forbidden, sales_org["south_rep1"].pk) == strip(missing, 987654)


# --- 5. request size ------------------------------------------------------------------------


def test_a_body_over_the_limit_gets_413_before_it_is_read(api, sales_org, settings):
    settings.API_MAX_BODY_BYTES = 10_000
    client = api(sales_org["north_rep1"])
    response = client.post("/api/v1/customers/", {"name": "Big", "notes": "x" * 20_000}, format="json")
    assert response.status_code == 413
    assert response["Content-Type"] == PROBLEM
    assert not Customer.objects.filter(name="Big").exists()


def test_bulk_has_its_own_larger_limit(api, sales_org, settings):
    settings.API_MAX_BODY_BYTES = 1_000
    settings.API_BULK_MAX_BODY_BYTES = 50_000
    client = api(sales_org["north_rep1"])
    records = [{"external_id": f"BIG-{i}", "name": f"Big {i}"} for i in range(100)]
    assert client.post("/api/v1/customers/bulk/", {"records": records}, format="json").status_code == 200
    records = [{"external_id": f"BIG-{i}", "name": "y" * 1000} for i in range(100)]
    assert client.post("/api/v1/customers/bulk/", {"records": records}, format="json").status_code == 413


def test_long_text_fields_have_a_maximum(api, sales_org):
    client = api(sales_org["north_rep1"])
    response = client.post("/api/v1/customers/", {"name": "Long", "notes": "x" * 20_001}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "notes"


# --- 6. no server errors ----------------------------------------------------------------------


def _cursor(raw: str) -> str:
    return base64.b64encode(raw.encode()).decode()


@pytest.mark.parametrize("raw", ["p=abc", "p=\x00", "p=1.5", "p=99999999999999999999999", "o=1&p=1.5"])
@pytest.mark.parametrize("ordering", ["", "-id", "-updated_at", "name"])
def test_crafted_list_cursors_get_400(api, book, sales_org, raw, ordering):
    client = api(sales_org["north_rep1"])
    params = {"cursor": _cursor(raw), **({"ordering": ordering} if ordering else {})}
    response = client.get("/api/v1/customers/", params)
    if ordering == "name" and "\x00" not in raw:  # any text is a name to page from
        assert response.status_code == 200
        return
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == PROBLEM


def test_a_real_cursor_still_pages(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    first = client.get("/api/v1/customers/", {"page_size": 1, "ordering": "-updated_at"}).json()
    second = client.get(first["next"]).json()
    assert [r["id"] for r in first["results"]] != [r["id"] for r in second["results"]]


def test_deeply_nested_json_gets_400(api, sales_org):
    client = api(sales_org["north_rep1"])
    body = '{"name": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = client.post("/api/v1/customers/", body, content_type="application/json")
    assert response.status_code == 400
    nested = '{"records": ' + "[" * 50 + "]" * 50 + "}"
    assert client.post("/api/v1/customers/bulk/", nested, content_type="application/json").status_code == 400


@pytest.mark.parametrize("field", ["owner", "customer"])
def test_an_overflowing_number_in_a_related_field_gets_400(api, book, sales_org, field):
    client = api(sales_org["north_rep1"])
    path = "/api/v1/customers/" if field == "owner" else "/api/v1/people/"
    body = '{"name": "x", "last_name": "y", "FIELD": 1e309}'.replace("FIELD", field)
    body = body.replace('"last_name": "y", ', "") if field == "owner" else body.replace('"name": "x", ', "")
    response = client.post(path, body, content_type="application/json")
    assert response.status_code == 400, response.content


def test_overflowing_people_ids_get_400(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    customer = book["a1"]["customer"].pk
    body = f'{{"customer": {customer}, "channel": "call", "subject": "x", "people": [1e309]}}'
    assert client.post("/api/v1/contacts/", body, content_type="application/json").status_code == 400


def test_follow_up_done_at_is_accepted_on_create(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    response = client.post("/api/v1/contacts/", {
        "customer": book["a1"]["customer"].pk, "channel": "call", "subject": "Done already", "occurred_at": "2026-02-20T09:00:00Z",
        "follow_up_on": "2026-03-01", "follow_up_done_at": "2026-03-01T10:00:00Z",
    }, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["follow_up_done_at"] == "2026-03-01T10:00:00Z"


@pytest.mark.parametrize("since", ["2026-13-45T00:00:00", "2026-02-30T10:00:00", "not-a-date"])
def test_run_progress_with_an_invalid_since_gets_400(client, sales_org, since):
    client.force_login(sales_org["north_manager"])
    response = client.get("/clv/runs/progress/", {"since": since})
    assert response.status_code == 400


# --- 7. CLV runs --------------------------------------------------------------------------------


def test_reps_do_not_read_clv_runs(api, sales_org):
    from django.utils import timezone

    from clv.models import ClvRun

    run = ClvRun.objects.create(status="succeeded", as_of="2026-11-01", started_at=timezone.now(), model="bgnbd",
                                counts={"customers": 2000})
    rep = api(sales_org["north_rep1"])
    assert rep.get("/api/v1/clv-runs/").status_code == 403
    assert rep.get(f"/api/v1/clv-runs/{run.pk}/").status_code == 403
    assert api(sales_org["north_manager"]).get("/api/v1/clv-runs/").status_code == 200
    assert api(sales_org["admin"]).get(f"/api/v1/clv-runs/{run.pk}/").status_code == 200


# --- 10. query parameters -----------------------------------------------------------------------


@pytest.mark.parametrize("params", [
    {"page_size": "null"}, {"page_size": "0"}, {"page_size": "-3"}, {"page_size": ""},
    {"updated_before": ""}, {"updated_after": "null"}, {"owner": ""},
])
def test_invalid_query_parameters_get_400(api, book, sales_org, params):
    client = api(sales_org["north_rep1"])
    response = client.get("/api/v1/customers/", params)
    assert response.status_code == 400, (params, response.status_code)
    assert response["Content-Type"] == PROBLEM


def test_a_page_size_over_the_maximum_is_still_clamped(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    assert client.get("/api/v1/customers/", {"page_size": "100000"}).status_code == 200


def test_the_schema_lists_expired_opportunities_and_error_responses(client):
    spec = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    components = spec["components"]["schemas"]
    status_schema = components["Opportunity"]["properties"]["status"]
    ref = status_schema.get("$ref") or status_schema["allOf"][0]["$ref"]
    assert "expired" in components[ref.rsplit("/", 1)[1]]["enum"]
    values = spec["paths"]["/api/v1/customers/{id}/values/"]["get"]["responses"]["200"]["content"]
    assert values["application/json"]["schema"]["type"] == "array"
    patch = spec["paths"]["/api/v1/customers/{id}/"]["patch"]["responses"]
    assert {"400", "403", "404", "412", "413", "429"} <= set(patch)
    assert patch["412"]["content"][PROBLEM]["schema"]["$ref"].endswith("/Problem")


def test_a_rep_moving_records_keeps_the_visibility_rule(api, book, sales_org):
    """A guard that the fixes did not open anything: another rep's customer stays 404."""
    client = api(sales_org["north_rep1"])
    other = book["s1"]["customer"]
    assert client.get(f"/api/v1/customers/{other.pk}/").status_code == 404
    assert client.patch(f"/api/v1/contacts/{book['a1']['contact'].pk}/", {"customer": other.pk},
                        format="json").status_code == 400


def test_schema_and_docs_are_public_but_every_operation_needs_a_token(client):
    """The decision documented in docs/security.md: the description is public, the data is not."""
    assert client.get("/api/v1/schema/").status_code == 200
    docs = client.get("/api/v1/docs/")
    assert docs.status_code == 200
    assert b"<script>" not in docs.content  # Swagger UI's script is a file of its own (CSP)
    assert client.get("/api/v1/customers/").status_code == 401
