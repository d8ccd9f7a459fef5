"""Page reads for salespeople: My day, the account list and Account 360 with its unified timeline.

Every function starts from the visibility rule (`.visible_to(user)`), so a page can only
ever show customers the user may see. Queries per page are bounded: lists are sliced or
paginated, related rows come through select_related / prefetch_related or one join.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import F, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.shortcuts import get_object_or_404
from django.utils import timezone

from crm.models import Contact, Customer, Event, Holding, Opportunity, Usage
from crm.selectors.values import (
    annotate_run_values,
    clv_field,
    clv_model,
    current_run,
    customer_value_history,
    next_12m_field,
    previous_run,
    run_cache_key,
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
    "historical_value": "Historical margin",
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


ACCOUNT_TASKS_SHOWN = 8  # open tasks listed on Account 360 (the rest behind "All open tasks")


def account_360(user, pk: int) -> dict[str, Any]:
    customer = account_for(user, pk)
    run = current_run()
    value = None
    if run is not None:
        value = clv_model("CustomerValue").objects.filter(run=run, customer=customer).first()
        if value is not None:  # the page reads .clv and .value_12m whatever the stored fields are called
            value.clv = getattr(value, clv_field())
            twelve = next_12m_field()
            value.value_12m = getattr(value, twelve) if twelve else None
    history = customer_value_history(customer)
    people = list(customer.people.order_by("-is_primary", "last_name", "first_name", "id"))
    opportunities = list(
        customer.opportunities.filter(status__in=[Opportunity.Status.OPEN, Opportunity.Status.ACCEPTED])
        .select_related("product", "from_product", "status_changed_by")
        .order_by("-expected_value", "-score", "id")
    )
    last_contact = last_contact_of(customer)
    open_tasks = customer.tasks.filter(done_at__isnull=True).select_related("assigned_to").order_by(
        "due_on", "due_time", "id"
    )
    return {
        "customer": customer,
        "open_tasks": list(open_tasks[:ACCOUNT_TASKS_SHOWN]),
        "open_task_count": open_tasks.count(),
        "today": timezone.localdate(),
        "run": run,
        "value": value,
        "change": value_change(customer, run, value),
        "risk": risk_level(value.p_alive if value is not None else None),
        "history": history,
        "history_values": [_field(h, clv_field()) for h in history],
        "people": people,
        "opportunities": opportunities,
        "last_contact": last_contact,
    }


@dataclass
class ValueChange:
    """How a customer's CLV moved between the previous run and the current one, and why, in words."""

    previous_run: Any
    previous: Any  # the CustomerValue of the previous run (None: first scored in this run)
    delta: Any = None
    relative: float | None = None
    drivers: list[str] = field(default_factory=list)

    @property
    def direction(self) -> str:
        if self.delta is None or self.delta == 0:
            return "flat"
        return "up" if self.delta > 0 else "down"


# Changes smaller than these are not worth a sentence.
P_ALIVE_STEP = 0.02
SPEND_STEP = 0.02


