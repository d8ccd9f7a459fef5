"""Reads for the salesperson's workspace: tasks (My day's sections, the full list, the team's
overdue count), global search and the opportunities page.

Everything starts from the visibility rule (`.visible_to(user)`); every list is sliced or
paginated and loads its related rows in the same query, so a page issues a fixed number of
queries whatever the size of the book.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from django.core.paginator import Paginator
from django.db import connection
from django.db.models import BooleanField, Case, CharField, Count, F, Func, Q, QuerySet, Value, When
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
    # A task assigned to the user is visible to them whoever owns the account (Task.visible_to), so
    # the visibility rule adds nothing here; left in, its OR across task and account made PostgreSQL
    # hash the whole customer table for each of the four queries.
    mine = Task.objects.filter(assigned_to=user, done_at__isnull=True)
    if not (user.is_authenticated and user.is_active):
        mine = mine.none()
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
    order = ("due_on", "due_time", "id")
    loaded = _with_account_visible(Task.objects.select_related("customer", "assigned_to", "contact"), user)
    for key, (title, condition) in ranges.items():
        rows = []
        if counts[key] and limit:
            # the section's ids first, from the task index alone; then their accounts by primary key
            first = mine.filter(condition).order_by(*order).values("pk")[:limit]
            rows = list(loaded.filter(pk__in=first).order_by(*order))
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
    """First and last name joined by a space (the rank of a person among the matches)."""
    return Concat("first_name", Value(" "), "last_name", output_field=CharField())


PHONE_PUNCTUATION = (" ", "-", ".", "(", ")", "+", "/", "\u00a0")
SEARCH_SETTINGS = "SET LOCAL enable_seqscan = off; SET LOCAL jit = off;"
SEARCH_CANDIDATE_LIMIT = 40  # rows each index-served subquery may bring (at least 4 x the results asked for)
# The columns the suggestions and the results page show (fewer columns: a shorter query to build).
ACCOUNT_RESULT_FIELDS = ("name", "city", "email", "external_id", "lifecycle_stage", "owner__username",
                         "owner__first_name", "owner__last_name")
PERSON_RESULT_FIELDS = ("customer_id", "first_name", "last_name", "job_title", "dmu_role", "email", "phone",
                        "customer__name")


class PhoneDigits(Func):
    """The phone with its punctuation removed, "+33 6 12 34 56 78" -> "33612345678"."""

    template = "%(expressions)s"
    output_field = CharField()

    def as_sql(self, compiler, connection, **extra_context):
        sql, params = compiler.compile(self.source_expressions[0])
        for char in PHONE_PUNCTUATION:  # literals in the SQL, so the expression equals the index's
            sql = f"REPLACE({sql}, '{char}', '')"
        return sql, params


def phone_digits_expression():
    return PhoneDigits(F("phone"))


class SearchText(Func):
    """Columns joined by single spaces, NULL as empty: one text to search, the expression the
    customer_search_trgm and person_search_trgm indexes are built on (migration 0017 holds a
    copy; the two must stay equal, tests/crm/test_search.py checks the index serves the search).
    The separators are written into the SQL, not passed as parameters, for the same reason."""

    arg_joiner = " || ' ' || "
    template = "(%(expressions)s)"
    output_field = CharField()

    def __init__(self, *expressions):
        super().__init__(*(Func(e, template="COALESCE(%(expressions)s, '')", output_field=CharField())
                           for e in expressions))


def account_search_text():
    """What an account is found by: name, city, e-mail, web site, external id."""
    return SearchText(F("name"), F("city"), F("email"), F("website"), F("external_id"))


def person_search_text():
    """What a person is found by: first and last name, e-mail, phone digits."""
    return SearchText(F("first_name"), F("last_name"), F("email"), phone_digits_expression())


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


@functools.cache
def _search_text_sql(model: type[Customer] | type[Person]) -> str:
    """The model's search text as SQL on its table (compiled once: it has no parameters)."""
    query = model.objects.all().query
    text = (account_search_text if model is Customer else person_search_text)().resolve_expression(query)
    sql, params = query.get_compiler(connection=connection).compile(text)
    if params:  # the separators are literals, so that the SQL equals the index's expression
        raise ValueError(f"the search text of {model.__name__} must compile without parameters")
    return sql


def _candidates(model: type[Customer] | type[Person], condition: str, params: list, owners: list[int] | None,
                limit: int) -> tuple[str, list]:
    """SQL for the ids of up to `limit` rows of `model` whose search text meets `condition` and
    whose customer belongs to one of `owners` (None: any); unsorted, so it stops at the first found.

    The trigram condition is evaluated first, by the index, behind an OFFSET 0 fence, and the
    owners are checked on the rows it found: the planner cannot estimate how many rows a trigram
    condition keeps and, left to itself, walks a whole book in id order computing each similarity.
    """
    table, text = model._meta.db_table, _search_text_sql(model)
    condition = f"({text} {condition.format(text=text)})"
    if owners is None:
        return f"SELECT id FROM {table} WHERE {condition} LIMIT {int(limit)}", params
    if model is Customer:
        return (f"SELECT found.id FROM (SELECT id, owner_id FROM {table} WHERE {condition} OFFSET 0) found"
                f" WHERE found.owner_id = ANY(%s) LIMIT {int(limit)}", [*params, owners])
    return (f"SELECT found.id FROM (SELECT id, customer_id FROM {table} WHERE {condition} OFFSET 0) found"
            f" JOIN crm_customer owned ON owned.id = found.customer_id"
            f" WHERE owned.owner_id = ANY(%s) LIMIT {int(limit)}", [*params, owners])


