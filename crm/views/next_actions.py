"""Next best action pages: a salesperson's full list, and the team's lists with what was acted on (managers).

Thin: check who may see whose list, call the selector, record the day's list on first view, render.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts.models import User
from crm.models import Opportunity
from crm.next_action_records import next_actions_record_shown, own_next_actions
from crm.opportunities.services import outcome_rates
from crm.selectors import next_actions as nba
from crm.views.access import manager_required


@login_required
@require_GET
def next_action_list(request):
    raw = request.GET.get("user")
    user_id = int(raw) if raw and raw.isascii() and raw.isdigit() else None
    if raw and user_id is None:
        raise Http404("No such salesperson.")
    try:
        owner = nba.list_owner_for(request.user, user_id)
    except User.DoesNotExist:
        raise Http404("No such salesperson.") from None
    except PermissionError as exc:
        raise PermissionDenied(str(exc)) from None
    result = own_next_actions(owner) if owner == request.user else nba.next_actions(owner, viewer=request.user)
    page = Paginator(result.items, nba.PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"nba": result, "page": page, "owner": owner, "own": owner == request.user}
    return render(request, "crm/next_actions.html", context)


@manager_required
@require_GET
def team_next_actions(request):
    team = nba.team_next_actions(request.user, on_lists=lambda lists: next_actions_record_shown(lists=lists))
    rates = outcome_rates()
    context = {
        **team,
        "rates": rates,
        "rule_rates": sorted(rates.rules.values(), key=lambda r: (r.kind, -r.win_rate, r.rule)),
        "kind_rates": list(rates.kinds.values()),
    }
    for r in [*context["kind_rates"], *context["rule_rates"]]:
        r.kind_label = Opportunity.Kind(r.kind).label if r.kind in Opportunity.Kind.values else r.kind
    return render(request, "crm/team_next_actions.html", context)
