"""The change feed: order, cursors, deletions, visibility, expiry, and concurrent writers."""

from __future__ import annotations

import base64
import random
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from crm import services
from crm.models import Customer, Event, Tombstone
from crm.sync import Cursor, Position, sync_log_prune
from tests.crm import factories as f

# Real commits: the feed only returns changes of finished transactions, and a test wrapped in
# one open transaction would (rightly) see none of its own writes.
pytestmark = pytest.mark.django_db(transaction=True)


def drain(client, cursor=None, types="", limit=500):
    """Follow the feed to its end; returns (changes, last cursor)."""
    changes = []
    while True:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {}), **({"types": types} if types else {})}
        response = client.get("/api/v1/sync/changes/", params)
        assert response.status_code == 200, response.json()
        page = response.json()
        changes += page["changes"]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return changes, cursor


def test_feed_lists_creations_updates_and_deletions_in_order(api, sales_org):
    rep = sales_org["north_rep1"]
    client = api(rep)
    _, cursor = drain(client)
    customer = services.customer_create(name="Feed Co", owner=rep, external_id="F-1")
    event = services.event_record(customer=customer, kind="merger", external_id="F-E1")
    event_id = event.pk
    services.record_update(instance=customer, data={"city": "Gouda"})
    services.record_delete(instance=event, deleted_by=rep)
    changes, cursor = drain(client, cursor, limit=1)
    assert [(c["type"], c["op"], c["id"]) for c in changes] == [
        ("customers", "updated", customer.pk),  # compacted: the customer's latest state, once
        ("events", "deleted", event_id),
    ]
    assert changes[0]["data"]["city"] == "Gouda"
    assert changes[1]["external_id"] == "F-E1"
    assert changes[1]["data"] is None
    again, _ = drain(client, cursor)
    assert again == []


def test_a_new_record_is_reported_as_created(api, sales_org):
    rep = sales_org["north_rep1"]
    client = api(rep)
    _, cursor = drain(client)
    customer = services.customer_create(name="New", owner=rep)
    changes, _ = drain(client, cursor)
    assert [(c["op"], c["id"]) for c in changes] == [("created", customer.pk)]