def value_change(customer: Customer, run, value) -> ValueChange | None:
    """The change since the previous run with its drivers: new purchases, time since the last one, spend, a refit."""
    from crm.templatetags.crm_ui import format_money, format_number, format_percent  # noqa: PLC0415

    if run is None or value is None:
        return None
    prev_run = previous_run(run)
    if prev_run is None:
        return None
    clv = clv_field()
    previous = clv_model("CustomerValue").objects.filter(run=prev_run, customer=customer).first()
    if previous is None:
        return ValueChange(prev_run, None, drivers=[
            f"First scored in this run: the customer had no purchase before {prev_run.as_of:%d %b %Y}."
        ])
    now_v, then_v = getattr(value, clv), getattr(previous, clv)
    delta = now_v - then_v
    change = ValueChange(prev_run, previous, delta, float(delta / then_v) if then_v else None)
    drivers = change.drivers
    new_occasions = max(value.frequency - previous.frequency, 0)
    if new_occasions:
        drivers.append(
            f"{format_number(new_occasions)} new purchase {'occasion' if new_occasions == 1 else 'occasions'} since "
            f"{prev_run.as_of:%d %b %Y}: more purchases raise the expected number of future ones."
        )
    days_since = value.T - value.recency
    if value.p_alive < previous.p_alive - P_ALIVE_STEP:
        reason = "no purchase since then" if not new_occasions else "the gap since the last purchase grew"
        drivers.append(
            f"{format_number(days_since)} days since the last purchase ({reason}): the probability of still being "
            f"active fell from {format_percent(previous.p_alive)} to {format_percent(value.p_alive)}."
        )
    elif value.p_alive > previous.p_alive + P_ALIVE_STEP:
        drivers.append(
            f"The probability of still being active rose from {format_percent(previous.p_alive)} to "
            f"{format_percent(value.p_alive)}."
        )
    old_spend, new_spend = previous.expected_avg_value, value.expected_avg_value
    if old_spend and abs(new_spend - old_spend) > abs(old_spend) * Decimal(str(SPEND_STEP)):
        drivers.append(
            f"Average spend per purchase {'rose' if new_spend > old_spend else 'fell'} from {format_money(old_spend)} "
            f"to {format_money(new_spend)}."
        )
    if (run.model, run.params) != (prev_run.model, prev_run.params):
        drivers.append(
            "The model was refitted on everyone's latest history"
            + (f" ({prev_run.model} → {run.model})" if run.model != prev_run.model else "")
            + ": part of the change comes from the new fit, not from this customer."
        )
    if not drivers:
        drivers.append("Nothing in this customer's history changed; the value moved with time passing.")
    return change
def current_value_of(customer: Customer):
    """The customer's value in the current CLV run, or None."""
    run = current_run()
    if run is None:
        return None
    return clv_model("CustomerValue").objects.filter(run=run, customer=customer).first()


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
    from crm.templatetags.crm_ui import format_money, format_number  # noqa: PLC0415
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
                    format_money(p.amount, 2) + (f" · order {p.order_ref}" if p.order_ref else ""), key=f"purchase-{p.pk}",
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
            text = f"used {format_number(u.used)}" + (f" of {format_number(capacity)}" if capacity else "") + (
                f" {unit}" if unit else "")
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
        for u in h.recent_usage:  # each period against its capacity, for the usage bars
            u.capacity_held = u.capacity if u.capacity is not None else h.capacity
            u.share = float(u.used / u.capacity_held) if u.capacity_held else None
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


AT_RISK_CANDIDATES = 4  # x MY_DAY_LIMIT: the most valuable at-risk accounts kept per salesperson and run
AT_RISK_CACHE_SECONDS = 600


def _at_risk_candidates(user, run) -> list[int]:
    """The salesperson's most valuable accounts at risk in `run` (ids), kept in the cache.

    What makes an account a candidate (its values in the run) only changes with a new run, so the
    scan of the run's values for the whole book is done once per run and salesperson (or after
    AT_RISK_CACHE_SECONDS, for accounts that changed hands); stage, last contact, ownership and
    visibility are checked live on these candidates.
    """
    from django.core.cache import cache

    key = f"myday:at_risk:{run_cache_key(run)}:{user.pk}"
    ids = cache.get(key)
    if ids is None:
        qs = annotate_run_values(Customer.objects.filter(owner=user), run, fields=("clv", "p_alive", "historical_value"))
        qs = qs.filter(p_alive__lt=RISK_P_ALIVE, clv__gt=0).order_by(F("historical_value").desc(nulls_last=True), "id")
        ids = list(qs.values_list("pk", flat=True)[: MY_DAY_LIMIT * AT_RISK_CANDIDATES])
        cache.set(key, ids, AT_RISK_CACHE_SECONDS)
    return ids


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
        candidates = _at_risk_candidates(user, run)
        at_risk = list(qs.filter(pk__in=candidates)[:MY_DAY_LIMIT])
        if len(at_risk) < MY_DAY_LIMIT and len(candidates) >= MY_DAY_LIMIT * AT_RISK_CANDIDATES:
            at_risk = list(qs[:MY_DAY_LIMIT])  # the kept candidates were mostly contacted lately: read in full (rare)
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
