"""Learning from outcomes: per-rule rates re-rank the next suggestions; recent "already has it" or
"not relevant" dismissals hold a product back for CRM_SUPPRESS_DAYS, and it may come back after."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from crm.models import Customer, Opportunity, OpportunityOutcome
from crm.opportunities.services import opportunities_regenerate, outcome_rates
from crm.services import opportunity_set_status
from tests.crm.test_opportunities import AS_OF, plant


def _rank(opp: Opportunity) -> int:
    """1-based position of the opportunity in its customer's open list, best score first."""
    ids = list(
        Opportunity.objects.filter(customer_id=opp.customer_id, status="open").order_by("-score", "id")
        .values_list("pk", flat=True)
    )
    return ids.index(opp.pk) + 1


@pytest.mark.django_db
def test_a_new_rule_starts_at_its_kinds_rate_and_moves_with_its_own_outcomes(make_user, settings):
    rep = make_user("rep")
    plant(n_customers=200)
    opportunities_regenerate(as_of=AS_OF)
    rates = outcome_rates()
    kind = rates.kinds["up_sell"]
    assert kind.win_rate == pytest.approx(settings.OPPORTUNITY_WIN_PRIOR_A / (
        settings.OPPORTUNITY_WIN_PRIOR_A + settings.OPPORTUNITY_WIN_PRIOR_B))
    assert rates.rules[("up_sell", "up_sell:capacity")].win_rate == pytest.approx(kind.win_rate)
    assert rates.for_suggestion("up_sell", "a-rule-never-seen") == pytest.approx(kind.win_rate)
    capacity = list(Opportunity.objects.filter(rule="up_sell:capacity").order_by("pk")[:4])
    for o in capacity:
        opportunity_set_status(opportunity=o, status="won", user=rep)
    after = outcome_rates()
    r = after.rules[("up_sell", "up_sell:capacity")]
    assert (r.won, r.decided) == (4, 4)
    # Shrunk toward the kind's rate (itself updated), not jumped to 4/4.
    assert after.kinds["up_sell"].win_rate < r.win_rate < 1.0


@pytest.mark.django_db
def test_a_rule_with_a_poor_record_drops_in_rank_after_outcomes(make_user):
    rep = make_user("rep")
    truth = plant(n_customers=400)
    opportunities_regenerate(as_of=AS_OF)
    # Customers with both an up-sell (capacity) and cross-sell suggestions.
    upsells = Opportunity.objects.filter(rule="up_sell:capacity", status="open").order_by("pk")
    assert upsells.exists()
    rule_of = {o.pk: o.rule for o in Opportunity.objects.all()}
    assert set(rule_of.values()) <= {"holdings:association", "up_sell:capacity", "up_sell:value"}
    # Watch the one whose up-sell ranks best among its customer's suggestions with others below it.
    watched = min((o for o in upsells if Opportunity.objects.filter(customer_id=o.customer_id, status="open")
                   .exclude(pk=o.pk).exists()), key=_rank)
    rank_before, ev_before = _rank(watched), watched.expected_value
    # Salespeople dismiss (not relevant) or lose every other capacity up-sell.
    for i, o in enumerate(upsells.exclude(pk=watched.pk)):
        if i % 3 == 0:
            opportunity_set_status(opportunity=o, status="lost", user=rep)
        else:
            opportunity_set_status(opportunity=o, status="dismissed", user=rep, dismiss_reason="bad_timing")
    # Cross-sell does fine: a few wins.
    for o in Opportunity.objects.filter(rule="holdings:association", status="open").exclude(
            customer_id=watched.customer_id).order_by("pk")[:10]:
        opportunity_set_status(opportunity=o, status="won", user=rep)
    opportunities_regenerate(as_of=AS_OF)
    watched.refresh_from_db()
    assert watched.status == "open"
    assert watched.expected_value < ev_before
    assert _rank(watched) > rank_before
    rates = outcome_rates()
    capacity = rates.rules[("up_sell", "up_sell:capacity")]
    assert watched.evidence_data["win_rate"] == pytest.approx(capacity.win_rate, abs=1e-4)
    assert capacity.win_rate < rates.rules[("cross_sell", "holdings:association")].win_rate
    # EV never above the customer's value: the rate is a probability.
    assert 0 <= capacity.win_rate <= 1
    assert truth["seats2"].pk == watched.product_id


