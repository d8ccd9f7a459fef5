"""Writes to customers and their facets: one function per action, one transaction each.

Pages, the API, CSV imports and tasks all call these, so validation, the deletion log
and anything that must follow a write (such as keeping the CLV summary current) live in
one place. Each function validates before saving and raises django's ValidationError
with field messages on bad input.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone

from accounts.models import User
from clv.summary import summary_apply, summary_apply_product
from crm.bulk import bulk_insert
from crm.models import Contact, Customer, Event, Opportunity, Person, Product, Purchase, Tombstone

SYNCED_CHILDREN = ("people", "purchases", "holdings", "contacts", "events", "opportunities")


def _save_new(instance: models.Model) -> models.Model:
    instance.full_clean()
    instance.save()
    return instance


def _apply_changes(instance: models.Model, data: dict[str, Any]) -> list[str]:
    """Set the fields in `data` that differ; returns the names that changed."""
    changed = []
    for field, value in data.items():
        if getattr(instance, field) != value:
            setattr(instance, field, value)
            changed.append(field)
    return changed


@transaction.atomic
def record_update(*, instance: models.Model, data: dict[str, Any]) -> tuple[models.Model, bool]:
    """Update fields of any CRM record; saves (and bumps `updated_at`) only when something changed."""
    customer_before = instance.customer_id if isinstance(instance, Purchase) else None
    changed = _apply_changes(instance, data)
    if not changed:
        return instance, False
    instance.full_clean()
    instance.save(update_fields=[*changed, "updated_at"])
    if isinstance(instance, Purchase):  # the purchase may have moved to another day or customer
        summary_apply(customer_ids=[customer_before, instance.customer_id])
    elif isinstance(instance, Product) and "unit_cost" in changed:
        summary_apply_product(product_id=instance.pk)
    return instance, True


@transaction.atomic
def record_delete(*, instance: models.Model, deleted_by: User | None = None) -> None:
    """Delete a synced record and log a tombstone for it (and for children a cascade removes)."""
    tombstones = [_tombstone(instance, deleted_by)]
    if isinstance(instance, Customer):
        for relation in SYNCED_CHILDREN:
            for child in getattr(instance, relation).only("pk", "external_id"):
                tombstones.append(_tombstone(child, deleted_by))
        for usage in instance.holdings.values_list("usage__pk", "usage__external_id"):
            if usage[0] is not None:
                tombstones.append(
                    Tombstone(model="crm.usage", object_id=usage[0], external_id=usage[1], deleted_by=deleted_by)
                )
    elif instance._meta.label_lower == "crm.holding":
        for usage in instance.usage.only("pk", "external_id"):
            tombstones.append(_tombstone(usage, deleted_by))
    Tombstone.objects.bulk_create(tombstones)
    instance.delete()  # a customer's CLV summary rows go with it (cascade)
    if isinstance(instance, Purchase):
        summary_apply(customer_ids=[instance.customer_id])


def _tombstone(instance: models.Model, deleted_by: User | None) -> Tombstone:
    return Tombstone(
        model=instance._meta.label_lower,
        object_id=instance.pk,
        external_id=getattr(instance, "external_id", None),
        deleted_by=deleted_by,
    )


@transaction.atomic
def customer_create(
    *,
    name: str,
    owner: User | None = None,
    kind: str = Customer.Kind.COMPANY,
    relationship_type: str = Customer.Relationship.TRANSACTIONAL,
    lifecycle_stage: str = Customer.Stage.PROSPECT,
    external_id: str | None = None,
    **fields: Any,
) -> Customer:
    customer = Customer(
        name=name,
        owner=owner,
        kind=kind,
        relationship_type=relationship_type,
        lifecycle_stage=lifecycle_stage,
        external_id=external_id or None,
        **fields,
    )
    return _save_new(customer)


@transaction.atomic
def customer_mark_lost(*, customer: Customer, lost_on: date | None = None) -> Customer:
    customer.lifecycle_stage = Customer.Stage.LOST
    customer.lost_on = lost_on or timezone.localdate()
    customer.full_clean()
    customer.save(update_fields=["lifecycle_stage", "lost_on", "updated_at"])
    return customer


@transaction.atomic
def person_add(*, customer: Customer, last_name: str, external_id: str | None = None, **fields: Any) -> Person:
    return _save_new(Person(customer=customer, last_name=last_name, external_id=external_id or None, **fields))


@transaction.atomic
def purchase_record(
    *,
    customer: Customer,
    purchased_at: datetime,
    amount: Decimal | None = None,
    product=None,
    quantity: Decimal = Decimal("1"),
    unit_price: Decimal | None = None,
    unit_cost: Decimal | None = None,
    order_ref: str = "",
    external_id: str | None = None,
) -> Purchase:
    """Record one purchase line; the amount defaults to quantity × unit price and vice versa."""
    quantity = Decimal(quantity)
    if amount is None and unit_price is None:
        raise ValidationError({"amount": "Give the amount or the unit price."})
    if amount is None:
        amount = (quantity * Decimal(unit_price)).quantize(Decimal("0.01"))
    if unit_price is None:
        unit_price = (Decimal(amount) / quantity).quantize(Decimal("0.01")) if quantity else Decimal(amount)
    purchase = Purchase(
        customer=customer,
        product=product,
        quantity=quantity,
        unit_price=unit_price,
        amount=amount,
        unit_cost=unit_cost,
        purchased_at=purchased_at,
        order_ref=order_ref,
        external_id=external_id or None,
    )
    _save_new(purchase)
    summary_apply(customer_ids=[customer.pk])
    # opps: a won opportunity for this product is realised by this purchase.
    from crm.opportunities.services import opportunities_link_won_purchases

    opportunities_link_won_purchases(purchases=[purchase])
    return purchase


@transaction.atomic
def purchases_bulk_insert(*, columns: list[str], rows: Iterable[tuple]) -> int:
    """Insert many purchase lines at once (seed, CSV import): the one bulk write path for purchases.

    Rows must already be valid (the callers validate each line and name it on error); the
    database's check constraints still refuse anything that must never be stored. The CLV
    summary of the customers written to is recomputed in one set-based pass (at the end of
    the block when called inside clv.summary.summary_deferred(), as the CSV import does).
    """
    customer_column = columns.index("customer_id")
    touched: set[int] = set()

    def noting_customers(rows: Iterable[tuple]):
        for row in rows:
            touched.add(row[customer_column])
            yield row

    written = bulk_insert(Purchase, columns, noting_customers(rows))
    summary_apply(customer_ids=touched)
    return written


@transaction.atomic
def contact_log(
    *,
    customer: Customer,
    salesperson: User | None,
    channel: str,
    subject: str,
    occurred_at: datetime | None = None,
    direction: str = Contact.Direction.OUTBOUND,
    people: Iterable[Person] = (),
    notes: str = "",
    outcome: str = "",
    follow_up_on: date | None = None,
    external_id: str | None = None,
) -> Contact:
    """Log an interaction with the customer's decision-making unit."""
    people = list(people)
    foreign = [p for p in people if p.customer_id != customer.pk]
    if foreign:
        raise ValidationError({"people": "Every person must belong to this customer."})
    contact = _save_new(
        Contact(
            customer=customer,
            salesperson=salesperson,
            channel=channel,
            direction=direction,
            occurred_at=occurred_at or timezone.now(),
            subject=subject,
            notes=notes,
            outcome=outcome,
            follow_up_on=follow_up_on,
            external_id=external_id or None,
        )
    )
    if people:
        contact.people.set(people)
    return contact


