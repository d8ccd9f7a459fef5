"""My day's "valuable customers at risk": the most valuable first, kept per run as candidates and
checked live for contacts, stage and ownership; the task sections' visibility."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from crm import services
from crm.models import Customer
from crm.selectors import pages
from tests.crm import factories as f
from tests.crm.clv_rows import make_run, require_clv, set_value

pytestmark = pytest.mark.django_db


@pytest.fixture
def book(sales_org):
    require_clv()
    rep = sales_org["north_rep1"]
    run = make_run(as_of=timezone.localdate())
    risky = []
    for i in range(3):
        c = f.customer(owner=rep, name=f"Risky {i}")
        set_value(run, c, clv="1000.00", p_alive=0.2, historical=str(3000 - 1000 * i))
        risky.append(c)
    safe = f.customer(owner=rep, name="Safe Co")
    set_value(run, safe, clv="9000.00", p_alive=0.9, historical="9000")
    other = f.customer(owner=sales_org["north_rep2"], name="Rival Co")
    set_value(run, other, clv="9000.00", p_alive=0.1, historical="9000")
    return {"rep": rep, "run": run, "risky": risky, "safe": safe, "other": other, **sales_org}


def names(user) -> list[str]:
    return [c.name for c in pages.my_day(user)["at_risk"]]


def test_at_risk_lists_the_reps_own_accounts_at_risk_most_valuable_first(book):
    assert names(book["rep"]) == ["Risky 0", "Risky 1", "Risky 2"]


def test_kept_candidates_are_checked_live_for_contact_stage_and_owner(client, book):
    rep = book["rep"]
    assert names(rep) == ["Risky 0", "Risky 1", "Risky 2"]  # keeps the candidates of this run
    services.contact_log(customer=book["risky"][0], salesperson=rep, channel="call", occurred_at=timezone.now(),
                         subject="check-in")
    Customer.objects.filter(pk=book["risky"][1].pk).update(lifecycle_stage=Customer.Stage.LOST)
    assert names(rep) == ["Risky 2"]
    Customer.objects.filter(pk=book["risky"][2].pk).update(owner=book["north_rep2"])
    assert names(rep) == []
    client.force_login(rep)
    assert "Risky 2" not in client.get(reverse("crm:my_day")).content.decode()


def test_falls_back_to_the_whole_book_when_the_kept_candidates_were_all_contacted(book):
    rep = book["rep"]
    full = pages.MY_DAY_LIMIT * pages.AT_RISK_CANDIDATES
    called = []
    for i in range(full):
        c = f.customer(owner=rep, name=f"Called {i}")
        set_value(book["run"], c, clv="500.00", p_alive=0.1, historical=str(100_000 - i))
        called.append(c)
    assert len(names(rep)) == pages.MY_DAY_LIMIT  # keeps the `full` most valuable, the three risky ones not among them
    for c in called:
        services.contact_log(customer=c, salesperson=rep, channel="call", occurred_at=timezone.now(), subject="x")
    assert names(rep) == ["Risky 0", "Risky 1", "Risky 2"]


def test_my_day_tasks_show_tasks_assigned_to_the_user_on_accounts_they_cannot_open(book):
    from crm.selectors.workspace import my_day_tasks

    rep = book["rep"]
    services.task_create(customer=book["other"], title="Cover for a colleague", due_on=timezone.localdate(),
                         assigned_to=rep)
    services.task_create(customer=book["other"], title="Not mine", due_on=timezone.localdate(),
                         assigned_to=book["north_rep2"])
    services.task_create(customer=book["safe"], title="Late call", due_on=timezone.localdate() - timedelta(days=2),
                         assigned_to=rep)
    sections = {s.key: s for s in my_day_tasks(rep)["sections"]}
    assert [(t.title, t.account_visible) for t in sections["today"].tasks] == [("Cover for a colleague", False)]
    assert [(t.title, t.account_visible) for t in sections["overdue"].tasks] == [("Late call", True)]
    assert (sections["today"].count, sections["overdue"].count, sections["upcoming"].count) == (1, 1, 0)
