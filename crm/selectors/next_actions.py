"""Next best action: one ranked list per salesperson, each item valued in the same units as CLV.

The list mixes four kinds of work, each with its expected value (what acting is expected to add
or save, margin in the configured currency, discounted like CLV):

- retention call: a customer with a positive CLV whose probability of being active fell by at
  least NBA_MIN_P_ALIVE_DROP since the previous CLV run, not contacted in RECENT_CONTACT_DAYS.
  EV = CLV x (P(active) before - P(active) now) x save rate.
- renewal at risk: a contract renewing in the next RENEWAL_WINDOW_DAYS days (clv.renewals), not
  discussed in RECENT_CONTACT_DAYS. EV = value at stake ((1 - P(renew)) x residual value) x save rate.
- overdue follow-up: the salesperson's oldest overdue task on an account they look after.
  EV = CLV x (1 - P(active)) x save rate: the part of the customer's value not yet secure,
  times how often a timely contact keeps a customer.
- cross-sell and up-sell: open or accepted opportunities, EV = their stored expected value.

The save rate is the posterior mean of a Beta(NBA_SAVE_PRIOR_A, NBA_SAVE_PRIOR_B) prior updated by
the retention calls made (see `save_rate`). Every expected value is rounded to whole currency
units, so the total shown is exactly the sum of the items shown.

The list is bounded by the visibility rule twice: the salesperson's own book (customers they
own; tasks assigned to them on accounts they may see) and what the viewer may see. Each kind
keeps its NBA_LIMIT_PER_KIND best items per salesperson (a window function or a UNION ALL of
per-salesperson top-N parts in the query), so a list, for one salesperson or a whole team, costs
a fixed number of queries.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import (
    Count,
    DecimalField,
    Exists,
    ExpressionWrapper,
    F,
    FilteredRelation,
    FloatField,
    OuterRef,
    Q,
    Sum,
    Value,
    Window,
)
from django.db.models.functions import Cast, Coalesce, RowNumber
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from accounts.selectors import customer_visibility_q
from crm.models import Contact, Customer, NextActionShown, Opportunity, Purchase, Task
from crm.selectors.values import annotate_run_values, clv_field, clv_ready, current_run, previous_run, run_cache_key

Kind = NextActionShown.Kind
KIND_ORDER = {k: i for i, k in enumerate(Kind.values)}
ACTIONS = {"call": "Call", "email": "E-mail", "meeting": "Meeting", "offer": "Offer"}
RECENT_CONTACT_DAYS = 14  # a retention call or renewal talk within this many days takes the item off the list
OPEN_OPPORTUNITY = (Opportunity.Status.OPEN, Opportunity.Status.ACCEPTED)
CARD_LIMIT = 5  # items on My day's card
PAGE_SIZE = 25  # items per page of the full list
WHOLE = Decimal("1")


@dataclass
class NextAction:
    kind: str
    key: str
    owner_id: int
    customer_id: int
    customer_name: str
    expected_value: Decimal
    reason: str
    action: str
    url: str
    object_id: int | None = None
    subject: str = ""  # the product of an offer or renewal, the title of a task

    @property
    def kind_label(self) -> str:
        return Kind(self.kind).label

    @property
    def action_label(self) -> str:
        return ACTIONS[self.action]

    @property
    def link_label(self) -> str:
        """The link's accessible name: what to do and with whom, distinct from the account's own link."""
        if self.action == "offer":
            return f"Offer {self.subject} to {self.customer_name}"
        if self.action == "meeting":
            return f"Meet {self.customer_name}"
        return f"{self.action_label} {self.customer_name}"

    @property
    def currency(self) -> str:
        return settings.CRM_CURRENCY


@dataclass
class NextActionList:
    owner: User
    items: list[NextAction] = field(default_factory=list)
    save_rate: float = 0.0

    @property
    def total(self) -> Decimal:
        return sum((i.expected_value for i in self.items), Decimal(0))

    @property
    def top(self) -> list[NextAction]:
        return self.items[:CARD_LIMIT]

    @property
    def top_total(self) -> Decimal:
        return sum((i.expected_value for i in self.top), Decimal(0))


def _whole(x: Any) -> Decimal:
    value = Decimal(str(x or 0)).quantize(WHOLE, rounding=ROUND_HALF_UP)
    return max(value, Decimal(0))


def save_rate(*, today: date | None = None) -> float:
    """How often a timely call keeps a customer: Beta(A, B) prior updated by the retention calls made.

    A trial is a retention item listed at least NBA_SAVE_WINDOW_DAYS ago whose customer was
    contacted after it was listed; it is a save when the customer bought again since. One query.
    """
    today = today or timezone.localdate()
    a, b = settings.NBA_SAVE_PRIOR_A, settings.NBA_SAVE_PRIOR_B
    called = Contact.objects.filter(customer=OuterRef("customer_id"), occurred_at__date__gte=OuterRef("shown_on"))
    bought = Purchase.objects.filter(customer=OuterRef("customer_id"), purchased_at__date__gte=OuterRef("shown_on"))
    row = (
        NextActionShown.objects.filter(kind=Kind.RETENTION, shown_on__lte=today - timedelta(days=settings.NBA_SAVE_WINDOW_DAYS))
        .filter(Exists(called))
        .aggregate(trials=Count("pk"), saved=Count("pk", filter=Exists(bought)))
    )
    return (a + row["saved"]) / (a + b + row["trials"])


def _ranked(qs, partition: str, owner_ids, *order, limit: int | None = None, union: bool = False):
    """Keep each salesperson's `limit` (default NBA_LIMIT_PER_KIND) best rows (one window function, no query per salesperson).

    For one salesperson a plain ORDER BY ... LIMIT, which PostgreSQL answers with a top-N sort or
    by walking an index in that order. With `union`, one such ORDER BY ... LIMIT per salesperson in
    a single UNION ALL query (for a team's offers, each part walking opp_open_value_idx).
    """
    limit = limit or settings.NBA_LIMIT_PER_KIND
    if len(owner_ids) == 1:
        return qs.order_by(*order)[:limit]
    if union:
        # one ORDER BY ... LIMIT per salesperson, glued with UNION ALL: each part can walk an index
        # in rank order (opp_open_value_idx) where the window function sorts every row of the team
        first, *others = [qs.filter(**{partition: pk}).order_by(*order)[:limit] for pk in owner_ids]
        return first.union(*others, all=True)
    return qs.annotate(nba_rank=Window(RowNumber(), partition_by=[F(partition)], order_by=list(order))).filter(
        nba_rank__lte=limit
    )


UNION_MAX_OWNERS = 12  # up to this many salespeople, a team's offers are ranked per salesperson (see _ranked)
RETENTION_CANDIDATES = 4  # x NBA_LIMIT_PER_KIND: the falls kept per salesperson between two runs
RETENTION_CACHE_SECONDS = 600


def _retention_base(owner_ids, run, prev):
    """The salesperson's customers whose probability active fell enough between the two runs."""
    qs = Customer.objects.filter(owner_id__in=owner_ids).exclude(lifecycle_stage=Customer.Stage.LOST)
    qs = annotate_run_values(qs, run, fields=("clv", "p_alive"))
    qs = annotate_run_values(qs, prev, prefix="prev_", fields=("p_alive",))
    return qs.filter(clv__gt=0, prev_p_alive__gte=F("p_alive") + settings.NBA_MIN_P_ALIVE_DROP).annotate(
        nba_value=ExpressionWrapper(Cast("clv", FloatField()) * (F("prev_p_alive") - F("p_alive")), FloatField())
    )


def _retention_candidates(owner_ids, run, prev) -> dict[int, list[int]]:
    """Each salesperson's biggest falls between two runs (customer ids, in no order), kept in the cache.

    The falls only change with a new run, so the scan of the whole book's values in both runs
    is done once per run and salesperson (or after RETENTION_CACHE_SECONDS, for accounts that
    changed hands); contacts, ownership and visibility are checked live on these candidates.
    """
    keys = {pk: f"nba:retention:{run_cache_key(run, prev)}:{pk}" for pk in owner_ids}
    found = cache.get_many(list(keys.values()))
    out = {pk: found[key] for pk, key in keys.items() if key in found}
    missing = [pk for pk in owner_ids if pk not in out]
    if missing:
        limit = settings.NBA_LIMIT_PER_KIND * RETENTION_CANDIDATES
        order = (F("nba_value").desc(), F("id").asc())
        rows = _ranked(_retention_base(missing, run, prev), "owner_id", missing, *order, limit=limit)
        fresh: dict[int, list[int]] = {pk: [] for pk in missing}
        for owner_id, pk in rows.values_list("owner_id", "pk"):
            fresh[owner_id].append(pk)
        cache.set_many({keys[pk]: ids for pk, ids in fresh.items()}, RETENTION_CACHE_SECONDS)
        out.update(fresh)
    return out


def _retention(viewer, owner_ids, run, prev, rate: float, today: date) -> list[NextAction]:
    from crm.templatetags.crm_ui import format_money, format_percent

    if run is None or prev is None:
        return []
    recent = timezone.now() - timedelta(days=RECENT_CONTACT_DAYS)
    candidates = _retention_candidates(owner_ids, run, prev)
    full = settings.NBA_LIMIT_PER_KIND * RETENTION_CANDIDATES
    # A salesperson whose kept candidates were all called lately is read in full (rare).
    exhausted = [pk for pk, ids in candidates.items() if len(ids) >= full]
    ids = [pk for kept_ids in candidates.values() for pk in kept_ids]
    qs = (
        _retention_base(owner_ids, run, prev)
        .visible_to(viewer)
        .exclude(Exists(Contact.objects.filter(customer=OuterRef("pk"), occurred_at__gte=recent)))
    )
    rows = list(
        qs.filter(pk__in=ids).values("pk", "name", "owner_id", "clv", "p_alive", "prev_p_alive", "nba_value")
    )
    counts: dict[int, int] = defaultdict(int)
    for r in rows:
        counts[r["owner_id"]] += 1
    short = [pk for pk in exhausted if counts[pk] < settings.NBA_LIMIT_PER_KIND]
    if short:
        rows = [r for r in rows if r["owner_id"] not in short]
        rows += list(
            qs.filter(owner_id__in=short).values("pk", "name", "owner_id", "clv", "p_alive", "prev_p_alive", "nba_value")
        )
    rows.sort(key=lambda r: (-r["nba_value"], r["pk"]))
    kept: dict[int, int] = defaultdict(int)
    items = []
    for r in rows:
        if kept[r["owner_id"]] >= settings.NBA_LIMIT_PER_KIND:
            continue
        kept[r["owner_id"]] += 1
        drop = r["prev_p_alive"] - r["p_alive"]
        items.append(NextAction(
            kind=Kind.RETENTION, key=f"retention:{r['pk']}", owner_id=r["owner_id"], customer_id=r["pk"],
            customer_name=r["name"], expected_value=_whole(float(r["clv"]) * drop * rate), action="call",
            url=reverse("crm:account_detail", args=[r["pk"]]),
            reason=(
                f"{r['name']}'s chance of still buying from us fell from {format_percent(r['prev_p_alive'])} to "
                f"{format_percent(r['p_alive'])} since the run of {prev.as_of:%-d %b}, and they are worth "
                f"{format_money(r['clv'])} to us."
            ),
        ))
    return items


def _renewals(viewer, owner_ids, rate: float, today: date) -> list[NextAction]:
    from clv import renewals
    from crm.templatetags.crm_ui import format_money, format_percent

    if not clv_ready():
        return []
    recent = timezone.now() - timedelta(days=RECENT_CONTACT_DAYS)
    qs = renewals.renewals_at_risk(viewer, owner_ids=owner_ids, today=today).exclude(
        Exists(Contact.objects.filter(customer=OuterRef("customer_id"), occurred_at__gte=recent))
    )
    rows = _ranked(qs.order_by(), "customer__owner_id", owner_ids, F("value_at_stake").desc(), F("id").desc())
    items = []
    for v in rows:
        product = v.holding.product
        items.append(NextAction(
            kind=Kind.RENEWAL, key=f"renewal:{v.holding_id}", owner_id=v.customer.owner_id, customer_id=v.customer_id,
            customer_name=v.customer.name, expected_value=_whole(float(v.value_at_stake) * rate), action="meeting",
            url=reverse("crm:account_detail", args=[v.customer_id]) + "?tab=holdings", object_id=v.holding_id,
            subject=product.name,
            reason=(
                f"Their {product.name} contract renews on {v.next_renewal:%-d %b %Y} and about "
                f"{format_percent(1 - v.p_renew)} of contracts like it do not renew, putting "
                f"{format_money(v.residual_value)} of future margin at stake."
            ),
        ))
    return items


def _follow_ups(viewer, owner_ids, run, rate: float, today: date) -> list[NextAction]:
    from crm.templatetags.crm_ui import format_money

    qs = (
        Task.objects.filter(assigned_to_id__in=owner_ids, done_at__isnull=True, due_on__lt=today)
        .filter(customer_visibility_q(viewer, "customer__"))
        # accounts the assignee may see themselves: their own, or (a manager) their teams'
        .filter(Q(customer__owner_id=F("assigned_to_id")) | Q(customer__owner__team__manager_id=F("assigned_to_id")))
        .select_related("customer", "contact")
    )
    if run is not None:
        rel = f"customer__{_value_relation()}"
        qs = qs.annotate(
            nba_cv=FilteredRelation(rel, condition=Q(**{f"{rel}__run_id": run.pk})),
            nba_clv=F(f"nba_cv__{clv_field()}"),
            nba_p_alive=F("nba_cv__p_alive"),
        ).annotate(
            nba_value=ExpressionWrapper(
                Coalesce(Cast("nba_clv", FloatField()), Value(0.0)) * (1 - Coalesce("nba_p_alive", Value(1.0))),
                FloatField(),
            )
        )
    else:
        qs = qs.annotate(nba_clv=Value(None, DecimalField()), nba_p_alive=Value(None, FloatField()),
                         nba_value=Value(0.0, FloatField()))
    # one item per account (its oldest overdue task); the others are counted in its reason
    others = Task.objects.filter(
        assigned_to_id=OuterRef("assigned_to_id"), customer_id=OuterRef("customer_id"), done_at__isnull=True,
        due_on__lt=today,
    )
    older = others.filter(Q(due_on__lt=OuterRef("due_on")) | Q(due_on=OuterRef("due_on"), id__lt=OuterRef("id")))
    qs = qs.exclude(Exists(older)).annotate(
        nba_more=Coalesce(
            others.order_by().values("customer_id").annotate(n=Count("pk")).values("n")[:1], Value(1)
        ) - 1
    )
    items = []
    for t in _ranked(qs, "assigned_to_id", owner_ids, F("nba_value").desc(), F("due_on").asc(), F("id").asc()):
        clv = t.nba_clv or 0
        days = (today - t.due_on).days
        more = f" (and {t.nba_more} more overdue on this account)" if t.nba_more else ""
        channel = t.contact.channel if t.contact_id else ""
        action = {"email": "email", "meeting": "meeting", "visit": "meeting"}.get(channel, "call")
        worth = f", and the account is worth {format_money(clv)} to us" if clv else ""
        items.append(NextAction(
            kind=Kind.FOLLOW_UP, key=f"task:{t.pk}", owner_id=t.assigned_to_id, customer_id=t.customer_id,
            customer_name=t.customer.name, expected_value=_whole(t.nba_value * rate), action=action,
            url=reverse("crm:task_list") + f"?customer={t.customer_id}&status=open", object_id=t.pk, subject=t.title,
            reason=(
                f"\u201c{t.title}\u201d was due on {t.due_on:%-d %b}, {days} day{'s' if days != 1 else ''} ago{more}"
                f"{worth}."
            ),
        ))
    return items


def _value_relation() -> str:
    from crm.selectors.values import values_relation

    return values_relation()


def _first_sentence(text: str) -> str:
    text = " ".join((text or "").split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def _opportunities(viewer, owner_ids) -> list[NextAction]:
    qs = (
        Opportunity.objects.visible_to(viewer)
        .filter(customer__owner_id__in=owner_ids, status__in=OPEN_OPPORTUNITY)
        .select_related("customer", "product")
        .only("id", "kind", "expected_value", "score", "evidence", "customer__name", "customer__owner_id",
              "product__name")
    )
    items = []
    order = (F("expected_value").desc(), F("score").desc(), F("id").asc())
    for o in _ranked(qs, "customer__owner_id", owner_ids, *order, union=len(owner_ids) <= UNION_MAX_OWNERS):
        kind = Kind.UP_SELL if o.kind == Opportunity.Kind.UP_SELL else Kind.CROSS_SELL
        items.append(NextAction(
            kind=kind, key=f"opportunity:{o.pk}", owner_id=o.customer.owner_id, customer_id=o.customer_id,
            customer_name=o.customer.name, expected_value=_whole(o.expected_value), action="offer",
            url=reverse("crm:account_detail", args=[o.customer_id]) + f"#opp-{o.pk}", object_id=o.pk,
            subject=o.product.name, reason=_first_sentence(o.evidence) or f"{o.product.name} fits this account.",
        ))
    return items


def _sort_key(item: NextAction):
    return (-item.expected_value, KIND_ORDER[item.kind], item.customer_name, item.key)


_UNSET = object()


def next_actions_for(
    viewer: User, owners: list[User], *, today: date | None = None, run: Any = _UNSET
) -> dict[int, NextActionList]:
    """Each owner's ranked list, limited to what `viewer` may see; a fixed number of queries for any number of owners.

    `run`: the current CLV run when the caller has it already (None: no run yet).
    Without a run there is no retention call or renewal, and follow-ups are worth 0 (no value to
    weigh them by), so neither the previous run nor the save rate is read.
    """
    today = today or timezone.localdate()
    lists = {o.pk: NextActionList(owner=o) for o in owners}
    if not lists:
        return lists
    owner_ids = list(lists)
    if run is _UNSET:
        run = current_run()
    prev = previous_run(run)
    rate = save_rate(today=today) if run is not None else 0.0
    by_owner: dict[int, list[NextAction]] = defaultdict(list)
    for item in [
        *_retention(viewer, owner_ids, run, prev, rate, today),
        *(_renewals(viewer, owner_ids, rate, today) if run is not None else []),
        *_follow_ups(viewer, owner_ids, run, rate, today),
        *_opportunities(viewer, owner_ids),
    ]:
        by_owner[item.owner_id].append(item)
    for pk, nba in lists.items():
        nba.items = sorted(by_owner.get(pk, []), key=_sort_key)
        nba.save_rate = rate
    return lists


def next_actions(
    user: User, *, viewer: User | None = None, today: date | None = None, run: Any = _UNSET
) -> NextActionList:
    """The salesperson's own ranked list (seen by `viewer`, default themselves)."""
    return next_actions_for(viewer or user, [user], today=today, run=run)[user.pk]


def list_owner_for(viewer: User, user_id: int | None) -> User:
    """Whose list `viewer` may read: their own; a manager their team's salespeople; an admin anyone.

    Raises User.DoesNotExist for an unknown user and PermissionError for one outside the viewer's reach.
    """
    if user_id is None or user_id == viewer.pk:
        return viewer
    target = User.objects.select_related("team").get(pk=user_id, is_active=True)
    if viewer.sees_everything:
        return target
    if viewer.is_manager and target.team is not None and target.team.manager_id == viewer.pk:
        return target
    raise PermissionError("You may see your own next best actions and those of the salespeople of your teams.")


# -- what managers see ------------------------------------------------------------------------


@dataclass
class TeamRow:
    owner: User
    nba: NextActionList
    shown: int = 0
    acted: int = 0
    shown_value: Decimal = Decimal(0)
    acted_value: Decimal = Decimal(0)

    @property
    def acted_share(self) -> float | None:
        return self.acted / self.shown if self.shown else None


def acted_on_q() -> Q:
    """Rows of NextActionShown acted on after the day they were first listed (as an Exists filter)."""
    contact = Contact.objects.filter(customer=OuterRef("customer_id"), occurred_at__date__gte=OuterRef("shown_on"))
    task = Task.objects.filter(pk=OuterRef("object_id"), done_at__date__gte=OuterRef("shown_on"))
    opportunity = Opportunity.objects.filter(pk=OuterRef("object_id"), status_changed_at__date__gte=OuterRef("shown_on"))
    return (
        Exists(contact)
        | (Q(kind=Kind.FOLLOW_UP) & Exists(task))
        | (Q(kind__in=[Kind.CROSS_SELL, Kind.UP_SELL]) & Exists(opportunity))
    )


def acted_on(owner_ids: list[int], *, today: date | None = None) -> dict[int, dict[str, Any]]:
    """Per salesperson: items first listed in the last NBA_ACTED_WINDOW_DAYS, how many were acted on, and their EV.

    One grouped query.
    """
    today = today or timezone.localdate()
    since = today - timedelta(days=settings.NBA_ACTED_WINDOW_DAYS)
    acted = acted_on_q()
    rows = (
        NextActionShown.objects.filter(user_id__in=owner_ids, shown_on__gte=since)
        .values("user_id")
        .annotate(
            shown=Count("pk"), acted=Count("pk", filter=acted), shown_value=Sum("expected_value"),
            acted_value=Coalesce(Sum("expected_value", filter=acted), Value(Decimal(0))),
        )
        .order_by()
    )
    return {r["user_id"]: r for r in rows}


def team_next_actions(manager: User, *, today: date | None = None, on_lists=None) -> dict[str, Any]:
    """The manager's team: per salesperson their list (top items, total EV) and how much of it was acted on.

    `on_lists(lists)` is called before the counts are read (the page records the day's lists there).
    """
    from crm.selectors.workspace import team_members

    today = today or timezone.localdate()
    members = list(team_members(manager))
    lists = next_actions_for(manager, members, today=today)
    if on_lists is not None:
        on_lists(lists)
    stats = acted_on([m.pk for m in members], today=today)
    rows = []
    for m in members:
        s = stats.get(m.pk, {})
        rows.append(TeamRow(
            owner=m, nba=lists[m.pk], shown=s.get("shown", 0), acted=s.get("acted", 0),
            shown_value=s.get("shown_value") or Decimal(0), acted_value=s.get("acted_value") or Decimal(0),
        ))
    rows.sort(key=lambda r: (-r.nba.total, r.owner.username))
    shown = sum(r.shown for r in rows)
    acted_n = sum(r.acted for r in rows)
    return {
        "rows": rows, "lists": lists, "total": sum((r.nba.total for r in rows), Decimal(0)),
        "shown": shown, "acted": acted_n, "acted_share": acted_n / shown if shown else None,
        "acted_value": sum((r.acted_value for r in rows), Decimal(0)),
        "shown_value": sum((r.shown_value for r in rows), Decimal(0)),
        "window_days": settings.NBA_ACTED_WINDOW_DAYS, "today": today,
    }
