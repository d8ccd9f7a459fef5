"""Reads for the salesperson's workspace: tasks (My day's sections, the full list, the team's
overdue count), global search and the opportunities page.

Everything starts from the visibility rule (`.visible_to(user)`); every list is sliced or
paginated and loads its related rows in the same query, so a page issues a fixed number of
queries whatever the size of the book.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from django.core.paginator import Paginator
from django.db import connection
from django.db.models import BooleanField, Case, CharField, Count, F, Q, QuerySet, Value, When
from django.db.models.functions import Concat
from django.utils import timezone

from accounts.models import User
from accounts.selectors import customer_visibility_q
from crm.models import Customer, Opportunity, Person, Task

SECTION_LIMIT = 20
UPCOMING_DAYS = 7
TASKS_PER_PAGE = 25
OPPORTUNITIES_PER_PAGE = 25
SEARCH_LIMIT = 8
SEARCH_PAGE_LIMIT = 50
SEARCH_MIN_LENGTH = 2
SEARCH_MAX_LENGTH = 100

TASK_STATUSES = [("open", "Open"), ("overdue", "Overdue"), ("done", "Done"), ("all", "All")]


def team_members(user: User) -> QuerySet[User]:
    """Whom a manager may see tasks of and assign tasks to: themselves and their teams' salespeople."""
    if user.sees_everything:
        return User.objects.filter(is_active=True).order_by("first_name", "last_name", "username")
    if user.is_manager:
        return User.objects.filter(Q(pk=user.pk) | Q(team__manager=user), is_active=True).order_by(
            "first_name", "last_name", "username"
        )
    return User.objects.filter(pk=user.pk)


def _with_account_visible(qs: QuerySet[Task], user: User) -> QuerySet[Task]:
    """Mark rows whose account the user may open (a task can be assigned to someone who cannot)."""
    if user.sees_everything:
        return qs.annotate(account_visible=Value(True, output_field=BooleanField()))
    return qs.annotate(
        account_visible=Case(
            When(customer_visibility_q(user, "customer__"), then=Value(True)),
            default=Value(False),
            output_field=BooleanField(),
        )
    )


def tasks_for(user: User) -> QuerySet[Task]:
    """Tasks the user may see, with their account and assignee loaded."""
    qs = Task.objects.visible_to(user).select_related("customer", "assigned_to", "contact")
    return _with_account_visible(qs, user)


@dataclass
class Section:
    key: str
    title: str
    count: int
    tasks: list[Task]


def my_day_tasks(user: User, *, today: date | None = None, limit: int = SECTION_LIMIT) -> dict[str, Any]:
    """My open tasks in three sections (overdue, today, next 7 days), each with its full count.

    Four queries: one for the three counts, one per section's first `limit` rows.
    """
    today = today or timezone.localdate()
    horizon = today + timedelta(days=UPCOMING_DAYS)
    mine = tasks_for(user).filter(assigned_to=user, done_at__isnull=True)
    counts = mine.aggregate(
        overdue=Count("pk", filter=Q(due_on__lt=today)),
        today=Count("pk", filter=Q(due_on=today)),
        upcoming=Count("pk", filter=Q(due_on__gt=today, due_on__lte=horizon)),
    )
    ranges = {
        "overdue": ("Overdue", Q(due_on__lt=today)),
        "today": ("Today", Q(due_on=today)),
        "upcoming": (f"Next {UPCOMING_DAYS} days", Q(due_on__gt=today, due_on__lte=horizon)),
    }
    sections = []
    for key, (title, condition) in ranges.items():
        rows = list(mine.filter(condition).order_by("due_on", "due_time", "id")[:limit]) if counts[key] else []
        sections.append(Section(key, title, counts[key], rows))
    return {"sections": sections, "today": today, "horizon": horizon, "section_limit": limit}


def task_page(
    user: User,
    *,
    status: str = "open",
    due_from: date | None = None,
    due_to: date | None = None,
    customer_id: int | None = None,
    assignee_id: int | None = None,
    page: Any = 1,
    per_page: int = TASKS_PER_PAGE,
):
    """One page of the tasks the user may see: their own, or (managers) anyone's on their team."""
    qs = task_list_queryset(user, status=status, due_from=due_from, due_to=due_to, customer_id=customer_id,
                            assignee_id=assignee_id)
    return Paginator(qs, per_page).get_page(page)