def _dismiss_one(rep, reason: str) -> Opportunity:
    o = Opportunity.objects.filter(kind="cross_sell", status="open").order_by("pk").first()
    return opportunity_set_status(opportunity=o, status="dismissed", user=rep, dismiss_reason=reason)


@pytest.mark.django_db
@pytest.mark.parametrize("reason", ["already_has", "not_relevant"])
def test_dismissed_already_has_it_stays_away_within_the_suppression_time_and_may_come_back_after(
        make_user, settings, reason):
    settings.CRM_SUPPRESS_DAYS = 180
    rep = make_user("rep")
    plant(n_customers=200)
    opportunities_regenerate(as_of=AS_OF)
    o = _dismiss_one(rep, reason)
    # The same product as an up-sell for that customer is held back too (any kind).
    opportunities_regenerate(as_of=AS_OF)
    o.refresh_from_db()
    assert o.status == "dismissed"
    assert o.dismiss_reason == reason
    assert not Opportunity.objects.filter(customer=o.customer, product=o.product, status="open").exists()
    # 179 days later: still away.
    Opportunity.objects.filter(pk=o.pk).update(status_changed_at=timezone.now() - timedelta(days=179))
    r = opportunities_regenerate(as_of=AS_OF)
    o.refresh_from_db()
    assert o.status == "dismissed"
    assert r.returned == 0
    # 181 days later, with the data still supporting it: open again, the earlier dismissal archived.
    Opportunity.objects.filter(pk=o.pk).update(status_changed_at=timezone.now() - timedelta(days=181))
    before = outcome_rates().rules[("cross_sell", "holdings:association")]
    r = opportunities_regenerate(as_of=AS_OF)
    o.refresh_from_db()
    assert o.status == "open"
    assert o.dismiss_reason == ""
    assert r.returned == 1
    archived = OpportunityOutcome.objects.get(opportunity=o)
    assert (archived.status, archived.dismiss_reason, archived.rule) == ("dismissed", reason, "holdings:association")
    after = outcome_rates().rules[("cross_sell", "holdings:association")]
    assert after.dismissed == before.dismissed  # still counted once
    # A shorter setting lets it come back sooner.
    opportunity_set_status(opportunity=o, status="dismissed", user=rep, dismiss_reason=reason)
    Opportunity.objects.filter(pk=o.pk).update(status_changed_at=timezone.now() - timedelta(days=31))
    settings.CRM_SUPPRESS_DAYS = 30
    opportunities_regenerate(as_of=AS_OF)
    o.refresh_from_db()
    assert o.status == "open"


@pytest.mark.django_db
def test_a_recent_already_has_it_holds_back_other_kinds_of_the_same_product(make_user):
    rep = make_user("rep")
    truth = plant(n_customers=200)
    opportunities_regenerate(as_of=AS_OF)
    up = Opportunity.objects.filter(rule="up_sell:capacity", status="open").order_by("pk").first()
    customer: Customer = up.customer
    # A cross-sell of the same product dismissed as "already has it" (made by hand: the data gave none).
    cross = Opportunity.objects.create(customer=customer, product=truth["seats2"], kind="cross_sell",
                                       evidence="x", generated_at=timezone.now(), rule="holdings:association")
    opportunity_set_status(opportunity=cross, status="dismissed", user=rep, dismiss_reason="already_has")
    opportunities_regenerate(as_of=AS_OF)
    up.refresh_from_db()
    assert up.status == "expired"