@transaction.atomic
def contact_complete_follow_up(*, contact: Contact) -> Contact:
    contact.follow_up_done_at = timezone.now()
    contact.save(update_fields=["follow_up_done_at", "updated_at"])
    return contact


@transaction.atomic
def event_record(
    *,
    customer: Customer,
    kind: str,
    occurred_at: datetime | None = None,
    impact: str = Event.Impact.NEUTRAL,
    description: str = "",
    recorded_by: User | None = None,
    external_id: str | None = None,
) -> Event:
    """Record something that happened in the customer's life or business."""
    return _save_new(
        Event(
            customer=customer,
            kind=kind,
            occurred_at=occurred_at or timezone.now(),
            impact=impact,
            description=description,
            recorded_by=recorded_by,
            external_id=external_id or None,
        )
    )


@transaction.atomic
def opportunity_set_status(*, opportunity: Opportunity, status: str, user: User | None) -> Opportunity:
    """Record what a salesperson did with a suggestion (accepted, dismissed, won, lost)."""
    if status not in Opportunity.Status.values:
        raise ValidationError({"status": f"Unknown status {status!r}."})
    if status == Opportunity.Status.EXPIRED:
        raise ValidationError({"status": "Only the opportunity engine expires suggestions."})
    opportunity.status = status
    opportunity.status_changed_at = timezone.now()
    opportunity.status_changed_by = user
    opportunity.save(update_fields=["status", "status_changed_at", "status_changed_by", "updated_at"])
    return opportunity
