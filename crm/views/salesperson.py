"""Salesperson pages: My day, My accounts, Account 360 and its in-place actions."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.html import format_html
from django.views.decorators.http import require_GET, require_POST

from clv import renewals
from crm import history, services
from crm.forms import AccountFilterForm, ContactQuickForm, EventQuickForm, OpportunityStatusForm
from crm.importing import KINDS
from crm.models import Contact, Customer, Opportunity
from crm.selectors import pages
from crm.views.access import is_manager_or_admin

ACCOUNTS_PER_PAGE = 25
TABS = [("timeline", "Timeline"), ("holdings", "Holdings & usage"), ("contacts", "Contacts"),
        ("events", "Events"), ("purchases", "Purchases"), ("history", "History")]


@login_required
def home(request):
    """Managers land on their dashboard, salespeople on My day."""
    if is_manager_or_admin(request.user):
        return redirect("crm:dashboard")
    return redirect("crm:my_day")


@login_required
@require_GET
def my_day(request):
    context = pages.my_day(request.user)
    if is_manager_or_admin(request.user):
        from crm.selectors.workspace import team_members

        context["reassign_to"] = list(team_members(request.user))
    context.update(renewals.renewals_card(request.user, owner_ids=[request.user.pk]))
    from crm.next_action_records import own_next_actions

    context["nba"] = own_next_actions(request.user, run=context["run"])
    return render(request, "crm/my_day.html", context)


# The kinds of record the Accounts page links an export of (in the import's columns).
EXPORT_KINDS = [(key, kind.label) for key, kind in KINDS.items()]


@login_required
@require_GET
def account_list(request):
    owners = None
    if is_manager_or_admin(request.user):
        from crm.selectors.dashboard import dashboard_scope

        owners = dashboard_scope(request.user).people
    form = AccountFilterForm(request.GET or None, owners=owners)
    filters = form.filters()
    run = pages.current_run()
    page = pages.account_page(request.user, page=request.GET.get("page"), per_page=ACCOUNTS_PER_PAGE, run=run,
                              **filters)
    key, desc = pages.parse_sort(filters.get("sort"))
    context = {
        "form": form,
        "page": page,
        "run": run,
        "sort_key": key,
        "sort_desc": desc,
        "filtered": any(k in filters for k in ("q", "stage", "relationship", "risk", "owner_id")),
        "has_any": page.paginator.count > 0 or Customer.objects.visible_to(request.user).exists(),
        "export_kinds": EXPORT_KINDS,
    }
    partial = request.htmx and request.htmx.target == "account-results"
    response = render(request, "crm/partials/account_rows.html" if partial else "crm/account_list.html", context)
    # The same URL answers a fragment or a page: caches must keep them apart.
    patch_vary_headers(response, ["HX-Request", "HX-Target"])
    return response


def _facets_context(customer, request, tab: str | None = None) -> dict:
    tab = tab or request.GET.get("tab", "timeline")
    if tab not in dict(TABS):
        tab = "timeline"
    context = {"customer": customer, "tab": tab, "tabs": TABS, "facet_choices": pages.FACETS,
               "timeline_limit": pages.TIMELINE_LIMIT}
    if tab == "timeline":
        chosen = [f for f in request.GET.getlist("facet") if f in dict(pages.FACETS)]
        context["chosen_facets"] = chosen or [f for f, _ in pages.FACETS]
        context["items"] = pages.timeline(customer, facets=chosen or None)
    elif tab == "holdings":
        context["holdings"] = renewals.attach_contract_values(pages.holdings_with_usage(customer))
    elif tab == "history":
        context.update(history.account_history_context(customer, request.user))
    else:
        context["rows"] = pages.facet_rows(customer, tab)
    return context


@login_required
@require_GET
def account_detail(request, pk: int):
    context = pages.account_360(request.user, pk)
    customer = context["customer"]
    context.update(_facets_context(customer, request))
    context["contact_form"] = ContactQuickForm(customer=customer)
    context["event_form"] = EventQuickForm()
    if is_manager_or_admin(request.user):
        from crm.forms import AccountReassignForm

        context["reassign_form"] = AccountReassignForm(owners=services.assignable_owners(request.user))
    return render(request, "crm/account_detail.html", context)


@login_required
@require_GET
def account_facets(request, pk: int):
    """The tabs and timeline section alone, for htmx tab switches and timeline filters."""
    customer = pages.account_for(request.user, pk)
    return render(request, "crm/partials/facets.html", _facets_context(customer, request))


def _quick_form_response(request, customer, *, form, template: str, saved: str | None):
    """After a quick form: the (fresh or invalid) form, and on success the refreshed timeline out of band."""
    context = {"customer": customer, "form": form, "saved": saved}
    if saved:
        context.update(_facets_context(customer, request, tab="timeline"))
        context["oob"] = True
        context["just_added"] = True
        context["last_contact"] = pages.last_contact_of(customer)
    status = 200 if saved or not form.is_bound else 422
    if not request.htmx:
        if saved:
            return redirect(reverse("crm:account_detail", args=[customer.pk]))
        full = pages.account_360(request.user, customer.pk)
        full.update(_facets_context(customer, request))
        full["contact_form"] = form if isinstance(form, ContactQuickForm) else ContactQuickForm(customer=customer)
        full["event_form"] = form if isinstance(form, EventQuickForm) else EventQuickForm()
        return render(request, "crm/account_detail.html", full, status=status)
    return render(request, template, context, status=status)


@login_required
@require_POST
def contact_create(request, pk: int):
    customer = pages.account_for(request.user, pk)
    form = ContactQuickForm(request.POST, customer=customer)
    if form.is_valid():
        data = form.cleaned_data
        try:
            services.contact_log(
                customer=customer,
                salesperson=request.user,
                channel=data["channel"],
                direction=data["direction"],
                subject=data["subject"],
                occurred_at=data["occurred_at"],
                people=data["people"],
                outcome=data["outcome"],
                notes=data["notes"],
                follow_up_on=data["follow_up_on"],
            )
        except ValidationError as exc:
            _add_service_errors(form, exc)
        else:
            return _quick_form_response(
                request, customer, form=ContactQuickForm(customer=customer),
                template="crm/partials/contact_form.html", saved="Contact logged.",
            )
    return _quick_form_response(request, customer, form=form, template="crm/partials/contact_form.html", saved=None)


@login_required
@require_POST
def event_create(request, pk: int):
    customer = pages.account_for(request.user, pk)
    form = EventQuickForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            services.event_record(
                customer=customer,
                kind=data["kind"],
                impact=data["impact"],
                occurred_at=data["occurred_at"],
                description=data["description"],
                recorded_by=request.user,
            )
        except ValidationError as exc:
            _add_service_errors(form, exc)
        else:
            return _quick_form_response(
                request, customer, form=EventQuickForm(), template="crm/partials/event_form.html",
                saved="Event recorded.",
            )
    return _quick_form_response(request, customer, form=form, template="crm/partials/event_form.html", saved=None)


def _add_service_errors(form, exc: ValidationError) -> None:
    from crm.views.accounts import add_service_errors

    add_service_errors(form, exc)


@login_required
@require_POST
def opportunity_status(request, pk: int):
    opportunity = get_object_or_404(
        Opportunity.objects.visible_to(request.user).select_related("customer", "product", "from_product"), pk=pk
    )
    form = OpportunityStatusForm(request.POST)
    error = None
    if form.is_valid():
        try:
            services.opportunity_set_status(opportunity=opportunity, status=form.cleaned_data["status"], user=request.user)
        except ValidationError as exc:
            error = " ".join(exc.messages)
    else:
        error = "Choose accepted, dismissed, won or lost."
    if not request.htmx:
        return redirect(reverse("crm:account_detail", args=[opportunity.customer_id]) + "#opportunities")
    return render(
        request, "crm/partials/opportunity.html", {"opp": opportunity, "error": error, "changed": error is None},
        status=422 if error else 200,
    )


@login_required
@require_POST
def follow_up_done(request, pk: int):
    """A contact's follow-up done (completes its task too)."""
    contact = get_object_or_404(Contact.objects.visible_to(request.user).select_related("customer"), pk=pk)
    services.contact_complete_follow_up(contact=contact)
    if request.htmx:
        return HttpResponse(
            format_html('<li class="muted">Done: {} ({})</li>', contact.subject, contact.customer.name)
        )
    return redirect("crm:my_day")
