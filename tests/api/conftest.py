"""API test helpers: clients holding a real token, and a small book of customers."""

from __future__ import annotations

from datetime import time

import pytest
from rest_framework.test import APIClient

from accounts.tokens import token_issue
from tests.crm import factories as f


@pytest.fixture
def api(sales_org):
    """api(user) -> an APIClient sending that user's freshly issued token."""

    def client_for(user) -> APIClient:
        _, key = token_issue(user=user, name="tests")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        return client

    return client_for


@pytest.fixture
def book(sales_org):
    """Customers of north_rep1 (2), north_rep2 (1) and south_rep1 (1), each with one of every facet."""
    rows = {}
    for name, owner in (("a1", "north_rep1"), ("a2", "north_rep1"), ("b1", "north_rep2"), ("s1", "south_rep1")):
        customer = f.customer(name=f"Customer {name}", owner=sales_org[owner], external_id=f"C-{name}")
        product = f.product(external_id=f"P-{name}")
        holding = f.holding(customer=customer, product=product, external_id=f"H-{name}")
        rows[name] = {
            "customer": customer,
            "product": product,
            "person": f.person(customer=customer, external_id=f"PE-{name}"),
            "purchase": f.purchase(customer=customer, product=product, external_id=f"PU-{name}"),
            "holding": holding,
            "usage": f.usage(holding=holding, external_id=f"U-{name}"),
            "contact": f.contact(customer=customer, external_id=f"CO-{name}"),
            "event": f.event(customer=customer, external_id=f"E-{name}"),
            "opportunity": f.opportunity(customer=customer, product=product, external_id=f"O-{name}"),
            "task": f.task(customer=customer, external_id=f"T-{name}", assigned_to=sales_org[owner],
                           due_time=time(9, 30)),
        }
    return rows
