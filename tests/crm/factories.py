"""Small builders for CRM rows in tests: valid by default, any field overridable."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from decimal import Decimal

from clv.summary import summary_apply
from crm.models import Contact, Customer, Event, Holding, Opportunity, Person, Product, Purchase, Task, Usage

_seq = itertools.count(1)


def customer(**kw) -> Customer:
    n = next(_seq)
    kw.setdefault("name", f"Customer {n}")
    return Customer.objects.create(**kw)


def product(**kw) -> Product:
    n = next(_seq)
    kw.setdefault("sku", f"SKU-{n}")
    kw.setdefault("name", f"Product {n}")
    kw.setdefault("family", f"Family {n}")
    kw.setdefault("list_price", Decimal("100.00"))
    kw.setdefault("unit_cost", Decimal("40.00"))
    return Product.objects.create(**kw)


def purchase(**kw) -> Purchase:
    kw.setdefault("customer", kw.get("customer") or customer())
    kw.setdefault("unit_price", Decimal("10.00"))
    kw.setdefault("amount", Decimal("10.00"))
    kw.setdefault("purchased_at", datetime(2026, 1, 15, 10, 0, tzinfo=UTC))
    made = Purchase.objects.create(**kw)
    summary_apply(customer_ids=[made.customer_id])  # as crm.services does after every purchase write
    return made


def holding(**kw) -> Holding:
    kw.setdefault("customer", kw.get("customer") or customer())
    kw.setdefault("product", kw.get("product") or product())
    kw.setdefault("since", date(2025, 1, 1))
    return Holding.objects.create(**kw)


def usage(**kw) -> Usage:
    kw.setdefault("holding", kw.get("holding") or holding())
    kw.setdefault("period_start", date(2026, 1, 1))
    kw.setdefault("period_end", date(2026, 1, 31))
    kw.setdefault("used", Decimal("10"))
    return Usage.objects.create(**kw)


def person(**kw) -> Person:
    kw.setdefault("customer", kw.get("customer") or customer())
    kw.setdefault("last_name", "Doe")
    return Person.objects.create(**kw)


def contact(**kw) -> Contact:
    kw.setdefault("customer", kw.get("customer") or customer())
    kw.setdefault("channel", Contact.Channel.CALL)
    kw.setdefault("subject", "Check-in")
    kw.setdefault("occurred_at", datetime(2026, 2, 1, 9, 0, tzinfo=UTC))
    made = Contact.objects.create(**kw)
    if made.follow_up_on is not None:  # as crm.services does: the follow-up is a task
        from crm.services import follow_up_sync

        follow_up_sync(contacts=[made])
    return made


def task(**kw) -> Task:
    kw.setdefault("customer", kw.get("customer") or customer())
    kw.setdefault("title", "Call about the renewal")
    kw.setdefault("due_on", date.today())
    return Task.objects.create(**kw)


def event(**kw) -> Event:
    kw.setdefault("customer", kw.get("customer") or customer())
    kw.setdefault("kind", Event.Kind.FUNDING)
    kw.setdefault("occurred_at", datetime(2026, 2, 1, 9, 0, tzinfo=UTC))
    return Event.objects.create(**kw)


def opportunity(**kw) -> Opportunity:
    kw.setdefault("customer", kw.get("customer") or customer())
    kw.setdefault("product", kw.get("product") or product())
    kw.setdefault("kind", Opportunity.Kind.CROSS_SELL)
    kw.setdefault("evidence", "Customers like this one hold it.")
    kw.setdefault("generated_at", datetime(2026, 3, 1, tzinfo=UTC))
    return Opportunity.objects.create(**kw)
