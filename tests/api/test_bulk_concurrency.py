"""Eight bulk writers at once on overlapping new and existing keys: no 500, no 422, correct data.

Each writer is a thread with its own database connection and its own API token, posting
through the real API. A barrier starts every round's eight requests together; each writer
sends the same keys in its own order, so on code that locks or inserts in batch order the
requests deadlock (500) or lose the race for a new key (422).
"""

from __future__ import annotations

import random
import threading
import time

import pytest
from django.db import connection, transaction
from rest_framework.test import APIClient

from accounts.tokens import token_issue
from crm.models import Customer, Purchase

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

WRITERS = 8
ROUNDS = 4
EXISTING = 24
NEW_PER_ROUND = 24
RESENDS = 5  # a client answered 409 sends the batch again (it says Retry-After), at most this often


def _records(resource: str, keys: list[str], writer: int) -> list[dict]:
    if resource == "purchases":
        return [{"external_id": k, "customer": f"C-{i % 3}", "amount": f"{10 + writer}.00",
                 "purchased_at": f"2026-03-{1 + i % 28:02d}T12:00:00Z"} for i, k in enumerate(keys)]
    return [{"external_id": k, "name": f"Customer {k}", "notes": f"writer {writer}"} for k in keys]


@pytest.mark.parametrize("resource", ["purchases", "customers"])
def test_eight_concurrent_bulk_writers_get_no_500_and_no_422(sales_org, resource):
    rep = sales_org["north_rep1"]
    for i in range(3):
        Customer.objects.create(name=f"Customer {i}", owner=rep, external_id=f"C-{i}")
    existing = [f"X-{i:03d}" for i in range(EXISTING)]
    seed = APIClient()
    seed.credentials(HTTP_AUTHORIZATION=f"Token {token_issue(user=rep, name='seed')[1]}")
    assert seed.post(f"/api/v1/{resource}/bulk/", {"records": _records(resource, existing, 0)},
                     format="json").status_code == 200
    tokens = [token_issue(user=rep, name=f"writer {n}")[1] for n in range(WRITERS)]
    barrier = threading.Barrier(WRITERS)
    statuses: list[int] = []
    refused: list[tuple[int, dict]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {tokens[n]}")
        rng = random.Random(n)
        try:
            for r in range(ROUNDS):
                keys = existing[:] + [f"N-{r}-{i:03d}" for i in range(NEW_PER_ROUND)]
                rng.shuffle(keys)
                body = {"records": _records(resource, keys, n)}
                barrier.wait(timeout=60)
                for _ in range(RESENDS):
                    response = client.post(f"/api/v1/{resource}/bulk/", body, format="json")
                    with lock:
                        statuses.append(response.status_code)
                    if response.status_code == 409 and response.has_header("Retry-After"):
                        continue
                    if response.status_code != 200:
                        with lock:
                            refused.append((response.status_code, response.json()))
                    break
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            errors.append(exc)
            barrier.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert not refused, refused[:3]
    assert 500 not in statuses
    assert 422 not in statuses
    assert statuses.count(200) == WRITERS * ROUNDS

    model = Purchase if resource == "purchases" else Customer
    keys = set(model.objects.exclude(external_id__startswith="C-").values_list("external_id", flat=True))
    assert keys == set(existing) | {f"N-{r}-{i:03d}" for r in range(ROUNDS) for i in range(NEW_PER_ROUND)}
    if resource == "purchases":
        from clv.summary import summary_rebuild
        from tests.clv.test_summary import kept_rows

        amounts = set(Purchase.objects.values_list("amount", flat=True))
        assert {f"{a:.2f}" for a in amounts} <= {f"{10 + n}.00" for n in range(WRITERS)}
        kept = kept_rows()
        summary_rebuild()
        assert kept_rows() == kept  # the kept CLV summary equals a rebuild
    else:
        notes = set(Customer.objects.exclude(external_id__startswith="C-").values_list("notes", flat=True))
        assert notes <= {f"writer {n}" for n in range(WRITERS)}


def _wait_for_a_lock_wait(timeout: float = 30) -> None:
    """Until another session of this database waits for a lock (the API request queued behind ours)."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'")
            if cursor.fetchone()[0]:
                return
            time.sleep(0.02)
    raise AssertionError("the request never waited for the concurrent insert")


def _race_one_new_key(sales_org, client) -> tuple:
    """A bulk request inserts a new key while another transaction has just inserted it (uncommitted).

    The request waits for that transaction; it commits; the request finds the key taken.
    Returns (response, the other transaction's customer).
    """
    from crm import services

    rep = sales_org["north_rep1"]
    answer = {}
    other = threading.Event()
    done = threading.Event()

    def rival() -> None:
        try:
            with transaction.atomic():
                answer["rival"] = services.customer_create(name="First", owner=rep, external_id="RACE-1")
                other.set()
                _wait_for_a_lock_wait()
        finally:
            connection.close()
            done.set()

    thread = threading.Thread(target=rival)
    thread.start()
    assert other.wait(30)
    answer["response"] = client.post("/api/v1/customers/bulk/", {"records": [
        {"external_id": "NEW-A", "name": "A"}, {"external_id": "RACE-1", "name": "Second"},
    ]}, format="json")
    thread.join()
    assert done.is_set()
    return answer["response"], answer["rival"]


def test_a_batch_that_loses_the_race_for_a_new_key_is_run_again_and_updates_it(api, sales_org):
    response, rival = _race_one_new_key(sales_org, api(sales_org["north_rep1"]))
    assert response.status_code == 200, response.json()
    assert [r["result"] for r in response.json()["results"]] == ["created", "updated"]
    assert response.json()["results"][1]["id"] == rival.pk
    assert Customer.objects.get(external_id="RACE-1").name == "Second"


def test_when_the_race_persists_the_answer_is_a_retryable_409(api, sales_org, monkeypatch):
    monkeypatch.setattr("crm.conflicts.WRITE_ATTEMPTS", 1)  # the server gives up at once
    response, _ = _race_one_new_key(sales_org, api(sales_org["north_rep1"]))
    assert response.status_code == 409
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["type"].endswith("/concurrent-write")
    assert int(response["Retry-After"]) >= 1
    assert not Customer.objects.filter(external_id="NEW-A").exists()  # nothing of the batch was written
    resent = api(sales_org["north_rep1"]).post("/api/v1/customers/bulk/", {"records": [
        {"external_id": "NEW-A", "name": "A"}, {"external_id": "RACE-1", "name": "Second"},
    ]}, format="json")
    assert resent.status_code == 200
