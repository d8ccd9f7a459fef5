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