def _matching_ids(q: str, digits: str, owners: list[int] | None, limit: int) -> tuple[list[int], list[int]]:
    """The ids of the candidate accounts and people for `q`, in one round trip.

    Per table, two phases, each an index-served subquery that stops at `candidates` rows (a
    first name matches thousands): the rows containing `q` (ILIKE '%q%', or the phone digits),
    and only if there are none, the rows similar to it (word similarity `%>`: a typo, words in
    another order); a one-time filter, so PostgreSQL does not start that scan otherwise.

    The settings come in the same statement: the index is always the way here, but with a LIMIT
    the planner may bet on a table scan (it cannot estimate a trigram condition), and then on
    compiling it (JIT). Sent as one simple query, outside a transaction they last only for it.
    """
    from crm.lookups import like_pattern

    candidates = max(SEARCH_CANDIDATE_LIMIT, 4 * limit)
    parts, params = [], []
    for model, tag in ((Customer, "a"), (Person, "p")):
        like, like_params = "ILIKE %s", [like_pattern(q)]
        if digits and model is Person:
            like, like_params = "ILIKE %s OR {text} ILIKE %s", [like_pattern(q), like_pattern(digits)]
        containing, containing_params = _candidates(model, like, like_params, owners, candidates)
        similar, similar_params = _candidates(model, "%%> %s", [q], owners, candidates)
        parts.append(f"{tag}_containing AS ({containing})")
        params += [*containing_params, *similar_params]
        parts.append(f"{tag}_alike AS (SELECT id FROM ({similar}) found"
                     f" WHERE NOT EXISTS (SELECT FROM {tag}_containing))")
    sql = (f"{SEARCH_SETTINGS} WITH {', '.join(parts)}"
           " SELECT 'a', id FROM a_containing UNION ALL SELECT 'a', id FROM a_alike"
           " UNION ALL SELECT 'p', id FROM p_containing UNION ALL SELECT 'p', id FROM p_alike")
    ids: dict[str, list[int]] = {"a": [], "p": []}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for tag, pk in cursor.fetchall():
            ids[tag].append(pk)
        if connection.in_atomic_block:  # inside a transaction the settings would outlive the search
            cursor.execute("RESET enable_seqscan; RESET jit")
    return ids["a"], ids["p"]


def _ranked(visible: QuerySet, ids: list[int], *, rank: Func, order: tuple[str, ...], limit: int) -> list:
    """The candidates the visibility rule lets through, by the similarity of their name to the query."""
    if not ids:
        return []
    return list(visible.filter(pk__in=ids).annotate(rank=rank).order_by("-rank", *order)[:limit])


def search(user: User, q: str, *, limit: int = SEARCH_LIMIT) -> SearchResults:
    """Accounts (name, external id, city, e-mail, web or e-mail domain) and people (name, e-mail,
    phone, also typed as bare digits) matching `q`, among the customers the user may see; best
    matches first.

    On PostgreSQL, one trigram-indexed search text per account and per person (pg_trgm, GIN):
    one query finds the candidates of both tables (the rows containing `q`, or if none, those
    similar to it: a typo), narrowed to the visible owners (a short list of ids); then one query
    per table that has candidates applies the visibility rule itself and ranks them. On SQLite,
    a plain case-insensitive contains-search.
    """
    from accounts.selectors import visible_owner_ids

    q = _clean_query(q)
    if len(q) < SEARCH_MIN_LENGTH:
        return SearchResults(q, [], [], too_short=bool(q))
    accounts = Customer.objects.visible_to(user).select_related("owner").only(*ACCOUNT_RESULT_FIELDS)
    people = Person.objects.visible_to(user).select_related("customer").only(*PERSON_RESULT_FIELDS)
    digits = _phone_digits_query(q)
    if connection.vendor == "postgresql":
        from django.contrib.postgres.search import TrigramWordSimilarity

        owners = visible_owner_ids(user)
        if owners == []:
            return SearchResults(q, [], [])
        account_ids, person_ids = _matching_ids(q, digits, owners, limit)
        return SearchResults(
            q,
            _ranked(accounts, account_ids, rank=TrigramWordSimilarity(q, "name"), order=("name", "id"), limit=limit),
            _ranked(people, person_ids, rank=TrigramWordSimilarity(q, full_name_expression()),
                    order=("last_name", "id"), limit=limit),
        )
    accounts = accounts.filter(
        Q(name__icontains=q) | Q(city__icontains=q) | Q(email__icontains=q) | Q(website__icontains=q)
        | Q(external_id__icontains=q)
    ).order_by("name", "id")
    people = people.annotate(full_name=full_name_expression())
    person_match = Q(full_name__icontains=q) | Q(email__icontains=q)
    if digits:
        people = people.annotate(phone_digits=phone_digits_expression())
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
