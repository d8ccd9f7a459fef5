"""How regeneration writes: only what changed, every write in the change feed, history of what people did.

The feed and the history are database triggers, so these run on PostgreSQL; the first test
(nothing written when nothing changed) also runs on SQLite.
"""

from __future__ import annotations

import pytest

from crm import history
from crm.history_models import OpportunityHistory
from crm.models import Holding, Opportunity, Product
from crm.opportunities.services import opportunities_regenerate
from crm.services import opportunity_set_status
from crm.sync import changes_since
from tests.crm.test_opportunities import AS_OF, plant

# Committed writes: the feed shows only what committed transactions wrote.
pytestmark = pytest.mark.django_db(transaction=True)

STATE = ("pk", "status", "score", "expected_value", "evidence", "evidence_data", "rule", "generated_at", "updated_at",
         "change_txid", "change_seq")


def _rows():
    return {row[0]: row for row in Opportunity.objects.values_list(*STATE)}


def _feed(user, cursor=None):
    """Every opportunity change `user` may see after `cursor`, following the pages to the end."""
    seen, page = [], None
    while page is None or page.has_more:
        page = changes_since(user=user, types=["opportunities"], cursor=cursor, limit=500)
        seen.extend(page.changes)
        cursor = page.cursor
    return seen, cursor


def test_a_refresh_that_changes_nothing_writes_nothing():
    plant(n_customers=200)
    first = opportunities_regenerate(as_of=AS_OF)
    assert first.created == Opportunity.objects.count() > 0
    before = _rows()
    again = opportunities_regenerate(as_of=AS_OF)
    assert (again.created, again.updated, again.expired, again.reopened) == (0, 0, 0, 0)
    assert again.unchanged == len(before)
    assert _rows() == before  # not one row written: same place in the feed, same updated_at and generated_at


@pytest.mark.postgres
def test_first_run_rows_are_in_the_feed_and_the_history(make_user):
    admin = make_user("admin", role="admin")
    _, cursor = _feed(admin)
    plant(n_customers=200)
    r = opportunities_regenerate(as_of=AS_OF)
    changes, _ = _feed(admin, cursor)
    ids = set(Opportunity.objects.values_list("pk", flat=True))
    assert len(ids) == r.created > 0
    assert {c.instance.pk for c in changes} == ids
    assert {c.op for c in changes} == {"created"}
    created = OpportunityHistory.objects.filter(pgh_label="insert")
    assert set(created.values_list("pgh_obj_id", flat=True)) == ids
    sample = Opportunity.objects.filter(kind="cross_sell").first()
    snapshot = created.get(pgh_obj_id=sample.pk)
    assert (snapshot.evidence, snapshot.evidence_data, snapshot.score) == (
        sample.evidence, sample.evidence_data, sample.score
    )


@pytest.mark.postgres
def test_rows_whose_evidence_changed_reach_the_feed_without_a_history_row_each(make_user):
    admin = make_user("admin", role="admin")
    truth = plant(n_customers=200)
    opportunities_regenerate(as_of=AS_OF)
    conn = truth["products"]["DATA-CONN"]
    affected = set(Opportunity.objects.filter(evidence__contains="Data Connector").values_list("pk", flat=True))
    assert 0 < len(affected) < Opportunity.objects.count()
    _, cursor = _feed(admin)
    events_before = OpportunityHistory.objects.count()
    # A renamed product: the words of every suggestion that names it change, nothing else.
    Product.objects.filter(pk=conn.pk).update(name="Data Link")
    before = _rows()
    r = opportunities_regenerate(as_of=AS_OF)
    after = _rows()
    assert {pk for pk in after if after[pk] != before[pk]} == affected
    assert (r.created, r.expired, r.updated, r.unchanged) == (0, 0, len(affected), len(after) - len(affected))
    for pk in affected:
        assert "Data Link" in after[pk][4]
        assert after[pk][7] > before[pk][7]  # generated_at: when it last changed
    changes, cursor = _feed(admin, cursor)
    assert {c.instance.pk for c in changes} == affected
    assert {c.op for c in changes} == {"updated"}
    # What the engine re-computed, alone: no history rows.
    assert OpportunityHistory.objects.count() == events_before


@pytest.mark.postgres
def test_status_changes_of_suggestions_stay_in_the_history(make_user):
    user = make_user("rep")
    admin = make_user("admin", role="admin")
    truth = plant(n_customers=200)
    opportunities_regenerate(as_of=AS_OF)
    conn = truth["products"]["DATA-CONN"]
    accepted, dropped = Opportunity.objects.filter(product=conn, status="open").order_by("pk")[:2]
    opportunity_set_status(opportunity=accepted, status="accepted", user=user)
    # The engine no longer supports the other one: the customer holds the product now.
    Holding.objects.create(customer=dropped.customer, product=conn, since=AS_OF)
    r = opportunities_regenerate(as_of=AS_OF)
    assert r.expired == 1
    entries = history.entries(Opportunity, OpportunityHistory.objects.filter(pgh_obj_id=accepted.pk).order_by("pgh_id"))
    assert [e.op for e in entries] == ["created", "updated"]
    status = next(c for c in entries[1].changes if c.field == "status")
    assert (status.old, status.new) == ("open", "accepted")
    expired = history.entries(Opportunity, OpportunityHistory.objects.filter(pgh_obj_id=dropped.pk).order_by("pgh_id"))
    assert [e.op for e in expired] == ["created", "updated"]
    assert next(c for c in expired[1].changes if c.field == "status").new == "expired"
    # The engine's re-scoring between two events is not put down to the person who changed the status next.
    rescored = Opportunity.objects.filter(product=conn, status="open").exclude(pk=dropped.pk).earliest("pk")
    Product.objects.filter(pk=conn.pk).update(name="Data Link")
    opportunities_regenerate(as_of=AS_OF)
    rescored.refresh_from_db()
    assert "Data Link" in rescored.evidence
    opportunity_set_status(opportunity=rescored, status="accepted", user=user)
    entries = history.entries(Opportunity, OpportunityHistory.objects.filter(pgh_obj_id=rescored.pk).order_by("pgh_id"))
    assert [e.op for e in entries] == ["created", "updated"]
    assert "status" in {c.field for c in entries[1].changes}
    assert not {c.field for c in entries[1].changes} & {"evidence", "score", "expected_value", "generated_at"}
    assert "Data Link" in OpportunityHistory.objects.filter(pgh_obj_id=rescored.pk).latest("pgh_id").evidence
    Product.objects.filter(pk=conn.pk).update(name=conn.name)
    # Supported again: it reopens, recorded and in the feed.
    _, cursor = _feed(admin)
    Holding.objects.filter(customer=dropped.customer, product=conn).delete()
    r = opportunities_regenerate(as_of=AS_OF)
    assert r.reopened == 1
    changes, _ = _feed(admin, cursor)
    assert dropped.pk in {c.instance.pk for c in changes}
    reopened = history.entries(Opportunity, OpportunityHistory.objects.filter(pgh_obj_id=dropped.pk).order_by("pgh_id"))
    assert next(c for c in reopened[-1].changes if c.field == "status").new == "open"