def task_list_queryset(
    user: User,
    *,
    status: str = "open",
    due_from: date | None = None,
    due_to: date | None = None,
    customer_id: int | None = None,
    assignee_id: int | None = None,
) -> QuerySet[Task]:
    """The Tasks page's list with its filters, in its order (the page and its CSV export)."""
    today = timezone.localdate()
    qs = tasks_for(user)
    if assignee_id and (user.is_manager or user.sees_everything):
        qs = qs.filter(assigned_to_id=assignee_id)
    elif not (user.is_manager or user.sees_everything):
        qs = qs.filter(assigned_to=user)
    if status == "open":
        qs = qs.filter(done_at__isnull=True)
    elif status == "overdue":
        qs = qs.filter(done_at__isnull=True, due_on__lt=today)
    elif status == "done":
        qs = qs.filter(done_at__isnull=False)
    if due_from:
        qs = qs.filter(due_on__gte=due_from)
    if due_to:
        qs = qs.filter(due_on__lte=due_to)
    if customer_id:
        qs = qs.filter(customer_id=customer_id)
    order = ("-done_at", "-id") if status == "done" else ("due_on", "due_time", "id")
    return qs.order_by(*order)


def team_overdue(user: User, *, today: date | None = None) -> list[dict[str, Any]]:
    """Open overdue tasks per salesperson of the manager's teams (one grouped query)."""
    today = today or timezone.localdate()
    rows = (
        Task.objects.visible_to(user)
        .filter(done_at__isnull=True, due_on__lt=today, assigned_to__in=team_members(user))
        .values("assigned_to", "assigned_to__first_name", "assigned_to__last_name", "assigned_to__username")
        .annotate(overdue=Count("pk"))
        .order_by("-overdue", "assigned_to__username")
    )
    return [
        {
            "user_id": r["assigned_to"],
            "name": f"{r['assigned_to__first_name']} {r['assigned_to__last_name']}".strip()
            or r["assigned_to__username"],
            "overdue": r["overdue"],
        }
        for r in rows
    ]


# -- global search ------------------------------------------------------------------------


@dataclass
class SearchResults:
    query: str
    accounts: list[Customer]
    people: list[Person]
    too_short: bool = False

    @property
    def empty(self) -> bool:
        return not self.accounts and not self.people


def _clean_query(q: str) -> str:
    return " ".join((q or "").replace("\x00", "").split())[:SEARCH_MAX_LENGTH]


def full_name_expression():
    """The expression the person_fullname_trgm index is built on (must match it exactly)."""
    return Concat("first_name", Value(" "), "last_name", output_field=CharField())


PHONE_PUNCTUATION = (" ", "-", ".", "(", ")", "+", "/", "\u00a0")
SEARCH_BRANCH_LIMIT = 200  # candidates one index-served branch may bring, before ranking


def phone_digits_expression():
    """The phone with its punctuation removed, "+33 6 12 34 56 78" -> "33612345678"; the
    person_phone_digits_trgm index is built on this expression (must match it exactly)."""
    from django.db.models.functions import Replace

    expression = F("phone")
    for char in PHONE_PUNCTUATION:
        expression = Replace(expression, Value(char), Value(""))
    return expression


def _phone_digits_query(q: str) -> str:
    """The digits to look for when the query is a phone number ("06 12 34", "+33 612"), else "".

    A national number's leading trunk zero is dropped ("0612345678" finds "+33 6 12 34 56 78").
    """
    if any(ch not in "0123456789" and ch not in PHONE_PUNCTUATION for ch in q):
        return ""
    digits = "".join(ch for ch in q if ch.isdigit())
    if digits.startswith("0") and not digits.startswith("00") and len(digits) > 3:
        digits = digits[1:]
    elif digits.startswith("00"):
        digits = digits[2:]  # international prefix 00 written for +
    return digits if len(digits) >= 3 else ""


def _candidates(qs: QuerySet, branches: list[Q], limit: int) -> list[int]:
    """Ids matching any branch, one query per branch so each is served by its own trigram index
    and stops at `limit` rows (an OR across columns makes PostgreSQL scan and rank every match)."""
    ids: dict[int, None] = {}
    for branch in branches:
        ids.update(dict.fromkeys(qs.filter(branch).values_list("pk", flat=True)[:limit]))
    return list(ids)


