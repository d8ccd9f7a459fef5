"""A purchase line above CRM_PURCHASE_AMOUNT_MAX is refused, with the field named, on every write path."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from accounts.tokens import token_issue
from crm import services
from crm.models import Purchase
from tests.crm import factories as f

pytestmark = pytest.mark.django_db
ABSURD = "9999999999.99"


def test_the_service_refuses_an_implausible_amount_and_unit_price(settings):
    customer = f.customer()
    when = datetime(2026, 1, 15, tzinfo=UTC)
    with pytest.raises(ValidationError) as refused:
        services.purchase_record(customer=customer, purchased_at=when, amount=Decimal(ABSURD))
    assert set(refused.value.message_dict) == {"amount", "unit_price"}
    assert "CRM_PURCHASE_AMOUNT_MAX" in refused.value.message_dict["amount"][0]
    with pytest.raises(ValidationError, match="unit_price"):  # a tiny quantity makes the unit price absurd
        services.purchase_record(customer=customer, purchased_at=when, amount=Decimal("1000000"),
                                 quantity=Decimal("0.001"))
    assert not Purchase.objects.exists()
    settings.CRM_PURCHASE_AMOUNT_MAX = 10**11  # the bound is a setting
    assert services.purchase_record(customer=customer, purchased_at=when, amount=Decimal(ABSURD)).pk


def test_the_api_refuses_it_in_a_single_write_and_in_bulk(sales_org):
    rep = sales_org["north_rep1"]
    f.customer(owner=rep, external_id="C-a1")
    existing = f.purchase(customer=f.customer(owner=rep))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_issue(user=rep, name='tests')[1]}")
    one = client.post("/api/v1/purchases/", {"customer": "C-a1", "amount": ABSURD,
                                              "purchased_at": "2026-03-01T12:00:00Z"}, format="json")
    assert one.status_code == 400
    assert "amount" in {e["field"] for e in one.json()["errors"]}
    bulk = client.post("/api/v1/purchases/bulk/", {"records": [
        {"external_id": "OK-1", "customer": "C-a1", "amount": "10.00", "purchased_at": "2026-03-01T12:00:00Z"},
        {"external_id": "BAD-1", "customer": "C-a1", "amount": ABSURD, "purchased_at": "2026-03-01T12:00:00Z"},
    ]}, format="json")
    assert bulk.status_code == 422
    assert {(e["index"], e["field"]) for e in bulk.json()["errors"]} >= {(1, "amount")}
    assert not Purchase.objects.filter(external_id__in=["OK-1", "BAD-1"]).exists()
    patched = client.patch(f"/api/v1/purchases/{existing.pk}/", {"amount": ABSURD}, format="json")
    assert patched.status_code == 400


def test_the_csv_import_names_the_line(tmp_path):
    path = tmp_path / "purchases.csv"
    path.write_text(f"customer_external_id,purchased_at,amount\nC1,2026-01-01,10\nC1,2026-01-02,{ABSURD}\n")
    with pytest.raises(CommandError, match="line 3: At most 100,000,000.00 per purchase line"):
        call_command("import_purchases", str(path), verbosity=0)
    assert not Purchase.objects.exists()
