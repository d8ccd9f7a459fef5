"""The Analytics page: the seven questions, each with its inputs and a table or chart.

The answers come from the analytics selectors (crm.analytics); until they are installed the
page shows the questions with a note instead of failing.
"""

from __future__ import annotations

from django.db import connection

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


ROW_LIMIT = 50


def _table(result) -> tuple[dict, list[dict]]:
    """A selector's answer as (summary numbers, table rows)."""
    if isinstance(result, list):
        return {}, result[:ROW_LIMIT]
    if isinstance(result, dict):
        rows = next((v for v in result.values() if isinstance(v, list)), [])
        summary = {k: v for k, v in result.items() if not isinstance(v, list | dict)}
        return summary, rows[:ROW_LIMIT]
    return {}, []


def _answers(user, data: dict) -> dict:
    from crm import analytics as a

    period = {"since": data.get("since"), "until": data.get("until")}
    window = data.get("window_days") or 90
    product = data.get("product")
    calls = {
        "contact_frequency": lambda: a.contact_frequency(user, limit=ROW_LIMIT, **period),
        "most_profitable": lambda: a.most_profitable(user, **period),
        "events_before_loss": lambda: a.events_before_loss(user, window_days=window, **period),
        "customer_products": lambda: a.customer_products(user, product=product, limit=ROW_LIMIT, **period),
        "events_before_purchase": lambda: a.events_before_purchase(user, window_days=window, product=product,
                                                                   **period),
        "loyalty_patterns": lambda: a.loyalty_patterns(user),
    }
    if connection.vendor != "postgresql":
        # These two are written in PostgreSQL's SQL dialect in crm.analytics.
        calls.pop("events_before_loss")
        calls.pop("events_before_purchase")
    if product is not None:
        calls["product_buyers"] = lambda: a.product_buyers(user, product=product, **period)
    return {key: _table(call()) for key, call in calls.items()}


def analytics_context(request) -> dict:
    from crm.forms import AnalyticsForm

    form = AnalyticsForm(request.GET or None)
    available = analytics_available()
    answers = {}
    if available and (not form.is_bound or form.is_valid()):
        answers = _answers(request.user, form.cleaned_data if form.is_bound else {})
    questions = []
    for key, title, description in QUESTIONS:
        summary, rows = answers.get(key, ({}, []))
        questions.append({
            "key": key, "title": title, "description": description, "summary": summary,
            "headers": [h.replace("_", " ") for h in rows[0]] if rows else [],
            "rows": [list(r.values()) for r in rows],
            "needs_product": key == "product_buyers" and key not in answers,
        })
    return {"form": form, "questions": questions, "available": available}
