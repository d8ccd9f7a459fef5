"""The salesperson's workspace: tasks (list, create, complete, snooze, reassign), global search
and the opportunities page. Thin: check input, call one selector or service, render."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from crm import services
from crm.models import Customer, Opportunity
from crm.selectors import workspace as ws
from crm.views.access import is_manager_or_admin
from crm.workspace_forms import (
    OpportunityActionForm,
    OpportunityFilterForm,
    TaskCompleteForm,
    TaskFilterForm,
    TaskForm,
    TaskReassignForm,
    TaskSnoozeForm,
)

# Accounts offered in the new-task form when none is given (the user's own, by name).
TASK_FORM_ACCOUNTS = 300


def _add_service_errors(form, exc: ValidationError) -> None:
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)


def _assignees(user):
    return ws.team_members(user) if is_manager_or_admin(user) else None


# -- tasks ----------------------------------------------------------------------------------


@login_required
@require_GET
def task_list(request):
    assignees = _assignees(request.user)
    form = TaskFilterForm(request.GET or None, assignees=assignees)
    filters = form.filters()
    page = ws.task_page(request.user, page=request.GET.get("page"), **filters)
    customer = None
    if filters.get("customer_id"):
        customer = Customer.objects.visible_to(request.user).filter(pk=filters["customer_id"]).first()
    context = {
        "form": form, "page": page, "filters": filters, "customer": customer,
        "reassign_to": list(assignees) if assignees is not None else None,
        "today": timezone.localdate(), "query": request.GET.urlencode(),
    }
    partial = request.htmx and request.htmx.target == "task-results"
    response = render(request, "crm/partials/task_results.html" if partial else "crm/tasks.html", context)
    patch_vary_headers(response, ["HX-Request", "HX-Target"])
    return response


@login_required
@require_http_methods(["GET", "POST"])
def task_create(request):
    user = request.user
    customers = Customer.objects.visible_to(user)
    fixed = None
    customer_param = request.POST.get("customer") or request.GET.get("customer")
    if customer_param and customer_param.isdigit():
        fixed = customers.filter(pk=int(customer_param)).first()
    offered = customers.filter(pk=fixed.pk) if fixed else customers.filter(owner=user).order_by("name", "id")
    assignees = _assignees(user)
    if request.method == "GET":
        initial = {"due_on": timezone.localdate(), "assigned_to": user.pk}
        if fixed:
            initial["customer"] = fixed.pk
        form = TaskForm(initial=initial, customers=offered[:TASK_FORM_ACCOUNTS], assignees=assignees)
        return render(request, "crm/task_form.html", {"form": form, "fixed": fixed})
    # Validation accepts any visible account (the list shown is only the first few).
    form = TaskForm(request.POST, customers=customers, assignees=assignees)
    status = 422
    if form.is_valid():
        data = form.cleaned_data
        assignee = data.get("assigned_to") or user
        try:
            if assignee != user and not services.can_assign_task(user, assignee):
                raise ValidationError({"assigned_to": "Choose yourself or a salesperson of a team you manage."})
            task = services.task_create(
                customer=data["customer"], title=data["title"], due_on=data["due_on"], due_time=data["due_time"],
                notes=data["notes"], assigned_to=assignee, created_by=user,
            )
        except ValidationError as exc:
            _add_service_errors(form, exc)
        else:
            return redirect(reverse("crm:task_list") + f"?customer={task.customer_id}&status=open")
    form.fields["customer"].queryset = offered[:TASK_FORM_ACCOUNTS]
    return render(request, "crm/task_form.html", {"form": form, "fixed": fixed}, status=status)


def _task_for(request, pk: int):
    return get_object_or_404(ws.tasks_for(request.user), pk=pk)


def _task_response(request, task, *, message: str = "", error: str = "", undo: str = "", status: int = 200):
    """After an action: the task's row again (htmx), with what happened and counts refreshed out of band."""
    if not request.htmx:
        return redirect(request.POST.get("next") or "crm:my_day")
    task = _task_for(request, task.pk)
    context = {
        "task": task, "message": message, "error": error, "undo": undo, "today": timezone.localdate(),
        "reassign_to": list(_assignees(request.user) or []) or None, "on_my_day": request.POST.get("from") == "my_day",
    }
    if context["on_my_day"]:
        context["sections"] = ws.my_day_tasks(request.user, limit=0)["sections"]
    return render(request, "crm/partials/task_row.html", context, status=status)


@login_required
@require_POST
def task_complete(request, pk: int):
    task = _task_for(request, pk)
    form = TaskCompleteForm(request.POST)
    if not form.is_valid():
        return _task_response(request, task, error=" ".join(form.errors.get("outcome", [])), status=422)
    try:
        services.task_complete(task=task, outcome=form.cleaned_data["outcome"])
    except ValidationError as exc:
        return _task_response(request, task, error=" ".join(exc.messages), status=422)
    return _task_response(request, task, message="Done.", undo="reopen")


