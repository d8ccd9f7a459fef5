"""Routes of the web pages (mounted at the site root)."""

from django.urls import path

from crm.exports import urlpatterns as export_urls
from crm.views import accounts, imports, manager, next_actions, privacy, salesperson, workspace
from crm.webhooks.urls import urlpatterns as webhook_urls

app_name = "crm"

urlpatterns = [
    path("", salesperson.home, name="home"),
    path("my-day/", salesperson.my_day, name="my_day"),
    path("customers/", salesperson.account_list, name="account_list"),
    path("customers/new/", accounts.account_create, name="account_create"),
    path("customers/duplicates/", accounts.account_duplicates, name="account_duplicates"),
    path("customers/<int:pk>/", salesperson.account_detail, name="account_detail"),
    path("customers/<int:pk>/summary/", accounts.account_summary, name="account_summary"),
    path("customers/<int:pk>/edit/", accounts.account_edit, name="account_edit"),
    path("customers/<int:pk>/reassign/", accounts.account_reassign, name="account_reassign"),
    path("customers/<int:pk>/lost/", accounts.account_mark_lost, name="account_mark_lost"),
    path("customers/<int:pk>/people/new/", accounts.person_create, name="person_create"),
    path("people/<int:pk>/edit/", accounts.person_edit, name="person_edit"),
    path("people/<int:pk>/remove/", accounts.person_remove, name="person_remove"),
    path("people/<int:pk>/personal-data/", privacy.person_personal_data, name="person_personal_data"),
    path("people/<int:pk>/erase/", privacy.person_erase, name="person_erase"),
    path("customers/<int:pk>/holdings/new/", accounts.holding_create, name="holding_create"),
    path("holdings/<int:pk>/usage/new/", accounts.usage_create, name="usage_create"),
    path("customers/<int:pk>/facets/", salesperson.account_facets, name="account_facets"),
    path("customers/<int:pk>/contacts/", salesperson.contact_create, name="contact_create"),
    path("customers/<int:pk>/events/", salesperson.event_create, name="event_create"),
    path("opportunities/<int:pk>/status/", salesperson.opportunity_status, name="opportunity_status"),
    path("follow-ups/<int:pk>/done/", salesperson.follow_up_done, name="follow_up_done"),
    path("tasks/", workspace.task_list, name="task_list"),
    path("tasks/new/", workspace.task_create, name="task_create"),
    path("tasks/<int:pk>/complete/", workspace.task_complete, name="task_complete"),
    path("tasks/<int:pk>/reopen/", workspace.task_reopen, name="task_reopen"),
    path("tasks/<int:pk>/snooze/", workspace.task_snooze, name="task_snooze"),
    path("tasks/<int:pk>/reassign/", workspace.task_reassign, name="task_reassign"),
    path("search/", workspace.search, name="search"),
    path("opportunities/", workspace.opportunity_list, name="opportunity_list"),
    path("opportunities/<int:pk>/act/", workspace.opportunity_act, name="opportunity_act"),
    path("next-actions/", next_actions.next_action_list, name="next_actions"),
    path("dashboard/next-actions/", next_actions.team_next_actions, name="team_next_actions"),
    path("dashboard/", manager.dashboard, name="dashboard"),
    path("dashboard/movers/", manager.dashboard_movers, name="dashboard_movers"),
    path("analytics/", manager.analytics, name="analytics"),
    path("clv/runs/", manager.clv_runs, name="clv_runs"),
    path("clv/runs/recompute/", manager.clv_recompute, name="clv_recompute"),
    path("clv/runs/progress/", manager.clv_progress, name="clv_progress"),
    path("imports/", imports.import_start, name="import_start"),
    path("imports/<int:pk>/", imports.import_detail, name="import_detail"),
    path("imports/<int:pk>/preview/", imports.import_preview, name="import_preview"),
    path("imports/<int:pk>/file/", imports.import_replace_file, name="import_replace_file"),
    path("imports/<int:pk>/run/", imports.import_run, name="import_run"),
    path("imports/<int:pk>/progress/", imports.import_progress, name="import_progress"),
    *webhook_urls,
    *export_urls,
]