def test_types_filter_and_bad_parameters(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    changes, _ = drain(client, types="customers,events")
    assert {c["type"] for c in changes} == {"customers", "events"}
    assert client.get("/api/v1/sync/changes/", {"types": "customers,nope"}).status_code == 400
    assert client.get("/api/v1/sync/changes/", {"cursor": "!!!"}).status_code == 400
    assert client.get("/api/v1/sync/changes/", {"limit": "many"}).status_code == 400


def test_feed_shows_only_what_the_caller_may_see(api, book, sales_org):
    rep = sales_org["north_rep1"]
    changes, cursor = drain(api(rep))
    customers = {c["external_id"] for c in changes if c["type"] == "customers"}
    assert customers == {"C-a1", "C-a2"}
    facets = {c["data"]["customer"] for c in changes if c["type"] in ("purchases", "events", "contacts")}
    assert facets == {book["a1"]["customer"].pk, book["a2"]["customer"].pk}
    services.record_delete(instance=book["b1"]["event"])
    services.record_delete(instance=book["a1"]["event"])
    services.record_delete(instance=book["s1"]["product"].holdings.first())
    deleted, _ = drain(api(rep), cursor)
    assert [(c["type"], c["external_id"]) for c in deleted] == [("events", "E-a1")]
    manager_changes, _ = drain(api(sales_org["north_manager"]), types="events")
    assert {c["external_id"] for c in manager_changes if c["op"] == "deleted"} == {"E-a1", "E-b1"}


def test_old_cursor_after_pruning_gets_410(api, sales_org):
    client = api(sales_org["north_rep1"])
    _, cursor = drain(client)
    old = Cursor(Cursor.decode(cursor).position, int((time.time() - 100 * 86400) * 1000)).encode()
    Tombstone.objects.create(model="crm.event", object_id=1)
    Tombstone.objects.filter(object_id=1).update(deleted_at=timezone.now() - timedelta(days=95))
    assert sync_log_prune(tombstone_days=90)["tombstones"] == 1
    gone = client.get("/api/v1/sync/changes/", {"cursor": old})
    assert gone.status_code == 410
    assert gone["Content-Type"] == "application/problem+json"
    assert client.get("/api/v1/sync/changes/", {"cursor": cursor}).status_code == 200
    assert client.get("/api/v1/sync/changes/").status_code == 200  # a full resync always works


def test_feed_holds_back_changes_of_transactions_still_open(api, sales_org):
    """A transaction that began earlier but commits later must not be skipped by the cursor."""
    if connection.vendor != "postgresql":
        pytest.skip("the hold-back uses PostgreSQL transaction snapshots")
    admin = sales_org["admin"]
    client = api(admin)
    _, cursor = drain(client)
    started, release = threading.Event(), threading.Event()

    def slow_writer():
        with transaction.atomic():
            services.customer_create(name="Slow", external_id="SLOW")
            started.set()
            release.wait(10)
        connection.close()

    thread = threading.Thread(target=slow_writer)
    thread.start()
    started.wait(10)
    fast = services.customer_create(name="Fast", external_id="FAST")  # commits first, later txid
    held, cursor_during = drain(client, cursor)
    assert held == []  # FAST waits behind the open SLOW transaction
    release.set()
    thread.join()
    after, _ = drain(client, cursor_during)
    assert [c["external_id"] for c in after] == ["SLOW", "FAST"]
    assert fast.pk in {c["id"] for c in after}


@pytest.mark.postgres
def test_an_open_transaction_in_another_database_does_not_hold_the_feed(api, sales_org):
    import psycopg2
    from django.conf import settings as django_settings

    db = django_settings.DATABASES["default"]
    other = psycopg2.connect(dbname="postgres", user=db["USER"], host=db["HOST"] or None, port=db["PORT"] or None,
                             password=db["PASSWORD"] or None)
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT txid_current()")  # an open transaction holding a transaction id
        rep = sales_org["north_rep1"]
        client = api(rep)
        _, cursor = drain(client)
        customer = services.customer_create(name="Not held back", owner=rep)
        changes, _ = drain(client, cursor)
        assert [c["id"] for c in changes] == [customer.pk]
    finally:
        other.rollback()
        other.close()


@pytest.mark.postgres
def test_concurrent_writers_while_a_client_syncs(api, sales_org):
    """Writers create, update and delete in overlapping transactions while a client follows the feed.

    At the end the client's copy equals the server's, and no change was delivered twice.
    """
    admin = sales_org["admin"]
    client = api(admin)
    seed = [f.customer(name=f"Seed {i}", owner=sales_org["north_rep1"]) for i in range(20)]
    threading.Event()
    errors: list[BaseException] = []

    def writer(n: int):
        rng = random.Random(n)
        try:
            for i in range(40):
                with transaction.atomic():
                    action = rng.random()
                    if action < 0.45:
                        c = services.customer_create(name=f"W{n}-{i}", owner=admin)
                        services.event_record(customer=c, kind="funding")
                    else:
                        ids = list(Customer.objects.values_list("pk", flat=True)[:200])
                        target = Customer.objects.select_for_update().filter(pk=rng.choice(ids)).first()
                        if target is None:
                            continue
                        if action < 0.85:
                            services.record_update(instance=target, data={"notes": f"w{n}-{i}"})
                        else:
                            services.record_delete(instance=target)
                    time.sleep(rng.random() * 0.03)  # hold the transaction open: commits interleave
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    copy: dict[tuple[str, int], dict] = {}
    delivered: set[tuple] = set()
    cursor = None

    def apply(changes):
        for change in changes:
            key = (change["type"], change["id"])
            fingerprint = (*key, change["op"], change["data"] and change["data"]["updated_at"])
            assert fingerprint not in delivered, f"delivered twice: {fingerprint}"
            delivered.add(fingerprint)
            if change["op"] == "deleted":
                copy.pop(key, None)
            else:
                copy[key] = change["data"]

    while any(t.is_alive() for t in threads):
        changes, cursor = drain(client, cursor, types="customers,events", limit=7)
        apply(changes)
        time.sleep(0.01)
    for t in threads:
        t.join()
    assert not errors, errors
    changes, cursor = drain(client, cursor, types="customers,events", limit=7)
    apply(changes)

    server_customers = {c.pk: c.updated_at for c in Customer.objects.all()}
    server_events = set(Event.objects.values_list("pk", flat=True))
    mine_customers = {k[1]: v["updated_at"] for k, v in copy.items() if k[0] == "customers"}
    set(server_customers) - set(mine_customers)
    assert set(mine_customers) == set(server_customers)
    for pk, updated_at in server_customers.items():
        assert mine_customers[pk] == updated_at.isoformat().replace("+00:00", "Z")
    assert {k[1] for k in copy if k[0] == "events"} == server_events
    assert len(seed) == 20


def test_positions_order_by_transaction_then_sequence():
    assert Position(5, 100) < Position(6, 1)
    assert Cursor.decode(Cursor(Position(7, 9), 123).encode()) == Cursor(Position(7, 9), 123)
    handed_out_before = base64.urlsafe_b64encode(b"1.7.9.1700000000").decode()  # seconds, version 1
    assert Cursor.decode(handed_out_before) == Cursor(Position(7, 9), 1_700_000_000_000)


def mirror(client, copy=None, cursor=None):
    """A syncing client's copy: {(type, id): external_id}, updated from the feed; returns (copy, cursor, changes)."""
    copy = {} if copy is None else copy
    changes, cursor = drain(client, cursor)
    for c in changes:
        if c["op"] == "deleted":
            copy.pop((c["type"], c["id"]), None)
        else:
            copy[(c["type"], c["id"])] = c["external_id"]
    return copy, cursor, changes


def server_view(user):
    """What the user may see now, in the same form as mirror()."""
    from crm.sync import FEED_TYPES

    rows = {}
    for name, model in FEED_TYPES.items():
        qs = model.objects.all() if name == "products" else model.objects.visible_to(user)
        rows.update({(name, pk): ext for pk, ext in qs.values_list("pk", "external_id")})
    return rows


def test_a_customer_given_to_another_owner_leaves_one_feed_and_enters_the_other(api, book, sales_org):
    a, s = sales_org["north_rep1"], sales_org["south_rep1"]
    watchers = [a, s, sales_org["north_manager"], sales_org["south_manager"], sales_org["admin"]]
    clients = {u.username: api(u) for u in watchers}
    state = {u.username: mirror(clients[u.username])[:2] for u in watchers}
    moving = book["a1"]["customer"]
    under_it = {("customers", moving.pk)} | {
        (name, book["a1"][key].pk) for name, key in (("people", "person"), ("purchases", "purchase"),
                                                    ("holdings", "holding"), ("contacts", "contact"),
                                                    ("events", "event"))
    }
    assert under_it <= set(state[a.username][0])

    response = api(sales_org["admin"]).patch(f"/api/v1/customers/{moving.pk}/", {"owner": s.pk}, format="json")
    assert response.status_code == 200, response.json()

    seen = {}
    for user in watchers:
        copy, cursor = state[user.username]
        copy, _, seen[user.username] = mirror(clients[user.username], copy, cursor)
        assert copy == server_view(user), user.username  # every client's copy equals what it may see now
    lost = {(c["type"], c["id"]) for c in seen[a.username] if c["op"] == "deleted"}
    assert under_it <= lost
    assert {c["reason"] for c in seen[a.username] if c["op"] == "deleted"} == {"moved"}
    assert under_it <= {(c["type"], c["id"]) for c in seen[s.username] if c["op"] != "deleted"}
    assert not [c for c in seen["admin1"] if c["op"] == "deleted"]  # the admin never lost sight of it
    assert not [c for c in seen["south_manager"] if c["op"] == "deleted"]

    # and back: the first owner's copy gets everything again
    services.record_update(instance=Customer.objects.get(pk=moving.pk), data={"owner": a})
    for user in (a, s):
        copy, cursor = state[user.username]
        copy, cursor, _ = mirror(clients[user.username], copy, cursor)
        copy, _, _ = mirror(clients[user.username], copy, cursor)
        assert copy == server_view(user), user.username


def test_a_record_moved_to_a_customer_out_of_view_is_gone_from_that_feed(api, book, sales_org):
    a, s = sales_org["north_rep1"], sales_org["south_rep1"]
    copies = {u: mirror(api(u))[:2] for u in (a, s)}
    contact = book["a1"]["contact"]
    elsewhere = book["a2"]["customer"]  # same owner: nothing leaves a's view
    services.record_update(instance=contact, data={"customer": elsewhere})
    services.record_update(instance=contact, data={"customer": book["s1"]["customer"]})
    for user in (a, s):
        copy, _, changes = mirror(api(user), *copies[user])
        assert copy == server_view(user)
        if user == a:
            assert [(c["type"], c["op"], c["reason"]) for c in changes] == [("contacts", "deleted", "moved")]
        else:
            assert [(c["type"], c["op"], c["id"]) for c in changes] == [("contacts", "updated", contact.pk)]


def test_bulk_upsert_that_moves_customers_tells_the_previous_owner(api, book, sales_org):
    a, s = sales_org["north_rep1"], sales_org["south_rep1"]
    copy, cursor, _ = mirror(api(a))
    response = api(sales_org["admin"]).post("/api/v1/customers/bulk/", {"records": [
        {"external_id": "C-a2", "name": "Customer a2", "owner": s.pk},
    ]}, format="json")
    assert response.status_code == 200, response.json()
    copy, _, changes = mirror(api(a), copy, cursor)
    assert copy == server_view(a)
    assert ("customers", book["a2"]["customer"].pk) in {(c["type"], c["id"]) for c in changes if c["op"] == "deleted"}


def feed_status(client, cursor):
    return client.get("/api/v1/sync/changes/", {"cursor": cursor}).status_code


def test_a_rep_changing_team_sends_both_managers_clients_to_a_full_resync(api, book, sales_org):
    from crm.models import SyncReset

    north_m, south_m, bystander = sales_org["north_manager"], sales_org["south_manager"], sales_org["south_rep1"]
    clients = {u.pk: api(u) for u in (north_m, south_m, bystander)}
    cursors = {pk: drain(client)[1] for pk, client in clients.items()}
    rep = sales_org["north_rep2"]  # owns b1
    resets = set(SyncReset.objects.values_list("user_id", "reset_at"))  # the fixture's team assignments
    rep.last_login = timezone.now()
    rep.save(update_fields=["last_login"])  # nothing that changes a view: no reset
    assert set(SyncReset.objects.values_list("user_id", "reset_at")) == resets

    rep.team = sales_org["south_team"]
    rep.save()

    for manager in (north_m, south_m):
        response = clients[manager.pk].get("/api/v1/sync/changes/", {"cursor": cursors[manager.pk]})
        assert response.status_code == 410
        assert "resync in full" in response.json()["detail"]
    assert feed_status(clients[bystander.pk], cursors[bystander.pk]) == 200
    for manager in (north_m, south_m):  # the full resync gives each what they see now
        copy, _, _ = mirror(clients[manager.pk])
        assert copy == server_view(manager)
    assert ("customers", book["b1"]["customer"].pk) in server_view(south_m)
    assert ("customers", book["b1"]["customer"].pk) not in server_view(north_m)

    time.sleep(0.01)  # a cursor from the reset's own millisecond counts as older
    _, fresh = drain(clients[north_m.pk])
    assert feed_status(clients[north_m.pk], fresh) == 200


def test_a_team_given_to_another_manager_expires_both_managers_cursors(api, book, sales_org):
    north_m, south_m = sales_org["north_manager"], sales_org["south_manager"]
    clients = {u.pk: api(u) for u in (north_m, south_m, sales_org["north_rep1"])}
    cursors = {pk: drain(client)[1] for pk, client in clients.items()}
    team = sales_org["south_team"]
    team.manager = north_m
    team.save()
    assert feed_status(clients[north_m.pk], cursors[north_m.pk]) == 410
    assert feed_status(clients[south_m.pk], cursors[south_m.pk]) == 410
    assert feed_status(clients[sales_org["north_rep1"].pk], cursors[sales_org["north_rep1"].pk]) == 200


def mirror_data(client, copy=None, cursor=None):
    """Like mirror(), keeping each record's data as the feed sent it."""
    copy = {} if copy is None else copy
    changes, cursor = drain(client, cursor)
    for c in changes:
        if c["op"] == "deleted":
            copy.pop((c["type"], c["id"]), None)
        else:
            copy[(c["type"], c["id"])] = c["data"]
    return copy, cursor


CHILD_TYPES = ("people", "purchases", "holdings", "contacts", "events", "opportunities")


def test_a_new_customer_external_id_reaches_the_synced_copies_of_its_children(api, book, sales_org):
    rep = sales_org["north_rep1"]
    client = api(rep)
    copy, cursor = mirror_data(client)
    customer = book["a1"]["customer"]
    children = {key for key, data in copy.items() if key[0] in CHILD_TYPES and data["customer"] == customer.pk}
    assert {name for name, _ in children} == set(CHILD_TYPES)
    assert {copy[key]["customer_external_id"] for key in children} == {"C-a1"}

    response = client.patch(f"/api/v1/customers/{customer.pk}/", {"external_id": "C-a1-renamed"}, format="json")
    assert response.status_code == 200, response.json()
    copy, cursor = mirror_data(client, copy, cursor)
    assert {copy[key]["customer_external_id"] for key in children} == {"C-a1-renamed"}

    services.record_update(instance=Customer.objects.get(pk=customer.pk), data={"external_id": None})
    copy, cursor = mirror_data(client, copy, cursor)
    assert {copy[key]["customer_external_id"] for key in children} == {None}
    # another change of the customer leaves its children where they are in the feed
    services.record_update(instance=Customer.objects.get(pk=customer.pk), data={"notes": "just a note"})
    changes, _ = drain(client, cursor)
    assert [(c["type"], c["id"]) for c in changes] == [("customers", customer.pk)]