@login_required
@require_POST
def task_reopen(request, pk: int):
    task = _task_for(request, pk)
    services.task_reopen(task=task)
    return _task_response(request, task, message="Reopened.")


@login_required
@require_POST
def task_snooze(request, pk: int):
    task = _task_for(request, pk)
    form = TaskSnoozeForm(request.POST)
    if not form.is_valid():
        errors = [e for field in form.errors.values() for e in field]
        return _task_response(request, task, error=" ".join(errors), status=422)
    try:
        until = services.snooze_target(form.cleaned_data["until"], on=form.cleaned_data.get("on"))
        services.task_snooze(task=task, until=until)
    except ValidationError as exc:
        return _task_response(request, task, error=" ".join(exc.messages), status=422)
    return _task_response(request, task, message=f"Snoozed to {task.due_on:%-d %b %Y}.")


@login_required
@require_POST
def task_reassign(request, pk: int):
    task = _task_for(request, pk)
    if not is_manager_or_admin(request.user):
        return _task_response(request, task, error="Only managers and admins reassign tasks.", status=403)
    form = TaskReassignForm(request.POST, assignees=ws.team_members(request.user))
    if not form.is_valid():
        return _task_response(request, task, error="Choose yourself or a salesperson of a team you manage.",
                              status=422)
    try:
        services.task_reassign(task=task, assignee=form.cleaned_data["assignee"], by=request.user)
    except ValidationError as exc:
        return _task_response(request, task, error=" ".join(exc.messages), status=422)
    assignee = form.cleaned_data["assignee"]
    return _task_response(request, task, message=f"Reassigned to {assignee.get_full_name() or assignee.username}.")


# -- search ---------------------------------------------------------------------------------


@login_required
@require_GET
def search(request):
    q = request.GET.get("q", "")
    suggest = request.htmx and request.htmx.target == "search-suggest"
    results = ws.search(request.user, q, limit=ws.SEARCH_LIMIT if suggest else ws.SEARCH_PAGE_LIMIT)
    template = "crm/partials/search_suggest.html" if suggest else "crm/search.html"
    response = render(request, template, {"results": results, "q": results.query})
    patch_vary_headers(response, ["HX-Request", "HX-Target"])
    return response


# -- opportunities -------------------------------------------------------------------------


@login_required
@require_GET
def opportunity_list(request):
    form = OpportunityFilterForm(request.GET or None)
    filters = form.filters()
    page = ws.opportunity_page(request.user, page=request.GET.get("page"), **filters)
    customer = None
    if filters.get("customer_id"):
        customer = Customer.objects.visible_to(request.user).filter(pk=filters["customer_id"]).first()
    context = {"form": form, "page": page, "customer": customer, "query": request.GET.urlencode(),
               "dismiss_reasons": Opportunity.DismissReason.choices}
    partial = request.htmx and request.htmx.target == "opp-results"
    response = render(request, "crm/partials/opportunity_results.html" if partial else "crm/opportunities.html",
                      context)
    patch_vary_headers(response, ["HX-Request", "HX-Target"])
    return response


@login_required
@require_POST
def opportunity_act(request, pk: int):
    """Accept, dismiss (with a reason), won or lost from the opportunities page; or undo the last of these."""
    opportunity = get_object_or_404(
        Opportunity.objects.visible_to(request.user).select_related("customer", "customer__owner", "product",
                                                                    "from_product"), pk=pk,
    )
    before = {"status": opportunity.status, "dismiss_reason": opportunity.dismiss_reason,
              "dismiss_note": opportunity.dismiss_note}
    form = OpportunityActionForm(request.POST)
    context = {"opp": opportunity, "dismiss_reasons": Opportunity.DismissReason.choices}
    if form.is_valid():
        data = form.cleaned_data
        try:
            services.opportunity_set_status(
                opportunity=opportunity, status=data["status"], user=request.user,
                dismiss_reason=data["dismiss_reason"], dismiss_note=data["dismiss_note"],
            )
        except ValidationError as exc:
            context["error"] = " ".join(exc.messages)
        else:
            context["message"] = "Undone." if data["undo"] else f"Marked {opportunity.get_status_display().lower()}."
            if not data["undo"]:
                context["undo"] = before
    else:
        context["error"] = " ".join(e for errors in form.errors.values() for e in errors)
    if not request.htmx:
        return redirect("crm:opportunity_list")
    return render(request, "crm/partials/opportunity_row.html", context, status=422 if "error" in context else 200)
