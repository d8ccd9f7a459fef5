"""CSV exports of the lists: accounts (with the list's filters), opportunities, tasks (with the Tasks
page's filters), analytics answers, an account's change history, and every kind of record in the
columns its import reads (so an export imports back as the same records). Streamed row by row (bounded memory), for whoever may see the rows,
with spreadsheet formulas neutralised in text cells.
"""

from __future__ import annotations

import csv
import datetime
import decimal
from collections.abc import Iterable, Iterator, Sequence

from django.contrib.auth.decorators import login_required
from django.http import Http404, StreamingHttpResponse
from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_GET

from crm.models import Opportunity
from crm.views.access import manager_required

ACCOUNT_CHUNK = 1000  # account rows read per query while streaming
HISTORY_EXPORT_LIMIT = 100_000
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value) -> str:
    """Neutralise spreadsheet formulas in a text cell (CSV injection): a leading ', as the dashboard exports do."""
    text = str(value)
    return "'" + text if text[:1] in FORMULA_STARTS else text


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | decimal.Decimal):
        return value
    if isinstance(value, datetime.datetime):
        return timezone.localtime(value).isoformat() if timezone.is_aware(value) else value.isoformat()
    if isinstance(value, datetime.date):
        return value.isoformat()
    return spreadsheet_safe(value)


class _Echo:
    """A file-like object whose write returns the line: csv.writer into a generator."""

    def write(self, value: str) -> str:
        return value


