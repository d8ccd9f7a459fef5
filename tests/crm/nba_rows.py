"""A book with one next-best-action item of each kind for north_rep1, and rivals' items elsewhere."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from clv.models import HoldingValue
from crm import services
from tests.crm import factories as f
from tests.crm.clv_rows import make_run, set_value


def today():
    return timezone.localdate()


def build_book(sales_org):
    """north_rep1's book with one item of each kind, and a rival item in north_rep2's and south_rep1's books."""
    rep, rep2, south = sales_org["north_rep1"], sales_org["north_rep2"], sales_org["south_rep1"]
    prev = make_run(as_of=today() - timedelta(days=7), current=False)
    run = make_run(as_of=today())
    sliding = f.customer(name="Sliding Co", owner=rep)
    set_value(prev, sliding, clv="9000.00", p_alive=0.9)
    set_value(run, sliding, clv="8000.00", p_alive=0.6)
    steady = f.customer(name="Steady Co", owner=rep)  # no fall: no retention call
    set_value(prev, steady, clv="5000.00", p_alive=0.9)
    set_value(run, steady, clv="5000.00", p_alive=0.9)
    renewing = f.customer(name="Renewing Co", owner=rep)
    set_value(run, renewing, clv="12000.00", p_alive=1.0)
    plan = f.product(name="Hosting Plus", renewal_period="month", period_price=Decimal("400.00"))
    holding = f.holding(customer=renewing, product=plan, since=today() - timedelta(days=200))
    HoldingValue.objects.create(
        run=run, holding=holding, customer=renewing, segment="Hosting, monthly", model="sbg", periods=7,
        next_renewal=today() + timedelta(days=10), p_renew=0.6, expected_remaining_periods=20.0,
        period_value=Decimal("300.00"), residual_value=Decimal("10000.00"), value_at_stake=Decimal("4000.00"),
    )
    late = f.customer(name="Late Co", owner=rep)
    set_value(run, late, clv="2000.00", p_alive=0.7)
    task = services.task_create(customer=late, title="Send the quote", due_on=today() - timedelta(days=3),
                                assigned_to=rep)
    services.task_create(customer=late, title="Ask about the pilot", due_on=today() - timedelta(days=1),
                         assigned_to=rep)
    offer = f.customer(name="Offer Co", owner=rep)
    opp = f.opportunity(customer=offer, product=f.product(name="Data Connector"), expected_value=Decimal("700.40"),
                        evidence="Customers like this one hold Data Connector. 40% of them bought it.")
    rival = f.customer(name="Rival Co", owner=rep2)
    set_value(prev, rival, clv="90000.00", p_alive=0.95)
    set_value(run, rival, clv="80000.00", p_alive=0.3)
    f.opportunity(customer=rival, expected_value=Decimal("5000.00"))
    far = f.customer(name="Far South Co", owner=south)
    f.opportunity(customer=far, expected_value=Decimal("9000.00"))
    return {"rep": rep, "rep2": rep2, "south": south, "sliding": sliding, "renewing": renewing, "late": late,
            "task": task, "opp": opp, "rival": rival, "holding": holding, "run": run, "prev": prev, **sales_org}
