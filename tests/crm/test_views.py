"""The salesperson pages: who may open what, the quick forms, opportunity actions, query bounds."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from crm.models import Contact, Customer, Event, Opportunity
from tests.crm import factories as f

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def rep(sales_org):
    return sales_org["north_rep1"]


@pytest.fixture
def account(rep):
    c = f.customer(name="Acme Tools", owner=rep, lifecycle_stage=Customer.Stage.RETAINED)
    f.person(customer=c, first_name="Ada", last_name="Lovelace", dmu_role="decision_maker")
    return c


def login(client, user):
    client.force_login(user)
    return client


# -- access ---------------------------------------------------------------------------------


def test_pages_need_login(client):
    for name in ("crm:my_day", "crm:account_list", "crm:dashboard", "crm:clv_runs", "crm:analytics"):
        response = client.get(reverse(name))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_login_page_renders_labelled_fields(client):
    response = client.get(reverse("login"))
    html = response.content.decode()
    assert response.status_code == 200
    assert '<label for="id_username">' in html
    assert '<label for="id_password">' in html


def test_login_with_bad_password_shows_error_and_keeps_username(client, rep):
    response = client.post(reverse("login"), {"username": rep.username, "password": "wrong"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "Please enter a correct username and password" in html
    assert f'value="{rep.username}"' in html


def test_login_then_home_sends_salesperson_to_my_day_and_manager_to_dashboard(client, sales_org):
    client.post(reverse("login"), {"username": "north_rep1", "password": "pw-Secret-123"})
    assert client.get("/")["Location"] == reverse("crm:my_day")
    client.post(reverse("logout"))
    client.post(reverse("login"), {"username": "north_manager", "password": "pw-Secret-123"})
    assert client.get("/")["Location"] == reverse("crm:dashboard")


def test_password_change_page_renders(client, rep):
    response = login(client, rep).get(reverse("password_change"))
    assert response.status_code == 200
    assert 'for="id_new_password1"' in response.content.decode()


def test_salesperson_gets_403_page_on_manager_pages(client, rep):
    login(client, rep)
    for name in ("crm:dashboard", "crm:clv_runs", "crm:analytics"):
        response = client.get(reverse(name))
        assert response.status_code == 403
        assert "You are not allowed to open this page" in response.content.decode()
        assert "My day" in response.content.decode()  # the app's layout, not a bare error


def test_another_reps_account_is_a_404_page(client, sales_org, account):
    login(client, sales_org["north_rep2"])
    response = client.get(reverse("crm:account_detail", args=[account.pk]))
    assert response.status_code == 404
    html = response.content.decode()
    assert "not yours to see" in html
    assert "Acme Tools" not in html


def test_other_teams_manager_cannot_see_account_but_own_manager_can(client, sales_org, account):
    assert login(client, sales_org["south_manager"]).get(
        reverse("crm:account_detail", args=[account.pk])
    ).status_code == 404
    assert login(client, sales_org["north_manager"]).get(
        reverse("crm:account_detail", args=[account.pk])
    ).status_code == 200


def test_unknown_url_renders_404_in_layout(client, rep):
    response = login(client, rep).get("/no-such-page/")
    assert response.status_code == 404
    assert "Skip to content" in response.content.decode()


# -- my accounts ------------------------------------------------------------------------------


def test_account_list_shows_only_visible_accounts(client, sales_org, account):
    f.customer(name="Other Rep Co", owner=sales_org["north_rep2"])
    html = login(client, sales_org["north_rep1"]).get(reverse("crm:account_list")).content.decode()
    assert "Acme Tools" in html
    assert "Other Rep Co" not in html


def test_account_list_search_and_filters(client, rep, account):
    f.customer(name="Globex", owner=rep, lifecycle_stage=Customer.Stage.PROSPECT, relationship_type="strategic")
    login(client, rep)
    html = client.get(reverse("crm:account_list"), {"q": "acme"}).content.decode()
    assert "Acme Tools" in html
    assert "Globex" not in html
    html = client.get(reverse("crm:account_list"), {"stage": "prospect"}).content.decode()
    assert "Globex" in html
    assert "Acme Tools" not in html
    html = client.get(reverse("crm:account_list"), {"relationship": "strategic"}).content.decode()
    assert "Globex" in html
    assert "Acme Tools" not in html
    html = client.get(reverse("crm:account_list"), {"q": "zzz"}).content.decode()
    assert "No account matches these filters" in html


def test_account_list_sorts_by_last_contact(client, rep):
    old = f.customer(name="Old Contact", owner=rep)
    new = f.customer(name="New Contact", owner=rep)
    f.customer(name="Never Contacted", owner=rep)
    f.contact(customer=old, occurred_at=timezone.now() - timedelta(days=90))
    f.contact(customer=new, occurred_at=timezone.now() - timedelta(days=1))
    login(client, rep)
    html = client.get(reverse("crm:account_list"), {"sort": "-last_contact"}).content.decode()
    assert html.index("New Contact") < html.index("Old Contact") < html.index("Never Contacted")
    html = client.get(reverse("crm:account_list"), {"sort": "last_contact"}).content.decode()
    assert html.index("Old Contact") < html.index("New Contact") < html.index("Never Contacted")


def test_account_list_htmx_returns_results_partial(client, rep, account):
    response = login(client, rep).get(reverse("crm:account_list"), {"q": "acme"}, HTTP_HX_TARGET="account-results",
                                      **HTMX)
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="account-results"')
    assert "<html" not in html
    assert "Acme Tools" in html
    assert "HX-Request" in response["Vary"]


def test_account_list_empty_state_tells_what_to_do(client, sales_org):
    html = login(client, sales_org["admin"]).get(reverse("crm:account_list")).content.decode()
    assert "No accounts yet" in html
    assert "seed_demo" in html


def test_account_list_paginates(client, rep):
    Customer.objects.bulk_create([Customer(name=f"Bulk {i:03d}", owner=rep) for i in range(60)])
    login(client, rep)
    html = client.get(reverse("crm:account_list"), {"sort": "name"}).content.decode()
    assert "60 accounts" in html
    assert "Bulk 000" in html
    assert "Bulk 025" not in html
    html = client.get(reverse("crm:account_list"), {"sort": "name", "page": 2}).content.decode()
    assert "Bulk 025" in html
    assert "Bulk 000" not in html


def test_account_list_query_count_is_bounded(client, rep, django_assert_max_num_queries):
    Customer.objects.bulk_create([Customer(name=f"Many {i}", owner=rep) for i in range(300)])
    customers = list(Customer.objects.filter(owner=rep)[:100])
    Contact.objects.bulk_create(
        [Contact(customer=c, channel="call", subject="hi", occurred_at=timezone.now()) for c in customers]
    )
    login(client, rep)
    with django_assert_max_num_queries(8):
        response = client.get(reverse("crm:account_list"), {"sort": "-last_contact"})
    assert response.status_code == 200


# -- account 360 ------------------------------------------------------------------------------


def test_account_360_shows_facets_people_and_opportunities(client, rep, account):
    product = f.product(name="Analytics Pro", capacity_unit="seats", capacity_per_unit=10)
    holding = f.holding(customer=account, product=product, quantity=5)
    f.usage(holding=holding, used=45, capacity=50, satisfaction=4)
    f.purchase(customer=account, product=product, amount=500, unit_price=100, quantity=5)
    f.contact(customer=account, subject="Quarterly review")
    f.event(customer=account, kind=Event.Kind.MERGER, description="Merged with Initech")
    f.opportunity(customer=account, product=f.product(name="Data Connector"), expected_value=1200,
                  evidence="78% of customers who hold Analytics Pro also hold Data Connector.")
    html = login(client, rep).get(reverse("crm:account_detail", args=[account.pk])).content.decode()
    for text in ("Acme Tools", "Ada Lovelace", "Decision maker", "Quarterly review", "Merger or acquisition",
                 "Analytics Pro", "90% of capacity", "78% of customers who hold", "Accept", "Dismiss"):
        assert text in html, text
    assert "No CLV" in html  # no run yet: the header says so instead of failing


def test_timeline_is_newest_first_and_filterable(client, rep, account):
    f.contact(customer=account, subject="Older call", occurred_at=timezone.now() - timedelta(days=5))
    f.event(customer=account, kind=Event.Kind.FUNDING, occurred_at=timezone.now() - timedelta(days=1))
    login(client, rep)
    html = client.get(reverse("crm:account_detail", args=[account.pk])).content.decode()
    assert html.index("Funding") < html.index("Older call")
    html = client.get(reverse("crm:account_facets", args=[account.pk]), {"tab": "timeline", "facet": "contact"},
                      **HTMX).content.decode()
    assert "Older call" in html
    assert "Funding" not in html
    assert html.lstrip().startswith('<section class="card" id="facets"')


@pytest.mark.parametrize(("tab", "expected"), [("holdings", "No products held"), ("contacts", "No contacts yet"),
                                               ("events", "No events yet"), ("purchases", "No purchases yet")])
def test_facet_tabs_render_with_empty_states(client, rep, account, tab, expected):
    html = login(client, rep).get(reverse("crm:account_facets", args=[account.pk]), {"tab": tab},
                                  **HTMX).content.decode()
    assert expected in html
    assert f'?tab={tab}" aria-selected="true"' in html


def test_account_360_query_count_is_bounded(client, rep, account, django_assert_max_num_queries):
    person = account.people.first()
    product = f.product()
    for i in range(30):
        c = f.contact(customer=account, subject=f"Call {i}")
        c.people.add(person)
        f.event(customer=account)
        f.purchase(customer=account, product=product)
        f.usage(holding=f.holding(customer=account, product=f.product()), used=i)
        f.opportunity(customer=account, product=f.product())
        f.task(customer=account, assigned_to=rep, title=f"Task {i}")
    login(client, rep)
    with django_assert_max_num_queries(20):
        assert client.get(reverse("crm:account_detail", args=[account.pk])).status_code == 200
    with django_assert_max_num_queries(8):
        assert client.get(reverse("crm:account_facets", args=[account.pk]), {"tab": "holdings"}).status_code == 200


def test_account_360_lists_open_tasks_and_offers_add_task(client, rep, account):
    from datetime import timedelta

    from django.utils import timezone

    today = timezone.localdate()
    for i in range(10):
        f.task(customer=account, assigned_to=rep, title=f"Open task {i}", due_on=today + timedelta(days=i))
    f.task(customer=account, assigned_to=rep, title="Finished task", due_on=today, done_at=timezone.now())
    f.task(customer=f.customer(owner=rep), assigned_to=rep, title="Other account's task", due_on=today)
    html = login(client, rep).get(reverse("crm:account_detail", args=[account.pk])).content.decode()
    assert "10 open" in html
    assert "Open task 0" in html
    assert "Due today" in html
    assert "Open task 7" in html  # the first few, soonest due first
    assert "Open task 8" not in html
    assert "Finished task" not in html
    assert "Other account's task" not in html
    assert f'{reverse("crm:task_create")}?customer={account.pk}">Add task</a>' in html
    form = client.get(reverse("crm:task_create"), {"customer": account.pk}).content.decode()
    assert account.name in form


# -- quick forms --------------------------------------------------------------------------------


def test_quick_contact_via_htmx_saves_and_returns_fresh_form_and_timeline(client, rep, account):
    person = account.people.first()
    response = login(client, rep).post(
        reverse("crm:contact_create", args=[account.pk]),
        {"channel": "meeting", "direction": "outbound", "subject": "Renewal talk", "people": [person.pk],
         "follow_up_on": (timezone.localdate() + timedelta(days=7)).isoformat()},
        **HTMX,
    )
    assert response.status_code == 200
    html = response.content.decode()
    contact = Contact.objects.get(customer=account)
    assert contact.subject == "Renewal talk"
    assert contact.salesperson == rep
    assert list(contact.people.all()) == [person]
    assert "Contact logged." in html
    assert 'id="facets" aria-labelledby="facets-title" hx-swap-oob="true"' in html
    assert html.index('id="contact-' + str(contact.pk) + '"') > html.index("hx-swap-oob")
    assert 'value="Renewal talk"' not in html  # the form is fresh again
    assert '<span id="last-contact" hx-swap-oob="true">' in html


def test_quick_contact_with_bad_values_shows_errors_beside_fields_and_keeps_text(client, rep, account):
    response = login(client, rep).post(
        reverse("crm:contact_create", args=[account.pk]),
        {"channel": "call", "direction": "outbound", "subject": "Budget for next year", "notes": "They liked it",
         "occurred_at": (timezone.now() + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M"),
         "follow_up_on": "not-a-date"},
        **HTMX,
    )
    assert response.status_code == 422
    html = response.content.decode()
    assert "cannot be in the future" in html
    assert "Enter a valid date." in html
    assert 'value="Budget for next year"' in html
    assert "They liked it" in html
    assert 'id="contact-follow_up_on_error"' in html
    assert not Contact.objects.exists()


def test_quick_contact_missing_subject(client, rep, account):
    response = login(client, rep).post(reverse("crm:contact_create", args=[account.pk]),
                                       {"channel": "call", "direction": "outbound", "subject": "   "}, **HTMX)
    assert response.status_code == 422
    assert "This field is required." in response.content.decode()


def test_quick_contact_rejects_person_of_another_customer(client, rep, account):
    stranger = f.person(customer=f.customer(owner=rep), last_name="Stranger")
    response = login(client, rep).post(
        reverse("crm:contact_create", args=[account.pk]),
        {"channel": "call", "direction": "outbound", "subject": "Hi", "people": [stranger.pk]}, **HTMX,
    )
    assert response.status_code == 422
    assert "Select a valid choice" in response.content.decode()
    assert not Contact.objects.exists()


def test_quick_contact_without_htmx_redirects_back(client, rep, account):
    response = login(client, rep).post(reverse("crm:contact_create", args=[account.pk]),
                                       {"channel": "email", "direction": "inbound", "subject": "Complaint"})
    assert response.status_code == 302
    assert Contact.objects.get().direction == "inbound"


def test_quick_contact_on_invisible_account_is_404_and_writes_nothing(client, sales_org, account):
    response = login(client, sales_org["south_rep1"]).post(
        reverse("crm:contact_create", args=[account.pk]), {"channel": "call", "subject": "sneaky"}, **HTMX
    )
    assert response.status_code == 404
    assert not Contact.objects.exists()


def test_quick_event_saves_and_bad_kind_is_rejected(client, rep, account):
    login(client, rep)
    bad = client.post(reverse("crm:event_create", args=[account.pk]),
                      {"kind": "alien_landing", "impact": "neutral", "description": "keep me"}, **HTMX)
    assert bad.status_code == 422
    assert "Select a valid choice" in bad.content.decode()
    assert "keep me" in bad.content.decode()
    ok = client.post(reverse("crm:event_create", args=[account.pk]),
                     {"kind": "leadership_change", "impact": "negative", "description": "New CFO"}, **HTMX)
    assert ok.status_code == 200
    event = Event.objects.get()
    assert event.recorded_by == rep
    assert event.impact == "negative"
    assert "Event recorded." in ok.content.decode()
    assert "New CFO" in ok.content.decode()


# -- opportunities and follow-ups ----------------------------------------------------------------


def test_accept_opportunity_via_htmx_returns_updated_card(client, rep, account):
    opp = f.opportunity(customer=account)
    response = login(client, rep).post(reverse("crm:opportunity_status", args=[opp.pk]), {"status": "accepted"},
                                       **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    opp.refresh_from_db()
    assert opp.status == Opportunity.Status.ACCEPTED
    assert opp.status_changed_by == rep
    assert html.lstrip().startswith(f'<article class="opp" id="opp-{opp.pk}"')
    assert 'data-status="accepted"' in html
    assert 'value="won"' in html
    assert 'value="accepted"' not in html


@pytest.mark.parametrize("status", ["dismissed", "won", "lost"])
def test_close_opportunity_hides_actions(client, rep, account, status):
    opp = f.opportunity(customer=account)
    html = login(client, rep).post(reverse("crm:opportunity_status", args=[opp.pk]), {"status": status},
                                   **HTMX).content.decode()
    opp.refresh_from_db()
    assert opp.status == status
    assert "<form" not in html


def test_opportunity_bad_status_is_422_and_unchanged(client, rep, account):
    opp = f.opportunity(customer=account)
    response = login(client, rep).post(reverse("crm:opportunity_status", args=[opp.pk]), {"status": "expired"},
                                       **HTMX)
    assert response.status_code == 422
    opp.refresh_from_db()
    assert opp.status == "open"


def test_opportunity_of_another_rep_is_404(client, sales_org, account):
    opp = f.opportunity(customer=account)
    response = login(client, sales_org["north_rep2"]).post(reverse("crm:opportunity_status", args=[opp.pk]),
                                                          {"status": "won"}, **HTMX)
    assert response.status_code == 404
    opp.refresh_from_db()
    assert opp.status == "open"


# -- my day -----------------------------------------------------------------------------------------


def test_my_day_lists_due_and_overdue_follow_ups_and_marks_done(client, rep, account):
    today = timezone.localdate()
    due = f.contact(customer=account, subject="Send pricing", salesperson=rep, follow_up_on=today)
    f.contact(customer=account, subject="Overdue thing", salesperson=rep, follow_up_on=today - timedelta(days=3))
    f.contact(customer=account, subject="Next week thing", salesperson=rep, follow_up_on=today + timedelta(days=7))
    f.contact(customer=account, subject="Later thing", salesperson=rep, follow_up_on=today + timedelta(days=8))
    f.contact(customer=account, subject="Someone else's promise", follow_up_on=today,
              salesperson=rep.team.manager)
    f.event(customer=account, kind=Event.Kind.COMPLAINT, occurred_at=timezone.now() - timedelta(days=2))
    f.opportunity(customer=account, product=f.product(name="Upgrade Max"), expected_value=5000)
    login(client, rep)
    html = client.get(reverse("crm:my_day")).content.decode()
    assert "Send pricing" in html
    assert "Overdue thing" in html
    assert "Next week thing" in html  # in "Next 7 days"
    assert "Later thing" not in html
    assert "Someone else" not in html
    assert "Overdue since" in html
    assert "Complaint" in html
    assert "Upgrade Max" in html
    response = client.post(reverse("crm:follow_up_done", args=[due.pk]), **HTMX)
    assert response.status_code == 200
    assert "Done: Send pricing" in response.content.decode()
    due.refresh_from_db()
    assert due.follow_up_done_at is not None
    assert "Send pricing" not in client.get(reverse("crm:my_day")).content.decode()


def test_my_day_empty_states(client, rep):
    html = login(client, rep).get(reverse("crm:my_day")).content.decode()
    assert "You have no accounts yet" in html
    assert "Nothing due today." in html


def test_my_day_query_count_is_bounded(client, rep, django_assert_max_num_queries):
    today = timezone.localdate()
    for i in range(40):
        c = f.customer(owner=rep)
        f.contact(customer=c, salesperson=rep, follow_up_on=today, subject=f"fu {i}")
        f.event(customer=c, occurred_at=timezone.now())
        f.opportunity(customer=c)
    login(client, rep)
    # The next-best-action card adds its follow-ups and offers (no CLV run here) and, on the first
    # view of the day, the read and the insert of the day's record: 13 in all.
    with django_assert_max_num_queries(14):
        assert client.get(reverse("crm:my_day")).status_code == 200


def test_manager_filters_accounts_by_owner_within_their_teams(client, sales_org, account):
    f.customer(name="Second Rep Co", owner=sales_org["north_rep2"])
    client.force_login(sales_org["north_manager"])
    html = client.get(reverse("crm:account_list"), {"owner": sales_org["north_rep2"].pk}).content.decode()
    assert "Second Rep Co" in html
    assert "Acme Tools" not in html
    # Someone outside the manager's teams is not a valid choice: an error beside the field, no filter applied.
    html = client.get(reverse("crm:account_list"), {"owner": sales_org["south_rep1"].pk}).content.decode()
    assert 'id="id_owner_error"' in html
    assert "Acme Tools" in html


def test_salesperson_has_no_owner_filter(client, rep):
    html = login(client, rep).get(reverse("crm:account_list")).content.decode()
    assert 'name="owner"' not in html
