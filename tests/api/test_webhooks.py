"""Outgoing webhooks against a real HTTP receiver on the loopback: signed, retried, bounded by visibility,
following the committed change feed."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.db import connections, transaction
from django.test import override_settings

from crm import services
from crm.models import Customer, WebhookDelivery, WebhookSubscription
from crm.webhooks import dispatch
from tests.conftest import set_celery_eager
from tests.crm import factories as f

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


class Receiver:
    """An HTTP server in a thread that records every POST and fails the first `fail_first` of them."""

    def __init__(self, fail_first: int = 0, always_fail: bool = False):
        self.requests: list[dict] = []
        self.fail_first = fail_first
        self.always_fail = always_fail
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body, "at": time.monotonic()})
                failing = receiver.always_fail or len(receiver.requests) <= receiver.fail_first
                self.send_response(500 if failing else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def events(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.requests]


def verify_signature(secret: str, headers: dict, body: bytes, tolerance: int = 300) -> bool:
    """The verification snippet of docs/integrations.md, as a receiver would write it."""
    timestamp = headers["X-CRM-Timestamp"]
    expected = "v1=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(timestamp)) <= tolerance
    return fresh and hmac.compare_digest(expected, headers["X-CRM-Signature"])


def subscribe(api_client, url, event_types, **extra) -> dict:
    response = api_client.post("/api/v1/webhooks/", {"name": "ERP", "url": url, "event_types": event_types, **extra},
                               format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_deliveries_arrive_signed_and_verifiable(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    with Receiver() as receiver:
        created = subscribe(client, receiver.url, ["customer.updated"])
        assert created["secret"].startswith("whsec_")
        assert "secret" not in client.get(f"/api/v1/webhooks/{created['id']}/").json()  # shown once
        response = client.patch("/api/v1/customers/ext:C-a1/", {"city": "Lyon"}, format="json")
        assert response.status_code == 200
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert verify_signature(created["secret"], request["headers"], request["body"])
    assert not verify_signature("whsec_wrong", request["headers"], request["body"])
    event = json.loads(request["body"])
    assert event["type"] == "customer.updated"
    assert event["data"]["city"] == "Lyon"
    assert event["external_id"] == "C-a1"
    assert request["headers"]["X-CRM-Event-Id"] == event["id"]
    log = client.get(f"/api/v1/webhooks/{created['id']}/deliveries/").json()["results"]
    assert [(d["status"], d["attempts"], d["last_status_code"]) for d in log] == [("succeeded", 1, 200)]
    assert log[0]["attempt_log"][0]["status_code"] == 200
    assert log[0]["attempt_log"][0]["duration_ms"] >= 0


def test_a_rolled_back_write_sends_nothing_and_an_open_one_waits_for_its_commit(api, book, sales_org):
    rep = sales_org["north_rep1"]
    with Receiver() as receiver:
        subscribe(api(rep), receiver.url, ["customer.created"])

        def write_then_fail():
            with transaction.atomic():
                services.customer_create(name="Rolled back", owner=rep)
                raise RuntimeError("abort")

        with pytest.raises(RuntimeError):
            write_then_fail()

        # A write held open in another session while the dispatcher runs: held back, then sent.
        started, release, done = threading.Event(), threading.Event(), threading.Event()

        def open_writer():
            try:
                with transaction.atomic():
                    services.customer_create(name="Committed late", owner=rep)
                    started.set()
                    release.wait(20)
            finally:
                connections.close_all()
                done.set()

        thread = threading.Thread(target=open_writer)
        thread.start()
        assert started.wait(20)
        services.customer_create(name="Committed first", owner=rep)
        dispatch.dispatch_all()
        names = [e["data"]["name"] for e in receiver.events()]
        assert names == []  # the open transaction holds the feed back: nothing after it goes out yet
        release.set()
        assert done.wait(20)
        thread.join()
        dispatch.dispatch_all()
        dispatch.dispatch_all()
    names = sorted(e["data"]["name"] for e in receiver.events())
    assert names == ["Committed first", "Committed late"]
    assert not Customer.objects.filter(name="Rolled back").exists()


def test_a_reps_subscription_never_receives_another_reps_customer(api, book, sales_org):
    with Receiver() as mine, Receiver() as managers:
        subscribe(api(sales_org["north_rep1"]), mine.url, ["customer.updated", "purchase.created", "customer.deleted"])
        subscribe(api(sales_org["north_manager"]), managers.url, ["customer.updated"])
        for key in ("a1", "b1", "s1"):
            services.record_update(instance=Customer.objects.get(pk=book[key]["customer"].pk), data={"city": "X"})
        f.purchase(customer=book["b1"]["customer"])
        f.purchase(customer=book["a2"]["customer"], order_ref="MINE")
        services.record_delete(instance=Customer.objects.get(pk=book["s1"]["customer"].pk))
        dispatch.dispatch_all()
    seen = {(e["type"], e["object_id"]) for e in mine.events()}
    assert seen == {("customer.updated", book["a1"]["customer"].pk),
                    ("purchase.created", Customer.objects.get(pk=book["a2"]["customer"].pk).purchases.get(
                        order_ref="MINE").pk)}
    assert {e["object_id"] for e in managers.events()} == {book["a1"]["customer"].pk, book["b1"]["customer"].pk}


@pytest.mark.redis
def test_a_receiver_failing_three_times_then_succeeding_gets_the_event_once(api, book, sales_org):
    from tests.clv.test_tasks import start_worker, stop_workers

    os.environ["WEBHOOK_RETRY_BASE_SECONDS"] = "0.3"  # the worker's backoff: 0.3, 0.6, 1.2 s
    worker = start_worker("webhooks")
    set_celery_eager(False)
    try:
        with Receiver(fail_first=3) as receiver:
            subscribe(api(sales_org["north_rep1"]), receiver.url, ["customer.updated"])
            services.record_update(instance=Customer.objects.get(pk=book["a1"]["customer"].pk), data={"city": "Rome"})
            assert dispatch.dispatch_all() == 1  # queued on the real broker; the worker sends and retries
            delivery = WebhookDelivery.objects.get()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                delivery.refresh_from_db()
                if delivery.status == WebhookDelivery.Status.SUCCEEDED:
                    break
                time.sleep(0.2)
    finally:
        set_celery_eager(True)
        stop_workers(worker)
        os.environ.pop("WEBHOOK_RETRY_BASE_SECONDS", None)
    assert delivery.status == WebhookDelivery.Status.SUCCEEDED
    assert [a.status_code for a in delivery.attempt_log.all()] == [500, 500, 500, 200]
    ids = {e["id"] for e in receiver.events()}
    assert ids == {str(delivery.event_id)}  # the same event each time: received (2xx) once
    gaps = [b["at"] - a["at"] for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
    assert [round(g, 1) >= 0.3 * 2**i * 0.9 for i, g in enumerate(gaps)] == [True, True, True]


@override_settings(WEBHOOK_MAX_ATTEMPTS=2, WEBHOOK_DISABLE_AFTER_FAILURES=3, WEBHOOK_RETRY_BASE_SECONDS=0)
def test_repeated_failures_disable_the_subscription_with_a_notice(api, book, sales_org):
    rep = sales_org["north_rep1"]
    rep.email = "rep1@example.com"
    rep.save(update_fields=["email"])
    with Receiver(always_fail=True) as receiver:
        created = subscribe(api(rep), receiver.url, ["customer.updated"])
        for city in ("A", "B", "C"):
            services.record_update(instance=Customer.objects.get(pk=book["a1"]["customer"].pk), data={"city": city})
            dispatch.dispatch_all()
        subscription = WebhookSubscription.objects.get(pk=created["id"])
        assert len(receiver.requests) == 3  # 2 attempts of the first, 1 of the second, then disabled
        assert subscription.is_active is False
        assert "3 failed attempts in a row" in subscription.disabled_reason
        assert [m.to for m in mail.outbox] == [["rep1@example.com"]]
        assert "disabled" in mail.outbox[0].subject
        body = api(rep).get(f"/api/v1/webhooks/{created['id']}/").json()
        assert body["is_active"] is False
        assert body["disabled_reason"]
        # Fixed and re-enabled, it goes on from where it stopped: the change made while disabled arrives.
        receiver.always_fail = False
        assert api(rep).patch(f"/api/v1/webhooks/{created['id']}/", {"is_active": True},
                              format="json").status_code == 200
    subscription.refresh_from_db()
    assert (subscription.is_active, subscription.consecutive_failures, subscription.disabled_at) == (True, 0, None)
    assert receiver.events()[-1]["data"]["city"] == "C"


def test_manual_redelivery_sends_the_same_event_freshly_signed(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    with Receiver() as receiver:
        created = subscribe(client, receiver.url, ["opportunity.status_changed"])
        opportunity = book["a1"]["opportunity"]
        assert client.patch(f"/api/v1/opportunities/{opportunity.pk}/", {"status": "accepted"},
                            format="json").status_code == 200
        delivery = WebhookDelivery.objects.get()
        response = client.post(f"/api/v1/webhooks/{created['id']}/deliveries/{delivery.pk}/redeliver/")
        assert response.status_code == 202
        other = api(sales_org["south_rep1"]).post(f"/api/v1/webhooks/{created['id']}/deliveries/{delivery.pk}/redeliver/")
        assert other.status_code == 404
    assert len(receiver.requests) == 2
    first, second = receiver.events()
    assert first == second
    assert first["type"] == "opportunity.status_changed"
    assert (first["data"]["previous_status"], first["data"]["status"]) == ("open", "accepted")
    assert all(verify_signature(created["secret"], r["headers"], r["body"]) for r in receiver.requests)
    assert WebhookDelivery.objects.get().attempts == 2


def test_subscription_input_errors_are_problem_details(api, sales_org):
    client = api(sales_org["north_rep1"])
    response = client.post("/api/v1/webhooks/", {"name": "x", "url": "ftp://example.com", "event_types": ["nope"]},
                           format="json")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/problem+json")
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"url", "event_types.0"}


def test_webhooks_page_creates_shows_the_secret_once_and_keeps_bad_input(client, sales_org):
    rep = sales_org["north_rep1"]
    client.force_login(rep)
    bad = client.post("/webhooks/", {"name": "Shop", "url": "ftp://shop.example", "event_types": ["customer.updated"]})
    assert bad.status_code == 422
    assert "Give an http:// or https:// address." in bad.content.decode()
    assert 'value="Shop"' in bad.content.decode()
    made = client.post("/webhooks/", {"name": "Shop", "url": "https://shop.example/hook",
                                      "event_types": ["customer.updated", "purchase.created"]})
    subscription = WebhookSubscription.objects.get(owner=rep)
    assert subscription.secret in made.content.decode()
    assert subscription.secret not in client.get("/webhooks/").content.decode()
    client.post(f"/webhooks/{subscription.pk}/toggle/")
    subscription.refresh_from_db()
    assert subscription.is_active is False
    client.force_login(sales_org["north_rep2"])
    assert "shop.example" not in client.get("/webhooks/").content.decode()
    assert client.post(f"/webhooks/{subscription.pk}/delete/").status_code == 404
    client.force_login(sales_org["admin"])
    assert "shop.example" in client.get("/webhooks/").content.decode()
