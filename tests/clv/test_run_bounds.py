"""One implausible purchase does not make a portfolio absurd nor shift the spend model for everyone."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from clv import services
from clv.models import CustomerValue, PortfolioSnapshot
from crm.demo.seed import seed_demo
from tests.crm import factories as f

AS_OF = date(2026, 6, 30)
pytestmark = pytest.mark.django_db


def test_an_implausible_purchase_is_left_out_of_the_spend_fit_and_recorded_in_the_run():
    seed_demo(customers=400, seed=41, as_of=AS_OF)
    before = services.run_clv(as_of=AS_OF)
    repeat = CustomerValue.objects.filter(run=before, frequency__gte=2).select_related("customer").first()
    customer = repeat.customer
    # Stored before the input bound existed (or with the bound raised): the run must still cope.
    f.purchase(customer=customer, purchased_at=datetime(2026, 6, 1, 12, tzinfo=UTC),
               amount=Decimal("9999999999.99"), unit_price=Decimal("9999999999.99"))

    after = services.run_clv(as_of=AS_OF)

    def portfolio(run):
        return PortfolioSnapshot.objects.get(run=run, owner=customer.owner).total_clv

    assert portfolio(after) < 2 * portfolio(before)  # the owner's portfolio is not absurd
    for key in ("p", "q", "v"):  # the spend model of everyone keeps its shape
        assert after.params["spend"][key] == pytest.approx(before.params["spend"][key], rel=0.05)
    assert before.diagnostics["spend_outliers"]["customers"] == 0  # the demo book has none
    outliers = after.diagnostics["spend_outliers"]
    assert outliers["customers"] == 1
    assert outliers["customer_ids"] == [customer.pk]
    assert 0 < outliers["capped_to"] < outliers["threshold"] < 9_999_999_999.99
    value = CustomerValue.objects.get(run=after, customer=customer)
    assert value.expected_avg_value <= Decimal(str(outliers["capped_to"]))
    assert value.historical_value > Decimal("1e9")  # the margin so far is shown as recorded
