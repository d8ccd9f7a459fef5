"""The Analytics page: the seven questions, each with its inputs and a table or chart.

The answers come from the analytics selectors (crm.analytics); until they are installed the
page shows the questions with a note instead of failing.
"""

from __future__ import annotations

QUESTIONS = [
    ("product_buyers", "Who bought a product, and who bought it again?",
     "How many customers bought product A, and how many bought it more than once."),
    ("contact_frequency", "How often do we contact each customer?",
     "Mean gap between contacts and the last contact, and valuable customers not contacted lately."),
    ("most_profitable", "Which customers are most profitable?",
     "By margin so far and by predicted lifetime value."),
    ("events_before_loss", "What happens before we lose a customer?",
     "Event kinds in a window before a loss, compared with their base rate (lift)."),
    ("customer_products", "Which customers buy which products?",
     "Customer × product, and product → customers."),
    ("events_before_purchase", "Which events come before a purchase?",
     "Event kinds with lift against the base rate and the typical lead time."),
    ("loyalty_patterns", "Loyalty by relationship type and lifecycle stage",
     "Retention, purchase frequency, average CLV and probability active per group."),
]


def analytics_available() -> bool:
    try:
        import crm.analytics  # noqa: F401
    except ImportError:
        return False
    return True


def analytics_context(request) -> dict:
    from crm.forms import AnalyticsForm

    form = AnalyticsForm(request.GET or None)
    return {
        "form": form,
        "questions": [{"key": k, "title": t, "description": d} for k, t, d in QUESTIONS],
        "available": analytics_available(),
    }
