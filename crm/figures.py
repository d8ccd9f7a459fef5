"""What each figure on the pages means: one short definition per figure, shown beside it as a hint.

The same definitions, at more length, are in docs/user-guide.md ("What each number means");
tests/crm/test_figures.py checks that every figure here is explained there too.
"""

from __future__ import annotations

from django.conf import settings

from crm.selectors.values import clv_horizon_label, clv_is_lifetime


def currency() -> str:
    return getattr(settings, "CRM_CURRENCY", "EUR")


def _clv() -> str:
    if clv_is_lifetime():
        return (
            f"Customer lifetime value: the margin (not revenue) this customer is expected to bring over the whole "
            f"remaining relationship, discounted at {settings.CLV_ANNUAL_DISCOUNT_RATE:.0%} a year, in {currency()}. "
            f"The next 12 months are shown beside it."
        )
    return (
        f"Customer lifetime value as stored by the current model: the margin (not revenue) this customer is "
        f"expected to bring over the {clv_horizon_label()}, discounted at {settings.CLV_ANNUAL_DISCOUNT_RATE:.0%} "
        f"a year, in {currency()}. It is predicted from how often and how recently they bought and how much they spend."
    )


def _definitions() -> dict[str, tuple[str, str]]:
    cur = currency()
    return {
        "clv": ("CLV", _clv()),
        "value_12m": (
            "Next 12 months",
            f"The part of the CLV expected in the next 12 months: margin, discounted, in {cur}.",
        ),
        "portfolio": (
            "Portfolio value",
            "The sum of the CLV of the accounts shown (the salespeople and teams in the filter).",
        ),
        "p_alive": (
            "Probability active",
            "How likely the customer still buys from us, judged from how often they bought and how long it has been "
            "since their last purchase. Below 50% the account is at risk; 50-80% is worth watching.",
        ),
        "expected_purchases": (
            "Expected purchases",
            f"How many purchase occasions the model expects from this customer over the {clv_horizon_label()}.",
        ),
        "historical_value": (
            "Historical margin",
            f"The margin the customer has brought so far: what they paid minus what it cost us, in {cur}. "
            "It is history, not a forecast.",
        ),
        "risk": (
            "Risk band",
            "High risk: probability active below 50%. Watch: 50% to 80%. Low risk: 80% or more.",
        ),
        "at_risk_customers": (
            "Customers at risk",
            "Accounts whose probability of still being active is below 50% (lost accounts excluded).",
        ),
        "value_at_risk": (
            "Value at risk",
            "The part of the portfolio value carried by at-risk customers: the sum of their CLV. "
            "It is never more than the portfolio value.",
        ),
        "opportunity_ev": (
            "Expected value",
            "What this suggestion is expected to add to the customer's value over the same horizon as CLV: the "
            "margin of the sale, at most the customer's CLV, times the probability the customer is still active, "
            "times how often suggestions of this kind have been won before.",
        ),
        "win_rate": (
            "Win rate",
            "How often suggestions of this kind were won, out of those won, lost or dismissed; a starting "
            "assumption of 20% is blended in while there is little history.",
        ),
        "pipeline": (
            "Pipeline",
            "The sum of the expected values of the open and accepted opportunities shown.",
        ),
        "nba_ev": (
            "Next best action expected value",
            f"What doing this is expected to add or save, in {cur} of margin like CLV: for a retention call, CLV "
            "times the fall in probability active since the previous run times how often a call saves a customer; "
            "for a renewal, the value at stake times that save rate; for an overdue follow-up, CLV times the "
            "chance the customer has gone quiet times that save rate; for an offer, the suggestion's expected value. "
            "Rounded to whole units, so totals are the sum of the items.",
        ),
        "value_change": (
            "Change since the previous run",
            "How the CLV moved between the previous CLV run and the current one, and why.",
        ),
    }


def figure(key: str) -> tuple[str, str]:
    """(label, definition) of one figure."""
    return _definitions()[key]


def all_figures() -> dict[str, tuple[str, str]]:
    return _definitions()
