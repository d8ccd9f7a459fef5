"""The next-best-action list: its four kinds with their expected values, the visibility rule,
ranking, what My day and the full page show, the daily record and managers' "acted on" counts."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from crm import services
from crm.models import Customer, NextActionShown, Opportunity
from crm.next_action_records import next_actions_record_all, next_actions_record_shown
from crm.selectors import next_actions as nba
from tests.crm import factories as f
from tests.crm.clv_rows import set_value
from tests.crm.nba_rows import build_book

pytestmark = pytest.mark.django_db


def today():
    return timezone.localdate()


@pytest.fixture
def book(sales_org):
    return build_book(sales_org)


def rate():
    return nba.save_rate()


def test_each_kind_appears_with_its_documented_expected_value(book):
    items = {i.kind: i for i in nba.next_actions(book["rep"]).items}
    assert set(items) == {"retention", "renewal", "follow_up", "cross_sell"}
    s = rate()
    assert s == pytest.approx(2 / 8)  # the prior mean before any retention call is recorded
    assert items["retention"].expected_value == round(Decimal(8000 * (0.9 - 0.6) * s))
    assert items["renewal"].expected_value == round(Decimal(4000 * s))
    assert items["follow_up"].expected_value == round(Decimal(2000 * (1 - 0.7) * s))
    assert items["cross_sell"].expected_value == Decimal("700")
    assert [items[k].action for k in ("retention", "renewal", "follow_up", "cross_sell")] == [
        "call", "meeting", "call", "offer"]


def test_reasons_are_one_sentence_a_salesperson_can_say(book):
    items = {i.kind: i for i in nba.next_actions(book["rep"]).items}
    assert items["retention"].reason.startswith("Sliding Co's chance of still buying from us fell from 90% to 60%")
    assert "Hosting Plus contract renews on" in items["renewal"].reason
    assert items["cross_sell"].reason == "Customers like this one hold Data Connector."
    for item in items.values():
        assert item.reason.count(". ") == 0
        assert item.reason.endswith(".")


def test_one_follow_up_per_account_the_oldest_with_the_others_counted(book):
    follow_ups = [i for i in nba.next_actions(book["rep"]).items if i.kind == "follow_up"]
    assert [i.object_id for i in follow_ups] == [book["task"].pk]
    assert "and 1 more overdue on this account" in follow_ups[0].reason


def test_ranked_by_expected_value(book):
    values = [i.expected_value for i in nba.next_actions(book["rep"]).items]
    assert values == sorted(values, reverse=True)
    assert values[0] > values[-1]


def test_a_rep_never_sees_another_reps_customers(book):
    names = {i.customer_name for i in nba.next_actions(book["rep"]).items}
    assert "Rival Co" not in names
    assert "Far South Co" not in names
    assert {i.customer_name for i in nba.next_actions(book["rep2"]).items} == {"Rival Co"}


def test_a_viewer_sees_a_list_only_within_what_they_may_see(book):
    seen_by_other_rep = nba.next_actions(book["rep"], viewer=book["rep2"])
    assert seen_by_other_rep.items == []
    seen_by_manager = nba.next_actions(book["rep"], viewer=book["north_manager"])
    assert len(seen_by_manager.items) == 4


def test_a_teams_offers_are_ranked_the_same_per_salesperson_as_by_the_window_function(book, settings, monkeypatch):
    settings.NBA_LIMIT_PER_KIND = 3
    for i in range(5):
        f.opportunity(customer=f.customer(owner=book["rep"]), expected_value=Decimal(100 + i % 3), score=i / 10)
        f.opportunity(customer=f.customer(owner=book["rep2"]), expected_value=Decimal(50 + i))
    members = [book["north_manager"], book["rep"], book["rep2"]]

    def offers():
        lists = nba.next_actions_for(book["north_manager"], members)
        return {pk: [i.key for i in nba_list.items if i.kind in ("cross_sell", "up_sell")] for pk, nba_list in lists.items()}

    per_salesperson = offers()
    monkeypatch.setattr(nba, "UNION_MAX_OWNERS", 0)
    assert offers() == per_salesperson
    assert [len(keys) for keys in per_salesperson.values()] == [0, 3, 3]


def test_the_team_list_covers_only_the_managers_team(book):
    team = nba.team_next_actions(book["north_manager"])
    owners = {r.owner.username for r in team["rows"]}
    assert owners == {"north_manager", "north_rep1", "north_rep2"}
    names = {i.customer_name for r in team["rows"] for i in r.nba.items}
    assert "Far South Co" not in names
    assert "Rival Co" in names
    assert team["total"] == sum(r.nba.total for r in team["rows"])


def test_list_owner_permissions(book):
    assert nba.list_owner_for(book["rep"], None) == book["rep"]
    assert nba.list_owner_for(book["north_manager"], book["rep"].pk) == book["rep"]
    assert nba.list_owner_for(book["admin"], book["south"].pk) == book["south"]
    with pytest.raises(PermissionError):
        nba.list_owner_for(book["rep"], book["rep2"].pk)
    with pytest.raises(PermissionError):
        nba.list_owner_for(book["north_manager"], book["south"].pk)


def test_a_recent_contact_takes_the_retention_call_off_the_list(book):
    f.contact(customer=book["sliding"], salesperson=book["rep"], occurred_at=timezone.now())
    kinds = {i.kind for i in nba.next_actions(book["rep"]).items}
    assert "retention" not in kinds


def test_without_a_previous_run_there_is_no_retention_call(book):
    book["prev"].delete()
    kinds = {i.kind for i in nba.next_actions(book["rep"]).items}
    assert kinds == {"renewal", "follow_up", "cross_sell"}


def test_each_kind_is_capped_per_salesperson(book, settings):
    settings.NBA_LIMIT_PER_KIND = 2
    for i in range(4):
        f.opportunity(customer=f.customer(owner=book["rep"]), expected_value=Decimal(100 + i))
    lists = nba.next_actions_for(book["north_manager"], [book["rep"], book["rep2"]])
    rep_offers = [i.expected_value for i in lists[book["rep"].pk].items if i.kind == "cross_sell"]
    assert rep_offers == [Decimal("700"), Decimal("103")]
    assert len([i for i in lists[book["rep2"].pk].items if i.kind == "cross_sell"]) == 1


def test_list_query_count_does_not_grow_with_the_book_or_the_team(book, django_assert_max_num_queries):
    for i in range(30):
        c = f.customer(owner=book["rep"])
        f.opportunity(customer=c, expected_value=Decimal(10 + i))
        services.task_create(customer=c, title=f"late {i}", due_on=today() - timedelta(days=2), assigned_to=book["rep"])
        set_value(book["run"], c, clv="100.00", p_alive=0.4)
        set_value(book["prev"], c, clv="100.00", p_alive=0.8)
    # The first list after a run also ranks the falls between the two runs (then kept in the cache).
    with django_assert_max_num_queries(8):
        nba.next_actions(book["rep"])
    with django_assert_max_num_queries(7):
        nba.next_actions(book["rep"])
    members = [book["north_manager"], book["rep"], book["rep2"]]
    with django_assert_max_num_queries(8):
        nba.next_actions_for(book["north_manager"], members)
    with django_assert_max_num_queries(7):
        nba.next_actions_for(book["north_manager"], members)


def test_kept_retention_candidates_are_checked_live(book):
    c = f.customer(owner=book["rep"], name="Falling Co")
    set_value(book["run"], c, clv="500.00", p_alive=0.3)
    set_value(book["prev"], c, clv="500.00", p_alive=0.9)
    keys = lambda: {i.key for i in nba.next_actions(book["rep"]).items}  # noqa: E731
    assert f"retention:{c.pk}" in keys()
    services.contact_log(customer=c, salesperson=book["rep"], channel="call", occurred_at=timezone.now(), subject="check-in")
    assert f"retention:{c.pk}" not in keys()


def test_retention_falls_back_to_the_whole_book_when_every_kept_candidate_was_called(book, settings):
    settings.NBA_LIMIT_PER_KIND = 1
    called = []
    for i in range(nba.RETENTION_CANDIDATES):
        c = f.customer(owner=book["rep"], name=f"Called {i}")
        set_value(book["run"], c, clv="10000.00", p_alive=0.1)
        set_value(book["prev"], c, clv="10000.00", p_alive=0.9)
        called.append(c)
    q = f.customer(owner=book["rep"], name="Quiet Co")
    set_value(book["run"], q, clv="9000.00", p_alive=0.1)
    set_value(book["prev"], q, clv="9000.00", p_alive=0.9)
    nba.next_actions(book["rep"])  # keeps the biggest falls, the quiet one not among them
    for c in Customer.objects.filter(owner=book["rep"]).exclude(pk=q.pk):
        services.contact_log(customer=c, salesperson=book["rep"], channel="call", occurred_at=timezone.now(), subject="x")
    retention = [i for i in nba.next_actions(book["rep"]).items if i.kind == "retention"]
    assert [i.customer_id for i in retention] == [q.pk]


# -- pages ------------------------------------------------------------------------------------


def _money_on(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>([^<]+)<', html)
    assert match, element_id
    return match.group(1).strip()


def test_my_day_card_total_is_the_sum_of_its_items(client, book):
    from crm.templatetags.crm_ui import money

    client.force_login(book["rep"])
    html = client.get(reverse("crm:my_day")).content.decode()
    top = nba.next_actions(book["rep"]).top
    assert len(top) == 4
    shown = re.findall(r'data-nba-value="(\d+)"', html)
    assert [Decimal(v) for v in shown] == [i.expected_value for i in top]
    assert _money_on(html, "nba-total") == money(sum(Decimal(v) for v in shown))
    assert "Offer Data Connector to Offer Co" in html
    assert reverse("crm:next_actions") in html


def test_full_page_lists_every_item_paginated_and_totals_them(client, book):
    from crm.templatetags.crm_ui import money

    for i in range(30):
        f.opportunity(customer=f.customer(owner=book["rep"]), expected_value=Decimal(10 + i))
    client.force_login(book["rep"])
    full = nba.next_actions(book["rep"])
    assert len(full.items) == 34
    html = client.get(reverse("crm:next_actions")).content.decode()
    assert len(re.findall(r'data-nba-value="', html)) == nba.PAGE_SIZE
    assert _money_on(html, "nba-total") == money(full.total)
    page2 = client.get(reverse("crm:next_actions"), {"page": 2}).content.decode()
    assert len(re.findall(r'data-nba-value="', page2)) == 34 - nba.PAGE_SIZE


def test_full_page_of_another_rep_is_forbidden_to_a_rep_and_open_to_their_manager(client, book):
    client.force_login(book["rep2"])
    assert client.get(reverse("crm:next_actions"), {"user": book["rep"].pk}).status_code == 403
    client.force_login(book["north_manager"])
    response = client.get(reverse("crm:next_actions"), {"user": book["rep"].pk})
    assert response.status_code == 200
    assert "Sliding Co" in response.content.decode()
    assert client.get(reverse("crm:next_actions"), {"user": book["south"].pk}).status_code == 403
    assert client.get(reverse("crm:next_actions"), {"user": 987654}).status_code == 404


def test_my_day_query_budget_with_the_card(client, book, django_assert_max_num_queries):
    for i in range(30):
        c = f.customer(owner=book["rep"])
        f.opportunity(customer=c, expected_value=Decimal(10 + i))
        services.task_create(customer=c, title=f"late {i}", due_on=today() - timedelta(days=2), assigned_to=book["rep"])
    client.force_login(book["rep"])
    client.get(reverse("crm:my_day"))  # the first view of the day records the list
    # with a CLV run: the list reads the previous run, the save rate, retention calls, renewals,
    # follow-ups and offers, and checks the day's record (7), beside My day's other sections
    with django_assert_max_num_queries(19):
        assert client.get(reverse("crm:my_day")).status_code == 200


# -- the daily record and "acted on" ------------------------------------------------------------


def test_first_view_of_the_day_records_the_list_once(client, book):
    client.force_login(book["rep"])
    client.get(reverse("crm:my_day"))
    client.get(reverse("crm:my_day"))
    rows = NextActionShown.objects.filter(user=book["rep"])
    assert rows.count() == 4
    assert sorted(r.expected_value for r in rows) == sorted(i.expected_value for i in nba.next_actions(book["rep"]).items)
    assert set(rows.values_list("shown_on", flat=True)) == {today()}


def test_an_item_already_recorded_in_the_window_is_not_recorded_again(book):
    lists = nba.next_actions_for(book["north_manager"], [book["rep"]])
    assert next_actions_record_shown(lists=lists, on=today() - timedelta(days=1)) == 4
    f.opportunity(customer=book["late"], product=f.product(name="New Thing"), expected_value=Decimal("50"))
    lists = nba.next_actions_for(book["north_manager"], [book["rep"]])
    assert next_actions_record_shown(lists=lists, on=today()) == 1


def test_nightly_pass_records_every_salespersons_list(book):
    assert next_actions_record_all() == 4 + 2 + 1  # north_rep1, north_rep2, south_rep1
    assert next_actions_record_all() == 0


def test_acted_on_counts_contacts_completed_tasks_and_changed_opportunities(client, book):
    next_actions_record_all(on=today())
    team = nba.team_next_actions(book["north_manager"])
    rep_row = next(r for r in team["rows"] if r.owner == book["rep"])
    assert (rep_row.shown, rep_row.acted) == (4, 0)
    # a contact with the sliding customer, the task done, the opportunity accepted: three of four
    f.contact(customer=book["sliding"], salesperson=book["rep"], occurred_at=timezone.now())
    services.task_complete(task=book["task"], outcome="Sent")
    services.opportunity_set_status(opportunity=book["opp"], status=Opportunity.Status.ACCEPTED, user=book["rep"])
    team = nba.team_next_actions(book["north_manager"])
    rep_row = next(r for r in team["rows"] if r.owner == book["rep"])
    recorded = {r.key: r.expected_value for r in NextActionShown.objects.filter(user=book["rep"])}
    assert (rep_row.shown, rep_row.acted) == (4, 3)
    assert rep_row.acted_value == sum(v for k, v in recorded.items() if not k.startswith("renewal:"))
    client.force_login(book["north_manager"])
    html = client.get(reverse("crm:team_next_actions")).content.decode()
    assert "acted on: 3 of 6" in " ".join(html.split())


def test_an_action_before_the_item_was_listed_does_not_count(book):
    f.contact(customer=book["renewing"], salesperson=book["rep"],
              occurred_at=datetime.combine(today() - timedelta(days=40), datetime.min.time(), tzinfo=UTC))
    lists = nba.next_actions_for(book["north_manager"], [book["rep"]])
    next_actions_record_shown(lists=lists, on=today())
    stats = nba.acted_on([book["rep"].pk])
    assert stats[book["rep"].pk]["acted"] == 0


def test_save_rate_learns_from_retention_calls(book):
    long_ago = today() - timedelta(days=120)
    for i in range(4):
        c = f.customer(owner=book["rep"])
        NextActionShown.objects.create(user=book["rep"], customer=c, kind="retention", key=f"retention:{c.pk}",
                                       expected_value=Decimal(10), shown_on=long_ago)
        f.contact(customer=c, salesperson=book["rep"], occurred_at=timezone.now() - timedelta(days=100))
        if i == 0:
            f.purchase(customer=c, purchased_at=timezone.now() - timedelta(days=90))
    assert nba.save_rate() == pytest.approx((2 + 1) / (2 + 6 + 4))


def test_team_page_is_linked_from_the_dashboard_and_shows_outcome_rates(client, book):
    client.force_login(book["north_manager"])
    html = client.get(reverse("crm:dashboard")).content.decode()
    assert reverse("crm:team_next_actions") in html
    page = client.get(reverse("crm:team_next_actions")).content.decode()
    assert 'id="outcome-rates"' in page
    assert "Far South Co" not in page
    assert "north_rep2" in page or book["rep2"].get_full_name() in page


def test_team_page_is_for_managers(client, book):
    client.force_login(book["rep"])
    assert client.get(reverse("crm:team_next_actions")).status_code in (302, 403)


def test_the_nightly_task_records_the_lists(book):
    from crm.tasks import record_next_actions_task

    assert record_next_actions_task.delay().get() == {"recorded": 7}
    assert NextActionShown.objects.filter(user=book["south"]).count() == 1
