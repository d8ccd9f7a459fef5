"""Page reads for salespeople: My day, the account list and Account 360 with its unified timeline.

Every function starts from the visibility rule (`.visible_to(user)`), so a page can only
ever show customers the user may see. Queries per page are bounded: lists are sliced or
paginated, related rows come through select_related / prefetch_related or one join.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

from django.db.models import F, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.shortcuts import get_object_or_404
from django.utils import timezone

from crm.models import Contact, Customer, Event, Holding, Opportunity, Usage
from crm.selectors.values import (
    annotate_run_values,
    clv_model,
    current_run,
    customer_value_history,
    previous_run,
)

# A customer whose probability of still being active is below this is "at risk".
RISK_P_ALIVE = 0.5
# Between RISK_P_ALIVE and this, worth watching.
WATCH_P_ALIVE = 0.8
# "No recent contact" for My day's at-risk list.
RECENT_CONTACT_DAYS = 60
MY_DAY_LIMIT = 10
TIMELINE_LIMIT = 40

RISK_CHOICES = [("high", "High risk"), ("watch", "Watch"), ("low", "Low risk"), ("unscored", "No CLV yet")]
SORTS = {
    "clv": "CLV",
    "p_alive": "Probability active",
    "last_contact": "Last contact",
    "historical_value": "Historical value",
    "name": "Name",
}
DEFAULT_SORT = "-clv"
FACETS = [("contact", "Contacts"), ("event", "Events"), ("purchase", "Purchases"), ("usage", "Usage")]


def last_contact_subquery():
    """Latest contact time per customer: one index probe on contact_customer_date_idx per row."""
    return Subquery(
        Contact.objects.filter(customer=OuterRef("pk")).order_by("-occurred_at").values("occurred_at")[:1]
    )


def risk_level(p_alive: float | None) -> str:
    if p_alive is None:
        return "unscored"
    if p_alive < RISK_P_ALIVE:
        return "high"
    if p_alive < WATCH_P_ALIVE:
        return "watch"
    return "low"


# -- My accounts --------------------------------------------------------------------------


def parse_sort(value: str | None) -> tuple[str, bool]:
    """("clv", True) for "-clv"; unknown keys fall back to the default sort."""
    value = value or DEFAULT_SORT
    desc = value.startswith("-")
    key = value.lstrip("-")
    if key not in SORTS:
        return parse_sort(DEFAULT_SORT)
    return key, desc


def _filtered_accounts(
    user, run, *, q: str = "", stage: str = "", relationship: str = "", risk: str = "", owner_id: int | None = None,
) -> QuerySet[Customer]:
    qs = Customer.objects.visible_to(user)
    if q:
        qs = qs.filter(Q(name__icontains=q) | Q(external_id__iexact=q) | Q(city__icontains=q))
    if stage in Customer.Stage.values:
        qs = qs.filter(lifecycle_stage=stage)
    if relationship in Customer.Relationship.values:
        qs = qs.filter(relationship_type=relationship)
    if owner_id:
        qs = qs.filter(owner_id=owner_id)
    if risk:
        if run is None:
            return qs if risk == "unscored" else qs.none()
        qs = annotate_run_values(qs, run, fields=("p_alive",)).filter(**_risk_filter(risk))
    return qs


def _ordering(sort: str, run) -> tuple[str, list]:
    key, desc = parse_sort(sort)
    if key in ("clv", "p_alive", "historical_value") and run is None:
        key, desc = "name", False
    expr = F(key)
    return key, [expr.desc(nulls_last=True) if desc else expr.asc(nulls_last=True), "name", "id"]


def account_ids(user, *, run=None, sort: str = DEFAULT_SORT, **filters) -> QuerySet:
    """The ordered ids of the matching customers, joining only what the filter and sort key need.

    Paginating ids first keeps the expensive part narrow: with 100,000 customers the sort
    touches one value per row, and the full rows (owner, values, last contact) are read for
    the 25 ids of the page only.
    """
    qs = _filtered_accounts(user, run, **filters)
    key, order = _ordering(sort, run)
    if key == "last_contact":
        qs = qs.annotate(last_contact=last_contact_subquery())
    elif key != "name" and key not in qs.query.annotations:
        qs = annotate_run_values(qs, run, prefix="sort_", fields=(key,)).annotate(**{key: F(f"sort_{key}")})
    return qs.order_by(*order).values_list("pk", flat=True)


def account_rows(ids: list[int], *, run=None) -> list[Customer]:
    """Full rows for a page of ids, in the given order: owner, current values and last contact."""
    qs = Customer.objects.filter(pk__in=ids).select_related("owner")
    qs = annotate_run_values(qs, run, fields=("clv", "p_alive", "historical_value", "expected_purchases"))
    by_pk = {c.pk: c for c in qs.annotate(last_contact=last_contact_subquery())}
    return [by_pk[pk] for pk in ids if pk in by_pk]


def account_page(user, *, page: Any = 1, per_page: int = 25, run=None, **filters):
    """One page of the account list (a Paginator page whose object_list holds full rows)."""
    from django.core.paginator import Paginator

    page_obj = Paginator(account_ids(user, run=run, **filters), per_page).get_page(page)
    page_obj.object_list = account_rows(list(page_obj.object_list), run=run)
    return page_obj


def _risk_filter(risk: str) -> dict[str, Any]:
    if risk == "high":
        return {"p_alive__lt": RISK_P_ALIVE}
    if risk == "watch":
        return {"p_alive__gte": RISK_P_ALIVE, "p_alive__lt": WATCH_P_ALIVE}
    if risk == "low":
        return {"p_alive__gte": WATCH_P_ALIVE}
    if risk == "unscored":
        return {"p_alive__isnull": True}
    return {}


# -- Account 360 --------------------------------------------------------------------------


def account_for(user, pk: int) -> Customer:
    """One customer the user may see, or Http404 (never a hint that it exists)."""
    return get_object_or_404(Customer.objects.visible_to(user).select_related("owner", "owner__team"), pk=pk)


def account_360(user, pk: int) -> dict[str, Any]:
    customer = account_for(user, pk)
    run = current_run()
    value = None
    if run is not None:
        value = clv_model("CustomerValue").objects.filter(run=run, customer=customer).first()
    history = customer_value_history(customer)
    people = list(customer.people.all())
    opportunities = list(
        customer.opportunities.filter(status__in=[Opportunity.Status.OPEN, Opportunity.Status.ACCEPTED])
        .select_related("product", "from_product", "status_changed_by")
        .order_by("-expected_value", "-score", "id")
    )
    last_contact = last_contact_of(customer)
    return {
        "customer": customer,
        "run": run,
        "value": value,
        "risk": risk_level(value.p_alive if value is not None else None),
        "history": history,
        "history_values": [_field(h, "clv") for h in history],
        "people": people,
        "opportunities": opportunities,
        "last_contact": last_contact,
    }


def _field(row, name: str):
    return row.get(name) if isinstance(row, dict) else getattr(row, name, None)


def last_contact_of(customer: Customer):
    return customer.contacts.order_by("-occurred_at").values_list("occurred_at", flat=True).first()


@dataclass
class TimelineItem:
    facet: str
    when: datetime
    title: str
    detail: str = ""
    badges: list[tuple[str, str]] = field(default_factory=list)
    who: str = ""
    key: str = ""


def _as_datetime(d) -> datetime:
    return datetime.combine(d, time.min, tzinfo=UTC)


def timeline(customer: Customer, *, facets: list[str] | None = None, limit: int = TIMELINE_LIMIT) -> list[TimelineItem]:
    """The four facets merged newest first: at most `limit` items, one query per facet shown."""
    wanted = set(facets or [f for f, _ in FACETS])
    items: list[TimelineItem] = []
    if "contact" in wanted:
        for c in customer.contacts.select_related("salesperson").prefetch_related("people")[:limit]:
            badges = [(c.get_channel_display(), "info")]
            if c.direction == Contact.Direction.INBOUND:
                badges.append(("Inbound", "warn"))
            if c.follow_up_on and not c.follow_up_done_at:
                badges.append((f"Follow up {c.follow_up_on:%d %b %Y}", "warn"))
            people = ", ".join(str(p) for p in c.people.all())
            detail = " · ".join(x for x in (c.outcome, c.notes) if x)
            items.append(
                TimelineItem(
                    "contact", c.occurred_at, c.subject, detail, badges,
                    who=" with ".join(x for x in (str(c.salesperson or ""), people) if x), key=f"contact-{c.pk}",
                )
            )
    if "event" in wanted:
        for e in customer.events.select_related("recorded_by")[:limit]:
            tone = {"positive": "good", "negative": "bad"}.get(e.impact, "")
            items.append(
                TimelineItem(
                    "event", e.occurred_at, e.get_kind_display(), e.description, [(e.get_impact_display(), tone)],
                    who=str(e.recorded_by or ""), key=f"event-{e.pk}",
                )
            )
    if "purchase" in wanted:
        for p in customer.purchases.select_related("product")[:limit]:
            name = p.product.name if p.product else "Order"
            items.append(
                TimelineItem(
                    "purchase", p.purchased_at, f"{name} × {p.quantity.normalize():f}",
                    f"{p.amount:,.2f}" + (f" · order {p.order_ref}" if p.order_ref else ""), key=f"purchase-{p.pk}",
                )
            )
    if "usage" in wanted:
        usage = (
            Usage.objects.filter(holding__customer=customer)
            .select_related("holding__product")
            .order_by("-period_end", "-id")[:limit]
        )
        for u in usage:
            capacity = u.capacity if u.capacity is not None else u.holding.capacity
            unit = u.holding.product.capacity_unit
            text = f"used {u.used.normalize():f}" + (f" of {capacity.normalize():f}" if capacity else "") + (f" {unit}" if unit else "")
            badges = []
            if capacity:
                share = float(u.used / capacity)
                badges.append((f"{share:.0%} of capacity", "bad" if share >= 0.9 else "warn" if share >= 0.75 else "good"))
            if u.satisfaction:
                badges.append((f"satisfaction {u.satisfaction}/5", ""))
            if u.nps is not None:
                badges.append((f"NPS {u.nps}", ""))
            items.append(
                TimelineItem(
                    "usage", _as_datetime(u.period_end), f"{u.holding.product.name}: {text}", u.note, badges,
                    key=f"usage-{u.pk}",
                )
            )
    items.sort(key=lambda i: i.when, reverse=True)
    return items[:limit]


def holdings_with_usage(customer: Customer, *, periods: int = 6) -> list[Holding]:
    """Holdings with their product and latest usage periods (latest first), two queries."""
    holdings = list(
        customer.holdings.select_related("product").prefetch_related(
            Prefetch("usage", queryset=Usage.objects.order_by("-period_start"), to_attr="recent_usage")
        ).order_by("status", "product__family", "-since")
    )
    for h in holdings:
        h.recent_usage = h.recent_usage[:periods]
        latest = h.recent_usage[0] if h.recent_usage else None
        h.latest_usage = latest
        cap = None
        if latest is not None:
            cap = latest.capacity if latest.capacity is not None else h.capacity
        h.utilisation = float(latest.used / cap) if latest is not None and cap else None
    return holdings


def facet_rows(customer: Customer, facet: str, *, limit: int = 100) -> list:
    """Rows for one facet's tab (contacts, events, purchases), newest first, bounded."""
    if facet == "contacts":
        return list(customer.contacts.select_related("salesperson").prefetch_related("people")[:limit])
    if facet == "events":
        return list(customer.events.select_related("recorded_by")[:limit])
    if facet == "purchases":
        return list(customer.purchases.select_related("product")[:limit])
    return []