def stream_csv(filename: str, header: Sequence[str], rows: Iterable[Sequence]) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield writer.writerow(header)
        for row in rows:
            yield writer.writerow([_cell(v) for v in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}-{timezone.localdate():%Y-%m-%d}.csv"'
    return response


# --- accounts ------------------------------------------------------------------------------

ACCOUNT_HEADER = ["id", "external_id", "name", "kind", "owner", "relationship_type", "lifecycle_stage", "industry",
                  "city", "country", "clv", "p_alive", "historical_value", "expected_purchases", "last_contact"]


def account_rows(user, filters: dict) -> Iterator[list]:
    """The account list's rows with the list's filters and sort, read in chunks of ids."""
    from crm.selectors import pages

    run = pages.current_run()
    ids = list(pages.account_ids(user, run=run, **filters))
    for start in range(0, len(ids), ACCOUNT_CHUNK):
        for c in pages.account_rows(ids[start:start + ACCOUNT_CHUNK], run=run):
            yield [c.pk, c.external_id, c.name, c.kind, c.owner.username if c.owner else None, c.relationship_type,
                   c.lifecycle_stage, c.industry, c.city, c.country, getattr(c, "clv", None),
                   getattr(c, "p_alive", None), getattr(c, "historical_value", None),
                   getattr(c, "expected_purchases", None), getattr(c, "last_contact", None)]


@login_required
@require_GET
def accounts_csv(request):
    """The account list as CSV, with the same filters and sort as the page (`?q=&stage=&...`)."""
    from crm.forms import AccountFilterForm
    from crm.views.access import is_manager_or_admin

    owners = None
    if is_manager_or_admin(request.user):
        from crm.selectors.dashboard import dashboard_scope

        owners = dashboard_scope(request.user).people
    form = AccountFilterForm(request.GET or None, owners=owners)
    return stream_csv("accounts", ACCOUNT_HEADER, account_rows(request.user, form.filters()))


# --- opportunities -------------------------------------------------------------------------

OPPORTUNITY_HEADER = ["id", "external_id", "customer_id", "customer", "owner", "kind", "product_sku", "from_sku",
                      "status", "expected_value", "score", "evidence", "generated_at", "status_changed_at"]


@login_required
@require_GET
def opportunities_csv(request):
    """Opportunities of the customers you may see; `?status=open` (or several, comma-separated) to narrow."""
    qs = Opportunity.objects.visible_to(request.user).select_related("customer__owner", "product", "from_product")
    statuses = [s for s in request.GET.get("status", "").split(",") if s]
    if statuses:
        qs = qs.filter(status__in=statuses)
    rows = (
        [o.pk, o.external_id, o.customer_id, o.customer.name,
         o.customer.owner.username if o.customer.owner else None, o.kind, o.product.sku,
         o.from_product.sku if o.from_product else None, o.status, o.expected_value, o.score, o.evidence,
         o.generated_at, o.status_changed_at]
        for o in qs.order_by("customer_id", "id").iterator(chunk_size=2000)
    )
    return stream_csv("opportunities", OPPORTUNITY_HEADER, rows)


# --- analytics -----------------------------------------------------------------------------


@manager_required
@require_GET
def analytics_csv(request, question: str):
    """One analytics answer (its first table), as the Analytics page shows it for the same inputs."""
    from django.http import HttpResponse

    from crm.views.analytics import QUESTIONS, analytics_context

    if question not in {key for key, _ in QUESTIONS}:
        raise Http404("No such question.")
    request.GET = request.GET.copy()
    request.GET["export"] = question  # the page's own CSV of this answer (formatted as on the page)
    response = analytics_context(request)
    if not isinstance(response, HttpResponse):
        raise Http404("No answer for these inputs.")
    streamed = StreamingHttpResponse(iter([response.content]), content_type=response["Content-Type"])
    streamed["Content-Disposition"] = response["Content-Disposition"]
    return streamed


# --- history -------------------------------------------------------------------------------

HISTORY_HEADER = ["at", "user", "token", "via", "resource", "object_id", "record", "op", "field", "old", "new"]


@login_required
@require_GET
def account_history_csv(request, pk: int):
    """An account's change history (itself and its records), one line per changed field, newest first."""
    from crm import history
    from crm.selectors import pages

    customer = pages.account_for(request.user, pk)

    def rows() -> Iterator[list]:
        for entry in history.account_history(customer.pk, request.user, limit=HISTORY_EXPORT_LIMIT):
            actor = entry.actor
            who = [entry.at, actor.get("username"), actor.get("token_name"), actor.get("via")]
            what = [entry.resource, entry.object_id, entry.title, entry.op]
            for change in entry.changes or [None]:
                if change is None:
                    yield [*who, *what, None, None, None]
                else:
                    yield [*who, *what, change.field, _plain(change.old), _plain(change.new)]

    return stream_csv(f"history-customer-{customer.pk}", HISTORY_HEADER, rows())


def _plain(value):
    return value if not isinstance(value, dict | list) else str(value)


# --- records, in the columns their import reads ---------------------------------------------

RECORD_CHUNK = 2000


def _ext(obj) -> str | None:
    return obj.external_id if obj is not None else None


def _username(user) -> str | None:
    return user.username if user is not None else None


def _record_rows(kind: str, user) -> Iterator[list]:
    """The records of `kind` that `user` may see, one list per row in the import's field order."""
    from crm.models import Contact, Customer, Event, Holding, Person, Product, Purchase, Usage

    if kind == "customers":
        for c in Customer.objects.visible_to(user).select_related("owner").order_by("pk").iterator(RECORD_CHUNK):
            yield [c.external_id, c.name, c.kind, _username(c.owner), c.relationship_type, c.lifecycle_stage,
                   c.acquired_on, c.lost_on, c.industry, c.address, c.city, c.country, c.email, c.phone, c.website,
                   c.notes]
    elif kind == "people":
        for p in Person.objects.visible_to(user).select_related("customer").order_by("pk").iterator(RECORD_CHUNK):
            yield [p.external_id, _ext(p.customer), p.first_name, p.last_name, p.job_title, p.dmu_role, p.email,
                   p.phone, p.is_active, p.is_primary]
    elif kind == "products":
        for p in Product.objects.order_by("pk").iterator(RECORD_CHUNK):
            yield [p.external_id, p.sku, p.name, p.family, p.tier, p.list_price, p.unit_cost, p.capacity_unit,
                   p.capacity_per_unit, p.is_active, p.description, p.renewal_period, p.period_price]
    elif kind == "holdings":
        qs = Holding.objects.visible_to(user).select_related("customer", "product").order_by("pk")
        for h in qs.iterator(RECORD_CHUNK):
            yield [h.external_id, _ext(h.customer), h.product.sku, h.quantity, h.since, h.until, h.status]
    elif kind == "usage":
        for u in Usage.objects.visible_to(user).select_related("holding").order_by("pk").iterator(RECORD_CHUNK):
            yield [u.external_id, _ext(u.holding), u.period_start, u.period_end, u.used, u.capacity, u.satisfaction,
                   u.nps, u.note]
    elif kind == "contacts":
        qs = (Contact.objects.visible_to(user).select_related("customer", "salesperson")
              .prefetch_related("people").order_by("pk"))
        for c in qs.iterator(RECORD_CHUNK):
            people = ";".join(sorted(p.external_id for p in c.people.all() if p.external_id))
            yield [c.external_id, _ext(c.customer), c.channel, c.direction, c.occurred_at, c.subject,
                   _username(c.salesperson), people, c.notes, c.outcome, c.follow_up_on, c.follow_up_done_at]
    elif kind == "events":
        for e in Event.objects.visible_to(user).select_related("customer").order_by("pk").iterator(RECORD_CHUNK):
            yield [e.external_id, _ext(e.customer), e.kind, e.occurred_at, e.impact, e.description]
    elif kind == "purchases":
        qs = Purchase.objects.visible_to(user).select_related("customer", "product").order_by("pk")
        for p in qs.iterator(RECORD_CHUNK):
            yield [p.pk, p.external_id, _ext(p.customer), p.purchased_at, p.amount,
                   p.product.sku if p.product else None, p.quantity, p.unit_cost, p.order_ref]


@login_required
@require_GET
def records_csv(request, kind: str):
    """Every record of one kind you may see, in the columns `import_<kind>` and the import page read."""
    from crm.importing import KINDS

    if kind not in KINDS:
        raise Http404("No such kind of record.")
    return stream_csv(kind, KINDS[kind].fields, _record_rows(kind, request.user))


# --- tasks ---------------------------------------------------------------------------------

TASK_HEADER = ["external_id", "customer_external_id", "customer", "title", "notes", "due_on", "due_time",
               "assigned_to", "original_due_on", "done_at", "outcome", "follow_up_of_contact"]


@login_required
@require_GET
def tasks_csv(request):
    """The Tasks page's list as CSV, with the same filters (`?status=&due_from=&due_to=&customer=&assignee=`)."""
    from crm.selectors.workspace import task_list_queryset, team_members
    from crm.views.access import is_manager_or_admin
    from crm.workspace_forms import TaskFilterForm

    assignees = team_members(request.user) if is_manager_or_admin(request.user) else None
    form = TaskFilterForm(request.GET or None, assignees=assignees)
    qs = task_list_queryset(request.user, **form.filters())
    rows = (
        [t.external_id, _ext(t.customer), t.customer.name, t.title, t.notes, t.due_on, t.due_time,
         _username(t.assigned_to), t.original_due_on, t.done_at, t.outcome, _ext(t.contact) if t.contact else None]
        for t in qs.iterator(RECORD_CHUNK)
    )
    return stream_csv("tasks", TASK_HEADER, rows)


urlpatterns = [
    path("exports/<slug:kind>.csv", records_csv, name="records_csv"),
    path("tasks/export.csv", tasks_csv, name="tasks_csv"),
    path("customers/export.csv", accounts_csv, name="accounts_csv"),
    path("customers/<int:pk>/history.csv", account_history_csv, name="account_history_csv"),
    path("opportunities/export.csv", opportunities_csv, name="opportunities_csv"),
    path("analytics/<slug:question>/export.csv", analytics_csv, name="analytics_csv"),
]
