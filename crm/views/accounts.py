"""Keeping the book: create, edit, reassign and lose accounts; people of the decision-making unit;
holdings and their usage. Each page reads through the visibility rule and writes through one
service; in-place (htmx) requests get the section they changed, plain requests the whole page.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from crm import services
from crm.forms import (
    AccountForm,
    AccountReassignForm,
    ContactQuickForm,
    EventQuickForm,
    HoldingForm,
    MarkLostForm,
    PersonForm,
    UsageForm,
)
from crm.models import Holding, Person
from crm.selectors import pages
from crm.selectors.accounts import possible_duplicates
from crm.views.access import is_manager_or_admin

GET_POST = require_http_methods(["GET", "POST"])


def add_service_errors(form, exc: ValidationError) -> None:
    """Put a service's field errors beside the fields (or on top when the field is not on the form)."""
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)


def _status(form) -> int:
    return 422 if form.is_bound and form.errors else 200


def _duplicates(request, form, *, exclude_pk: int | None = None, changed: bool = True) -> list:
    """Hints for a valid account form, unless the user confirmed they want to save anyway."""
    if request.POST.get("confirm_duplicates") or not changed:
        return []
    data = form.cleaned_data
    return possible_duplicates(request.user, name=data.get("name", ""), email=data.get("email", ""),
                               phone=data.get("phone", ""), exclude_pk=exclude_pk)


def _account_page(request, customer, *, status: int = 200, tab: str | None = None, **extra):
    """Account 360 as a whole page, with whatever form is open (the no-JavaScript path)."""
    from crm.views.salesperson import _facets_context

    context = pages.account_360(request.user, customer.pk)
    context.update(_facets_context(context["customer"], request, tab=tab))
    context["contact_form"] = ContactQuickForm(customer=context["customer"])
    context["event_form"] = EventQuickForm()
    context.update(extra)
    if "reassign_form" not in context and is_manager_or_admin(request.user):
        context["reassign_form"] = AccountReassignForm(owners=services.assignable_owners(request.user))
    return render(request, "crm/account_detail.html", context, status=status)


# -- accounts -------------------------------------------------------------------------------


@login_required
@GET_POST
def account_create(request):
    owners = services.assignable_owners(request.user) if is_manager_or_admin(request.user) else None
    form = AccountForm(request.POST or None, owners=owners, initial={"owner": request.user.pk})
    hints = []
    if form.is_bound and form.is_valid():
        hints = _duplicates(request, form)
        if not hints:
            try:
                customer = services.customer_create(
                    owner=form.cleaned_data.get("owner") or request.user, **form.account_data()
                )
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                messages.success(request, f"Account “{customer.name}” created.")
                return redirect("crm:account_detail", pk=customer.pk)
    return render(request, "crm/account_form.html", {"form": form, "hints": hints},
                  status=_status(form))


@login_required
@require_GET
def account_duplicates(request):
    """Live hints while typing a new account (or editing one): only accounts the user can see."""
    exclude = request.GET.get("exclude")
    hints = possible_duplicates(
        request.user, name=request.GET.get("name", "")[:200], email=request.GET.get("email", "")[:254],
        phone=request.GET.get("phone", "")[:40], exclude_pk=int(exclude) if exclude and exclude.isdigit() else None,
    )
    return render(request, "crm/partials/duplicate_hints.html", {"hints": hints, "live": True})


@login_required
@require_GET
def account_summary(request, pk: int):
    customer = pages.account_for(request.user, pk)
    return render(request, "crm/partials/account_summary.html", _summary_context(request, customer))


def _summary_context(request, customer, **extra) -> dict:
    return {"customer": customer, "last_contact": pages.last_contact_of(customer),
            "value": pages.current_value_of(customer), **extra}


@login_required
@GET_POST
def account_edit(request, pk: int):
    customer = pages.account_for(request.user, pk)
    form = AccountForm(request.POST or None, instance=customer)
    hints = []
    if form.is_bound and form.is_valid():
        changed = bool({"name", "email", "phone"} & set(form.changed_data))
        hints = _duplicates(request, form, exclude_pk=customer.pk, changed=changed)
        if not hints:
            try:
                services.customer_update(customer=customer, data=form.account_data())
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                if not request.htmx:
                    messages.success(request, "Account saved.")
                    return redirect("crm:account_detail", pk=customer.pk)
                return render(request, "crm/partials/account_summary.html",
                              _summary_context(request, customer, saved="Account saved."))
    context = _summary_context(request, customer, form=form, hints=hints)
    if not request.htmx:
        return _account_page(request, customer, status=_status(form), account_form=form, hints=hints)
    return render(request, "crm/partials/account_edit.html", context, status=_status(form))


