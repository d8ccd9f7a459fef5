"""Deletions reach the managers of the team the record belonged to when it went, not the owner's new team."""

from __future__ import annotations

import pytest

from crm import services
from tests.api.test_sync import drain

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_deletion_stays_with_the_team_it_happened_in(api, book, sales_org):
    rep = sales_org["north_rep1"]
    event = book["a1"]["event"]
    services.record_delete(instance=event, deleted_by=rep)
    rep.team = sales_org["south_team"]
    rep.save(update_fields=["team"])
    south, _ = drain(api(sales_org["south_manager"]))
    assert "E-a1" not in [c["external_id"] for c in south if c["op"] == "deleted"]
    north, _ = drain(api(sales_org["north_manager"]))
    assert "E-a1" in [c["external_id"] for c in north if c["op"] == "deleted"]


def test_a_move_out_of_view_stays_with_the_team_it_happened_in(api, book, sales_org, make_user):
    from accounts.models import Team, User

    east_manager = make_user("east_manager", role=User.Role.MANAGER)
    east = Team.objects.create(name="East", manager=east_manager)
    rep = sales_org["north_rep1"]
    services.record_update(instance=book["a1"]["customer"], data={"owner": sales_org["south_rep2"]})
    # the customer left north's view for south; then its previous owner joins a third team
    rep.team = east
    rep.save(update_fields=["team"])
    east_feed, _ = drain(api(east_manager))
    assert not {"C-a1", "E-a1"} & {c["external_id"] for c in east_feed}
    north, _ = drain(api(sales_org["north_manager"]))
    assert "C-a1" in [c["external_id"] for c in north if c["op"] == "deleted"]


def test_deleting_an_account_tells_its_tasks_assignees(api, sales_org):
    """An assignee sees a task on an account they cannot see; when the account goes, so must the task."""
    from django.utils import timezone

    from crm.models import Customer
    from tests.crm import factories as f

    owner, assignee = sales_org["north_rep1"], sales_org["south_rep1"]
    outsider = api(sales_org["south_rep2"])
    client = api(assignee)
    _, cursor = drain(client, types="tasks")
    _, outsider_cursor = drain(outsider, types="tasks")
    customer = f.customer(owner=owner)
    task = services.task_create(customer=customer, title="Call about the renewal", due_on=timezone.localdate(),
                                assigned_to=assignee, external_id="TA-1")
    own = services.task_create(customer=customer, title="Owner's own", due_on=timezone.localdate(),
                               assigned_to=owner, external_id="TA-2")
    changes, cursor = drain(client, cursor, types="tasks")
    assert [(c["op"], c["id"]) for c in changes] == [("created", task.pk)]
    assert not Customer.objects.visible_to(assignee).filter(pk=customer.pk).exists()
    task_id = task.pk
    services.record_delete(instance=customer, deleted_by=owner)
    changes, _ = drain(client, cursor, types="tasks")
    assert [(c["op"], c["id"], c["external_id"]) for c in changes] == [("deleted", task_id, "TA-1")]
    assert own.pk not in [c["id"] for c in changes]  # the owner's task is the owner's business
    assert drain(outsider, outsider_cursor, types="tasks")[0] == []


def test_deleting_a_contact_tells_its_follow_ups_assignee(api, sales_org):
    from datetime import timedelta

    from django.utils import timezone

    from tests.crm import factories as f

    owner, assignee = sales_org["north_rep1"], sales_org["south_rep1"]
    client = api(assignee)
    _, cursor = drain(client, types="tasks")
    customer = f.customer(owner=owner)
    contact = services.contact_log(customer=customer, salesperson=owner, channel="call", occurred_at=timezone.now() - timedelta(hours=1),
                                   subject="Renewal", follow_up_on=timezone.localdate())
    task = contact.task
    services.task_update(task=task, data={"assigned_to": assignee})
    _, cursor = drain(client, cursor, types="tasks")
    services.record_delete(instance=contact, deleted_by=owner)
    changes, _ = drain(client, cursor, types="tasks")
    assert [(c["op"], c["id"]) for c in changes] == [("deleted", task.pk)]