# -- My day -------------------------------------------------------------------------------


def my_day(user) -> dict[str, Any]:
    """Tasks and follow-ups (overdue, today, next 7 days), valuable customers at risk, top open
    opportunities and recent events."""
    from crm.selectors.workspace import my_day_tasks

    tasks = my_day_tasks(user)
    run = current_run()
    at_risk: list[Customer] = []
    if run is not None:
        recent = timezone.now() - timedelta(days=RECENT_CONTACT_DAYS)
        prev = previous_run(run)
        qs = Customer.objects.visible_to(user).filter(owner=user)
        qs = annotate_run_values(qs, run, fields=("clv", "p_alive", "historical_value"))
        if prev is not None:
            qs = annotate_run_values(qs, prev, prefix="prev_", fields=("p_alive",))
        qs = (
            qs.annotate(last_contact=last_contact_subquery())
            .filter(p_alive__lt=RISK_P_ALIVE, clv__gt=0)
            .filter(Q(last_contact__isnull=True) | Q(last_contact__lt=recent))
            .exclude(lifecycle_stage=Customer.Stage.LOST)
            .order_by(F("historical_value").desc(nulls_last=True), "id")
        )
        at_risk = list(qs[:MY_DAY_LIMIT])
    opportunities = list(
        Opportunity.objects.visible_to(user)
        .filter(customer__owner=user, status=Opportunity.Status.OPEN)
        .select_related("customer", "product")
        .order_by("-expected_value", "-score", "id")[:MY_DAY_LIMIT]
    )
    events = list(
        Event.objects.visible_to(user)
        .filter(customer__owner=user, occurred_at__gte=timezone.now() - timedelta(days=30))
        .select_related("customer")
        .order_by("-occurred_at", "-id")[:MY_DAY_LIMIT]
    )
    has_accounts = Customer.objects.visible_to(user).filter(owner=user).exists()
    return {
        **tasks,
        "at_risk": at_risk,
        "opportunities": opportunities,
        "events": events,
        "run": run,
        "has_accounts": has_accounts,
        "recent_contact_days": RECENT_CONTACT_DAYS,
    }