@login_required
@require_POST
def account_reassign(request, pk: int):
    if not is_manager_or_admin(request.user):
        raise PermissionDenied("Only managers and admins reassign accounts.")
    customer = pages.account_for(request.user, pk)
    form = AccountReassignForm(request.POST, owners=services.assignable_owners(request.user))
    if form.is_valid():
        try:
            services.customer_reassign(customer=customer, owner=form.cleaned_data["owner"], by=request.user)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, f"{customer.name} now belongs to {customer.owner}.")
            url = reverse("crm:account_detail", args=[customer.pk])
            if request.htmx:
                return HttpResponse(status=204, headers={"HX-Redirect": url})
            return redirect(url)
    if request.htmx:
        return render(request, "crm/partials/account_reassign.html", {"customer": customer, "reassign_form": form},
                      status=422)
    return _account_page(request, customer, status=422, reassign_form=form)


@login_required
@GET_POST
def account_mark_lost(request, pk: int):
    customer = pages.account_for(request.user, pk)
    form = MarkLostForm(request.POST or None)
    if form.is_bound and form.is_valid():
        try:
            services.customer_mark_lost(customer=customer, reason=form.cleaned_data["reason"],
                                        note=form.cleaned_data["note"])
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            if not request.htmx:
                messages.success(request, f"{customer.name} marked lost.")
                return redirect("crm:account_detail", pk=customer.pk)
            return render(request, "crm/partials/account_summary.html",
                          _summary_context(request, customer, saved="Marked lost."))
    if not request.htmx:
        return _account_page(request, customer, status=_status(form), lost_form=form)
    return render(request, "crm/partials/account_summary.html",
                  _summary_context(request, customer, lost_form=form), status=_status(form))


# -- people ---------------------------------------------------------------------------------


def _people_response(request, customer, *, status: int = 200, **extra):
    people = list(customer.people.order_by("-is_primary", "last_name", "first_name", "id"))
    context = {"customer": customer, "people": people, **extra}
    if not request.htmx:
        if status == 200 and not extra.get("person_form") and not extra.get("edit_form"):
            return redirect(reverse("crm:account_detail", args=[customer.pk]) + "#dmu")
        return _account_page(request, customer, status=status, **extra)
    return render(request, "crm/partials/account_people.html", context, status=status)


@login_required
@GET_POST
def person_create(request, pk: int):
    customer = pages.account_for(request.user, pk)
    form = PersonForm(request.POST or None)
    if form.is_bound and form.is_valid():
        try:
            person = services.person_add(customer=customer, **form.cleaned_data)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            return _people_response(request, customer, saved=f"{person} added.")
    return _people_response(request, customer, status=_status(form), person_form=form)


def _visible_person(request, pk: int) -> Person:
    return get_object_or_404(Person.objects.visible_to(request.user).select_related("customer"), pk=pk)


@login_required
@GET_POST
def person_edit(request, pk: int):
    person = _visible_person(request, pk)
    form = PersonForm(request.POST or None, instance=person)
    if form.is_bound and form.is_valid():
        try:
            services.person_update(person=person, data=form.cleaned_data)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            return _people_response(request, person.customer, saved=f"{person} saved.")
    return _people_response(request, person.customer, status=_status(form), edit_form=form, editing=person.pk)


@login_required
@require_POST
def person_remove(request, pk: int):
    person = _visible_person(request, pk)
    name = str(person)
    services.person_remove(person=person, removed_by=request.user)
    return _people_response(request, person.customer, saved=f"{name} removed.")


# -- holdings and usage ---------------------------------------------------------------------


def _holdings_response(request, customer, *, status: int = 200, **extra):
    from crm.views.salesperson import _facets_context

    if not request.htmx:
        if status == 200 and not extra.get("holding_form") and not extra.get("usage_form"):
            return redirect(reverse("crm:account_detail", args=[customer.pk]) + "?tab=holdings")
        return _account_page(request, customer, status=status, tab="holdings", **extra)
    context = _facets_context(customer, request, tab="holdings")
    context.update(extra)
    return render(request, "crm/partials/facets.html", context, status=status)


@login_required
@GET_POST
def holding_create(request, pk: int):
    customer = pages.account_for(request.user, pk)
    form = HoldingForm(request.POST or None)
    if form.is_bound and form.is_valid():
        try:
            holding = services.holding_add(customer=customer, **form.cleaned_data)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            return _holdings_response(request, customer, saved=f"{holding.product.name} added.")
    return _holdings_response(request, customer, status=_status(form), holding_form=form)


@login_required
@GET_POST
def usage_create(request, pk: int):
    holding = get_object_or_404(
        Holding.objects.visible_to(request.user).select_related("customer__owner", "product"), pk=pk
    )
    form = UsageForm(request.POST or None, holding=holding)
    if form.is_bound and form.is_valid():
        try:
            with transaction.atomic():
                services.usage_record(holding=holding, **form.cleaned_data)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            return _holdings_response(request, holding.customer, saved=f"Usage of {holding.product.name} recorded.")
    return _holdings_response(request, holding.customer, status=_status(form), usage_form=form,
                              usage_holding=holding.pk)
