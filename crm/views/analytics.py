"""The Analytics page: seven questions, each answered in a sentence, then a table, a CSV and a chart.

The numbers come from the analytics selectors (crm.analytics); this module turns each answer
into words a salesperson can read aloud, tables whose columns know their kind (money,
percent, date...) so the page and the CSV format them, and the data of a chart where one helps.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.http import Http404, HttpResponse
from django.utils import timezone

from crm.templatetags.crm_ui import day, format_money, format_number, format_percent

ROW_LIMIT = 50
DEFAULT_WINDOW = 90
NOT_CONTACTED_DAYS = 60


@dataclass
class Column:
    key: str
    label: str
    kind: str = ""  # money, percent, percent1, ratio, days, number1, date, or "" (text / count)

    @property
    def csv_label(self) -> str:
        if self.kind == "money":
            return f"{self.label} ({settings.CRM_CURRENCY})"
        if self.kind in ("percent", "percent1"):
            return f"{self.label} (%)"
        if self.kind == "days":
            return f"{self.label} (days)"
        return self.label

    @property
    def numeric(self) -> bool:
        return self.kind in ("money", "percent", "percent1", "ratio", "days", "number1", "count")


@dataclass
class Table:
    key: str
    title: str
    columns: list[Column]
    rows: list[dict]
    link: str | None = "customer"  # the column whose cell links to Account 360 (rows carry customer_id)

    def cells(self):
        """Rows as lists of (column, value, customer_id or None) for the template."""
        for row in self.rows:
            yield [(c, row.get(c.key), row.get("customer_id") if c.key == self.link else None) for c in self.columns]


@dataclass
class Answer:
    key: str
    title: str
    sentence: str = ""
    tables: list[Table] = field(default_factory=list)
    chart: dict | None = None
    note: str = ""


QUESTIONS = [
    ("product_buyers", "Who bought a product, and who bought it again?"),
    ("contact_frequency", "How often do we contact each customer, and who has not been contacted lately?"),
    ("most_profitable", "Which customers are most profitable, now and over their lifetime?"),
    ("events_before_loss", "What happens before we lose a customer?"),
    ("customer_products", "Which customers buy which products?"),
    ("events_before_purchase", "Which events come before a purchase?"),
    ("loyalty_patterns", "How loyal is each kind of relationship?"),
]


def analytics_available() -> bool:
    try:
        import crm.analytics  # noqa: F401
    except ImportError:
        return False
    return True


def _kind_label(kind: str) -> str:
    from crm.models import Event

    return dict(Event.Kind.choices).get(kind, kind.replace("_", " ")) if hasattr(Event, "Kind") else kind


def _period_words(since: date | None, until: date | None) -> str:
    if since and until:
        return f"between {day(since)} and {day(until)}"
    if since:
        return f"since {day(since)}"
    if until:
        return f"up to {day(until)}"
    return "so far"


def _chart(labels, values, label: str, unit: str = "") -> dict | None:
    if not labels:
        return None
    return {"labels": [str(x) for x in labels], "values": [round(float(v or 0), 4) for v in values], "label": label,
            "unit": unit}


# -- the seven answers ---------------------------------------------------------------------------------


def q1_product_buyers(user, product, since, until) -> Answer:
    from crm import analytics as a

    answer = Answer("product_buyers", QUESTIONS[0][1])
    if product is None:
        product = a.most_bought_product(user, since=since, until=until)
        if product is None:
            answer.sentence = "No purchases of any product in this period."
            return answer
        answer.note = "Showing the product bought by the most customers; pick another above."
    summary = a.product_buyers(user, product=product, since=since, until=until)
    n, repeat = summary["customers"], summary["repeat_customers"]
    if not n:
        answer.sentence = f"No customer bought {summary['product']} {_period_words(since, until)}."
        return answer
    answer.sentence = (
        f"{format_number(n)} {'customer' if n == 1 else 'customers'} bought {summary['product']} "
        f"{_period_words(since, until)}; {format_number(repeat)} of them ({format_percent(repeat / n)}) bought it "
        f"more than once, {format_number(summary['purchases'])} purchases for {format_money(summary['amount'])}."
    )
    rows = a.product_buyer_list(user, product=product, since=since, until=until, limit=ROW_LIMIT)
    answer.tables.append(Table("buyers", f"Customers who bought {summary['product']}", [
        Column("customer", "Customer"), Column("purchases", "Purchases", "count"),
        Column("repeat", "Bought again"), Column("amount", "Amount", "money"),
        Column("last_purchase", "Last purchase", "date"),
    ], rows))
    answer.chart = _chart(["Bought once", "Bought again"], [n - repeat, repeat], "Customers")
    return answer


def q2_contact_frequency(user, since, until, window_days) -> Answer:
    from crm import analytics as a

    answer = Answer("contact_frequency", QUESTIONS[1][1])
    rows = a.contact_frequency(user, since=since, until=until, limit=ROW_LIMIT)
    days = window_days or NOT_CONTACTED_DAYS
    stale = a.valuable_not_contacted(user, days=days, limit=ROW_LIMIT)
    gaps = [r["mean_gap_days"] for r in rows if r["mean_gap_days"] is not None]
    if rows:
        typical = sorted(gaps)[len(gaps) // 2] if gaps else None
        answer.sentence = (
            f"The {format_number(len(rows))} most contacted customers {_period_words(since, until)} were contacted "
            + (f"every {format_number(typical)} days (median gap); " if typical is not None else "; ")
            + f"{format_number(len(stale))} of our most valuable customers have not been contacted in {days} days."
        )
    else:
        answer.sentence = (
            f"No contacts {_period_words(since, until)}; {format_number(len(stale))} valuable customers have not "
            f"been contacted in {days} days."
        )
    answer.tables.append(Table("not_contacted", f"Valuable customers not contacted in {days} days", [
        Column("customer", "Customer"), Column("owner", "Owner"), Column("value", "CLV (or margin)", "money"),
        Column("last_contact", "Last contact", "date"), Column("days_since_contact", "Days since", "count"),
    ], stale))
    answer.tables.append(Table("contacts", "Contacts per customer", [
        Column("customer", "Customer"), Column("contacts", "Contacts", "count"),
        Column("mean_gap_days", "Days between contacts", "number1"),
        Column("first_contact", "First", "date"), Column("last_contact", "Last", "date"),
    ], rows))
    return answer


def q3_most_profitable(user, since, until) -> Answer:
    from crm import analytics as a

    answer = Answer("most_profitable", QUESTIONS[2][1])
    by_margin = a.most_profitable(user, by="margin", since=since, until=until, limit=20)
    try:
        by_clv = a.most_profitable(user, by="clv", limit=20)
    except ValueError:
        by_clv = []
    parts = []
    if by_margin:
        top = by_margin[0]
        parts.append(f"{top['customer']} brought the most margin {_period_words(since, until)} "
                     f"({format_money(top['margin'])})")
    if by_clv:
        top = by_clv[0]
        parts.append(f"{top['customer']} has the highest predicted CLV ({format_money(top['clv'])})")
    both = {r["customer_id"] for r in by_margin} & {r["customer_id"] for r in by_clv}
    answer.sentence = ("; ".join(parts) + f". {format_number(len(both))} customers are in both top 20s.") if parts \
        else "No purchases in this period."
    answer.tables.append(Table("by_margin", "By margin so far", [
        Column("customer", "Customer"), Column("margin", "Margin", "money"), Column("revenue", "Revenue", "money"),
        Column("purchases", "Purchases", "count"),
    ], by_margin))
    answer.tables.append(Table("by_clv", "By predicted CLV (current run)", [
        Column("customer", "Customer"), Column("clv", "CLV", "money"), Column("p_alive", "Probability active", "percent"),
        Column("margin", "Historical margin", "money"),
    ], by_clv))
    answer.chart = _chart([r["customer"] for r in by_clv[:10]], [r["clv"] for r in by_clv[:10]],
                          "CLV", settings.CRM_CURRENCY) if by_clv else None
    return answer


def _kinds_named(kinds: list[dict]) -> list[dict]:
    return [{**k, "kind_label": _kind_label(k["kind"])} for k in kinds]


def q4_events_before_loss(user, since, until, window_days) -> Answer:
    from crm import analytics as a

    window = window_days or DEFAULT_WINDOW
    r = a.events_before_loss(user, window_days=window, since=since, until=until)
    answer = Answer("events_before_loss", QUESTIONS[3][1])
    kinds = _kinds_named(r["kinds"])
    if not r["lost_customers"]:
        answer.sentence = f"No customer was lost {_period_words(since, until)}."
        return answer
    top = kinds[0] if kinds else None
    answer.sentence = f"{format_number(r['lost_customers'])} customers were lost {_period_words(since, until)}. "
    if top and top["rate"]:
        lift = f", {format_number(top['lift'], 1)} times" if top["lift"] else ", far more often than"
        answer.sentence += (
            f"In the {window} days before, {_share(top['rate'])} of them had a {top['kind_label'].lower()}"
            f"{lift} the rate among active customers ({_share(top['base_rate'])})."
        )
    else:
        answer.sentence += f"No event was recorded in the {window} days before a loss."
    answer.tables.append(Table("kinds", f"Events in the {window} days before a loss", [
        Column("kind_label", "Event"), Column("customers", "Lost customers with it", "count"),
        Column("rate", "Share of lost", "percent1"), Column("base_rate", "Share of active", "percent1"),
        Column("lift", "Lift", "ratio"),
    ], kinds, link=None))
    answer.chart = _chart([k["kind_label"] for k in kinds], [k["rate"] * 100 for k in kinds],
                          "Share of lost customers", "%")
    return answer


def q5_customer_products(user, product, since, until) -> Answer:
    from crm import analytics as a

    answer = Answer("customer_products", QUESTIONS[4][1])
    products = a.product_customer_counts(user, since=since, until=until)
    if not products:
        answer.sentence = f"No purchases {_period_words(since, until)}."
        return answer
    top = products[0]
    answer.sentence = (
        f"Customers bought {format_number(len(products))} products {_period_words(since, until)}; "
        f"{top['product']} has the most buyers ({format_number(top['customers'])} customers)"
        + (f", then {products[1]['product']} ({format_number(products[1]['customers'])})." if len(products) > 1 else ".")
    )
    answer.tables.append(Table("products", "Product → customers", [
        Column("product", "Product"), Column("customers", "Customers", "count"),
        Column("purchases", "Purchases", "count"), Column("amount", "Amount", "money"),
    ], products, link=None))
    rows = a.customer_products(user, product=product, since=since, until=until, limit=ROW_LIMIT)
    title = f"Customers of {product.name}" if product is not None else "Customer × product (first customers by name)"
    answer.tables.append(Table("pairs", title, [
        Column("customer", "Customer"), Column("product", "Product"), Column("purchases", "Purchases", "count"),
        Column("quantity", "Quantity", "number1"), Column("amount", "Amount", "money"),
        Column("last_purchase", "Last purchase", "date"),
    ], rows))
    answer.chart = _chart([p["product"] for p in products[:12]], [p["customers"] for p in products[:12]], "Customers")
    return answer


def _share(value) -> str:
    """A share as a percentage, with a decimal when it is small (0.4% rather than 0%)."""
    return format_percent(value, 1 if value is not None and 0 < value < 0.095 else 0)


def q6_events_before_purchase(user, product, since, until, window_days) -> Answer:
    from crm import analytics as a

    window = window_days or DEFAULT_WINDOW
    r = a.events_before_purchase(user, window_days=window, product=product, since=since, until=until)
    answer = Answer("events_before_purchase", QUESTIONS[5][1])
    kinds = _kinds_named(r["kinds"])
    if not r["events"]:
        answer.sentence = f"No events recorded {_period_words(since, until)}."
        return answer
    top = kinds[0]
    answer.sentence = (
        f"{_share(top['rate'])} of {top['kind_label'].lower()} events were followed by a purchase within "
        f"{window} days"
        + (f", {format_number(top['lift'], 1)} times the rate after any event ({format_percent(r['base_rate'])})"
           if top["lift"] else "")
        + (f"; the purchase came a median {format_number(top['median_lead_days'])} days later."
           if top["median_lead_days"] is not None else ".")
    )
    answer.tables.append(Table("kinds", f"Events followed by a purchase within {window} days", [
        Column("kind_label", "Event"), Column("events", "Events", "count"),
        Column("followed_by_purchase", "Followed by a purchase", "count"), Column("rate", "Rate", "percent"),
        Column("lift", "Lift", "ratio"), Column("median_lead_days", "Median days to purchase", "number1"),
    ], kinds, link=None))
    answer.chart = _chart([k["kind_label"] for k in kinds], [k["lift"] or 0 for k in kinds], "Lift", "×")
    return answer


def q7_loyalty_patterns(user) -> Answer:
    from crm import analytics as a
    from crm.models import Customer

    answer = Answer("loyalty_patterns", QUESTIONS[6][1])
    rows = a.loyalty_patterns(user)
    rel = dict(Customer.Relationship.choices)
    stage = dict(Customer.Stage.choices)
    rows = [{**r, "relationship": rel.get(r["relationship_type"], r["relationship_type"]),
             "stage": stage.get(r["lifecycle_stage"], r["lifecycle_stage"])} for r in rows]
    if not rows:
        answer.sentence = "No customers yet."
        return answer
    # Loyalty per relationship type (all stages but "lost" together), weighted by customers.
    by_rel: dict[str, list[int]] = {}
    for r in rows:
        t = by_rel.setdefault(r["relationship"], [0, 0])
        t[0] += r["customers"]
        t[1] += round(r["retention"] * r["customers"])
    shares = sorted(((name, kept / n if n else 0.0) for name, (n, kept) in by_rel.items()), key=lambda x: -x[1])
    best, worst = shares[0], shares[-1]
    answer.sentence = (
        f"{best[0]} customers are the most loyal: {format_percent(best[1])} bought in the last year, "
        f"against {format_percent(worst[1])} of {worst[0].lower()} customers."
    )
    answer.tables.append(Table("groups", "By relationship type and lifecycle stage", [
        Column("relationship", "Relationship"), Column("stage", "Stage"), Column("customers", "Customers", "count"),
        Column("retention", "Bought in the last year", "percent"),
        Column("purchases_per_customer_year", "Purchases per year", "number1"),
        Column("avg_clv", "Average CLV", "money"), Column("avg_p_alive", "Average probability active", "percent"),
    ], rows, link=None))
    answer.chart = _chart([name for name, _ in shares], [share * 100 for _, share in shares],
                          "Bought in the last year", "%")
    return answer


def answers(user, data: dict) -> list[Answer]:
    since, until = data.get("since"), data.get("until")
    window = data.get("window_days")
    product = data.get("product")
    return [
        q1_product_buyers(user, product, since, until),
        q2_contact_frequency(user, since, until, window),
        q3_most_profitable(user, since, until),
        q4_events_before_loss(user, since, until, window),
        q5_customer_products(user, product, since, until),
        q6_events_before_purchase(user, product, since, until, window),
        q7_loyalty_patterns(user),
    ]


# -- page and CSV ----------------------------------------------------------------------------------------


def _csv_value(value, kind: str):
    if value is None:
        return ""
    if kind == "money":
        return f"{Decimal(str(value)):.2f}"
    if kind in ("percent", "percent1"):
        return f"{float(value) * 100:.1f}"
    if kind in ("ratio", "number1"):
        return f"{float(value):.2f}" if kind == "ratio" else f"{float(value):.1f}"
    if isinstance(value, datetime):
        return timezone.localtime(value).date().isoformat() if timezone.is_aware(value) else value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def export_csv(answer_list: list[Answer], name: str) -> HttpResponse:
    """One table of one answer as CSV: `name` is "<question>.<table>"."""
    question, _, table_key = name.partition(".")
    for answer in answer_list:
        if answer.key != question:
            continue
        for table in answer.tables:
            if table.key == table_key or not table_key:
                response = HttpResponse(content_type="text/csv; charset=utf-8")
                filename = f"{question}-{table.key}-{timezone.localdate():%Y-%m-%d}.csv".replace("_", "-")
                response["Content-Disposition"] = f'attachment; filename="{filename}"'
                writer = csv.writer(response)
                writer.writerow([c.csv_label for c in table.columns])
                for row in table.rows:
                    writer.writerow([_csv_value(row.get(c.key), c.kind) for c in table.columns])
                return response
    raise Http404("No such table.")


def analytics_context(request) -> dict[str, Any] | HttpResponse:
    from crm.forms import AnalyticsForm

    form = AnalyticsForm(request.GET or None)
    available = analytics_available()
    answer_list: list[Answer] = []
    if available and (not form.is_bound or form.is_valid()):
        answer_list = answers(request.user, form.cleaned_data if form.is_bound else {})
        export = request.GET.get("export")
        if export:
            return export_csv(answer_list, export)
    charts = {a.key: a.chart for a in answer_list if a.chart}
    return {"form": form, "answers": answer_list, "available": available, "charts": charts,
            "questions": [{"key": k, "title": t} for k, t in QUESTIONS]}