def search(user: User, q: str, *, limit: int = SEARCH_LIMIT) -> SearchResults:
    """Accounts (name, external id, city, e-mail, web or e-mail domain) and people (name, e-mail,
    phone, also typed as bare digits) matching `q`, among the customers the user may see; best
    matches first.

    On PostgreSQL, trigram word similarity (pg_trgm, GIN-indexed) finds names with a typo as
    well as substrings, one index-served query per field; the visibility rule is applied in each
    (as a short list of owners) and again on the final rows. On SQLite, a plain case-insensitive
    contains-search.
    """
    from accounts.selectors import visible_owner_ids

    q = _clean_query(q)
    if len(q) < SEARCH_MIN_LENGTH:
        return SearchResults(q, [], [], too_short=bool(q))
    accounts = Customer.objects.visible_to(user).select_related("owner")
    people = Person.objects.visible_to(user).select_related("customer").annotate(full_name=full_name_expression())
    digits = _phone_digits_query(q)
    if digits:
        people = people.annotate(phone_digits=phone_digits_expression())
    if connection.vendor == "postgresql":
        from django.contrib.postgres.search import TrigramWordSimilarity

        import crm.lookups  # noqa: F401  (registers ilike_contains)

        owners = visible_owner_ids(user)
        account_pool = Customer.objects.all() if owners is None else Customer.objects.filter(owner_id__in=owners)
        person_pool = Person.objects.annotate(full_name=full_name_expression())
        if owners is not None:
            person_pool = person_pool.filter(customer__owner_id__in=owners)
        account_branches = [Q(name__trigram_word_similar=q), Q(name__ilike_contains=q), Q(city__ilike_contains=q),
                            Q(email__ilike_contains=q), Q(website__ilike_contains=q),
                            Q(external_id__ilike_contains=q)]
        person_branches = [Q(full_name__trigram_word_similar=q), Q(full_name__ilike_contains=q),
                           Q(email__ilike_contains=q)]
        if digits:
            person_pool = person_pool.annotate(phone_digits=phone_digits_expression())
            person_branches.append(Q(phone_digits__ilike_contains=digits))
        account_ids = _candidates(account_pool, account_branches, SEARCH_BRANCH_LIMIT)
        person_ids = _candidates(person_pool, person_branches, SEARCH_BRANCH_LIMIT)
        accounts = (accounts.filter(pk__in=account_ids).annotate(rank=TrigramWordSimilarity(q, "name"))
                    .order_by("-rank", "name", "id"))
        people = (people.filter(pk__in=person_ids).annotate(rank=TrigramWordSimilarity(q, "full_name"))
                  .order_by("-rank", "last_name", "id"))
    else:
        accounts = accounts.filter(
            Q(name__icontains=q) | Q(city__icontains=q) | Q(email__icontains=q) | Q(website__icontains=q)
            | Q(external_id__icontains=q)
        ).order_by("name", "id")
        person_match = Q(full_name__icontains=q) | Q(email__icontains=q)
        if digits:
            person_match |= Q(phone_digits__contains=digits)
        people = people.filter(person_match).order_by("last_name", "id")
    return SearchResults(q, list(accounts[:limit]), list(people[:limit]))


# -- opportunities ------------------------------------------------------------------------

OPEN_STATUSES = (Opportunity.Status.OPEN, Opportunity.Status.ACCEPTED)


def opportunity_page(
    user: User,
    *,
    kind: str = "",
    product_id: int | None = None,
    status: str = "",
    customer_id: int | None = None,
    page: Any = 1,
    per_page: int = OPPORTUNITIES_PER_PAGE,
):
    """The user's open (open and accepted) opportunities, or a manager's team's, by expected value."""
    qs = Opportunity.objects.visible_to(user).select_related("customer", "customer__owner", "product", "from_product")
    if status in Opportunity.Status.values:
        qs = qs.filter(status=status)
    else:
        qs = qs.filter(status__in=OPEN_STATUSES)
    if kind in Opportunity.Kind.values:
        qs = qs.filter(kind=kind)
    if product_id:
        qs = qs.filter(product_id=product_id)
    if customer_id:
        qs = qs.filter(customer_id=customer_id)
    return Paginator(qs.order_by("-expected_value", "-score", "id"), per_page).get_page(page)
