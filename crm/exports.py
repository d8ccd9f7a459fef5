"""CSV exports of the lists: accounts (with the list's filters), opportunities, analytics answers,
an account's change history. Streamed row by row (bounded memory), for whoever may see the rows,
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


urlpatterns = [
    path("customers/export.csv", accounts_csv, name="accounts_csv"),
    path("customers/<int:pk>/history.csv", account_history_csv, name="account_history_csv"),
    path("opportunities/export.csv", opportunities_csv, name="opportunities_csv"),
    path("analytics/<slug:question>/export.csv", analytics_csv, name="analytics_csv"),
]
