"""The shared pagination block (crm/partials/pagination.html) on the opportunities, tasks and
next-best-action pages: links keep the filters, the htmx partials carry it, one page shows none."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from crm import services
from tests.crm import factories as f

pytestmark = pytest.mark.django_db
HTMX_OPPS = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "opp-results"}
HTMX_TASKS = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "task-results"}


def nav(html: str) -> str:
    found = re.findall(r'<nav class="pagination" aria-label="Pages">.*?</nav>', html, re.S)
    assert len(found) == 1, found
    return found[0]


def link(html: str, rel: str) -> str | None:
    match = re.search(rf'href="([^"]*)" rel="{rel}"', nav(html))
    return match.group(1).replace("&amp;", "&") if match else None


@pytest.fixture
def rep(sales_org):
    return sales_org["north_rep1"]


def test_opportunities_pages_keep_the_filters_in_the_links_also_when_htmx_swaps_the_results(client, rep):
    for i in range(30):
        f.opportunity(customer=f.customer(owner=rep), kind="cross_sell", expected_value=Decimal(10 + i))
    client.force_login(rep)
    first = client.get(reverse("crm:opportunity_list"), {"kind": "cross_sell"}).content.decode()
    assert link(first, "prev") is None
    assert link(first, "next") == "?kind=cross_sell&page=2"
    assert "Showing 1–25 of 30" in nav(first)
    partial = client.get(reverse("crm:opportunity_list"), {"kind": "cross_sell", "page": 2}, **HTMX_OPPS)
    html = partial.content.decode()
    assert html.lstrip().startswith('<section id="opp-results"')
    assert link(html, "prev") == "?kind=cross_sell&page=1"
    assert link(html, "next") is None
    assert "Showing 26–30 of 30" in nav(html)


def test_tasks_pages_keep_the_filters_in_the_links_also_when_htmx_swaps_the_results(client, rep):
    account = f.customer(owner=rep)
    for i in range(27):
        services.task_create(customer=account, title=f"t{i:02d}", due_on=timezone.localdate(), assigned_to=rep)
    client.force_login(rep)
    first = client.get(reverse("crm:task_list"), {"status": "open"}, **HTMX_TASKS).content.decode()
    assert first.lstrip().startswith('<section id="task-results"')
    assert link(first, "next") == "?status=open&page=2"
    second = client.get(reverse("crm:task_list"), {"status": "open", "page": 2}).content.decode()
    assert link(second, "prev") == "?status=open&page=1"
    assert "Showing 26–27 of 27" in nav(second)


def test_next_best_actions_paginate_and_a_single_page_has_no_pagination(client, rep):
    client.force_login(rep)
    for i in range(3):
        f.opportunity(customer=f.customer(owner=rep), expected_value=Decimal(10 + i))
    html = client.get(reverse("crm:next_actions")).content.decode()
    assert 'class="pagination"' not in html
    for i in range(25):
        f.opportunity(customer=f.customer(owner=rep), expected_value=Decimal(100 + i))
    account = f.customer(owner=rep)
    services.task_create(customer=account, title="late", due_on=timezone.localdate() - timedelta(days=3),
                         assigned_to=rep)
    first = client.get(reverse("crm:next_actions")).content.decode()
    assert link(first, "next") == "?page=2"
    second = client.get(reverse("crm:next_actions"), {"page": 2}).content.decode()
    assert link(second, "prev") == "?page=1"
    assert "Showing 26–29 of 29" in nav(second)
