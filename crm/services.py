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
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from accounts.models import User
from clv.summary import summary_apply, summary_apply_product
from crm.bulk import bulk_insert, insert_instances
from crm.models import Contact, Customer, Event, Holding, Opportunity, Person, Product, Purchase, Tombstone, Usage
from crm.webhooks import outbox as webhook_outbox

SYNCED_CHILDREN = ("people", "purchases", "holdings", "contacts", "events", "opportunities")


def _save_new(instance: models.Model) -> models.Model:
    instance.full_clean()
    instance.save()
    return instance


def _apply_changes(instance: models.Model, data: dict[str, Any]) -> list[str]:
    """Set the fields in `data` that differ; returns the names that changed.

    Foreign keys are compared by id, so checking a record does not load its related rows.
    """
    changed = []
    opts = instance._meta
    for field, value in data.items():
        model_field = opts.get_field(field)
        if model_field.many_to_one:
            current = getattr(instance, model_field.attname)
            new = value.pk if isinstance(value, models.Model) else value
            if current != new:
                setattr(instance, field, value)
                changed.append(field)
        elif getattr(instance, field) != value:
            setattr(instance, field, value)
            changed.append(field)
    return changed


def _split_many_to_many(model: type[models.Model], data: dict[str, Any]) -> dict[str, Any]:
    """Pop many-to-many values (e.g. a contact's people) out of `data`."""
    names = {f.name for f in model._meta.many_to_many}
    return {name: data.pop(name) for name in list(data) if name in names}


def _many_to_many_changed(instance: models.Model, values: dict[str, Any]) -> list[str]:
    changed = []
    for name, objects in values.items():
        wanted = {getattr(o, "pk", o) for o in objects}
        if set(getattr(instance, name).values_list("pk", flat=True)) != wanted:
            getattr(instance, name).set(wanted)
            changed.append(name)
    return changed


@transaction.atomic
def record_create(*, model: type[models.Model], data: dict[str, Any]) -> models.Model:
    """Create a CRM record that needs nothing beyond validation (products, holdings, usage)."""
    data = dict(data)
    many = _split_many_to_many(model, data)
    instance = _save_new(model(**data))
    for name, objects in many.items():
        getattr(instance, name).set(objects)
    return instance


@transaction.atomic
def record_update(*, instance: models.Model, data: dict[str, Any]) -> tuple[models.Model, bool]:
    """Update fields of any CRM record; saves (and bumps `updated_at`) only when something changed."""
    data = dict(data)
    many = _split_many_to_many(type(instance), data)
    customer_before = instance.customer_id if isinstance(instance, Purchase) else None
    view_before = _view_before(instance, data)
    changed = _apply_changes(instance, data)
    if changed:
        instance.full_clean()
        instance.save(update_fields=[*changed, "updated_at"])
        if view_before is not None:
            record_moved(instance=instance, before=view_before)
        if isinstance(instance, Purchase):  # the purchase may have moved to another day or customer
            summary_apply(customer_ids=[customer_before, instance.customer_id])
        elif isinstance(instance, Product) and "unit_cost" in changed:
            summary_apply_product(product_id=instance.pk)
    many_changed = _many_to_many_changed(instance, many)
    if many_changed and not changed:
        instance.save(update_fields=["updated_at"])  # the record changed: it moves in the change feed
    return instance, bool(changed or many_changed)


class RecordErrors(Exception):
    """Records of a batch the database refused: {index: {field: [messages]}}."""

    def __init__(self, errors: dict[int, dict[str, list[str]]]):
        self.errors = errors
        super().__init__(f"{len(errors)} invalid record(s)")


@transaction.atomic
def records_upsert(
    *, model: type[models.Model], records: list[dict[str, Any]], existing: dict[str, models.Model]
) -> list[tuple[str, models.Model]]:
    """Create or update many records keyed by external_id, in one transaction.

    `records` are validated values (each with its external_id); `existing` maps the
    external_ids already stored to their rows (locked by the caller). Returns, per record,
    ("created" | "updated" | "unchanged", row). A record equal to what is stored is not
    written at all: no new `updated_at`, no change-feed entry, so a replayed batch is a no-op.
    Raises RecordErrors naming the records the database refuses; nothing is written then.
    """
    now = timezone.now()
    results: list[tuple[str, models.Model]] = []
    to_create: list[models.Model] = []
    to_update: list[models.Model] = []
    update_fields: set[str] = set()
    many_values: list[tuple[models.Model, dict[str, Any], bool]] = []
    customers_before: set[int] = set()
    moved: list[tuple[models.Model, tuple[int | None, int | None]]] = []
    for data in records:
        data = dict(data)
        many = _split_many_to_many(model, data)
        row = existing.get(data["external_id"])
        if row is None:
            row = model(**data)
            to_create.append(row)
            results.append(("created", row))
        else:
            customer_before = row.customer_id if model is Purchase else None
            view_before = _view_before(row, data)
            changed = _apply_changes(row, data)
            if changed:
                if view_before is not None:
                    moved.append((row, view_before))
                if customer_before is not None:
                    customers_before.add(customer_before)
                row.updated_at = now
                update_fields.update(changed)
                to_update.append(row)
            results.append(("updated" if changed else "unchanged", row))
        if many:
            many_values.append((row, many, row in to_create))
    try:
        with transaction.atomic():
            insert_instances(model, to_create)
            if to_update:
                _bulk_update(model, to_update, [*sorted(update_fields), "updated_at"])
    except IntegrityError:
        raise RecordErrors(_find_refused(results)) from None
    for row, view_before in moved:
        record_moved(instance=row, before=view_before)
    touched_by_many = []
    for row, many, created in many_values:
        if created:
            for name, objects in many.items():
                getattr(row, name).set(objects)
        elif _many_to_many_changed(row, many):
            touched_by_many.append(row)
    for index, (result, row) in enumerate(results):
        if result == "unchanged" and row in touched_by_many:
            results[index] = ("updated", row)
            model.objects.filter(pk=row.pk).update(updated_at=now)
    if model is Purchase:
        written = [row for result, row in results if result != "unchanged"]
        summary_apply(customer_ids={row.customer_id for row in written} | customers_before)
        _purchases_written(created=[row for result, row in results if result == "created"])
    elif model is Product and "unit_cost" in update_fields:
        for row in to_update:
            summary_apply_product(product_id=row.pk)
    return results


class _Rollback(Exception):
    pass


def _bulk_update(model: type[models.Model], rows: list[models.Model], fields: list[str]) -> None:
    """UPDATE many rows in one statement: a join on VALUES on PostgreSQL (linear, where
    Django's bulk_update builds a CASE per field that grows with the batch), bulk_update elsewhere."""
    if connection.vendor != "postgresql":
        model.objects.bulk_update(rows, fields)
        return
    opts = model._meta
    model_fields = [opts.get_field(name) for name in fields]
    columns = [f.column for f in model_fields]
    qn = connection.ops.quote_name
    assignments = ", ".join(
        f"{qn(c)} = v.{qn(c)}::{f.db_type(connection)}" for c, f in zip(columns, model_fields, strict=True)
    )
    placeholders = "(" + ", ".join(["%s"] * (len(columns) + 1)) + ")"
    params: list = []
    for row in rows:
        params.append(row.pk)
        params.extend(f.get_db_prep_save(getattr(row, f.attname), connection) for f in model_fields)
    values = ", ".join([placeholders] * len(rows))
    sql = (
        f"UPDATE {qn(opts.db_table)} AS t SET {assignments} "
        f"FROM (VALUES {values}) AS v(id, {', '.join(qn(c) for c in columns)}) WHERE t.id = v.id::bigint"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _find_refused(results: list[tuple[str, models.Model]]) -> dict[int, dict[str, list[str]]]:
    """Write the batch again record by record (then roll it all back) to name the refused ones."""
    errors: dict[int, dict[str, list[str]]] = {}
    try:
        with transaction.atomic():
            for index, (result, row) in enumerate(results):
                if result == "unchanged":
                    continue
                try:
                    with transaction.atomic():
                        row.full_clean()
                        if result == "created":
                            row.pk = None
                        row.save(force_insert=result == "created")
                except ValidationError as exc:
                    errors[index] = exc.message_dict
                except IntegrityError as exc:
                    errors[index] = {"": [f"The database refused this record: {str(exc).splitlines()[0]}"]}
            raise _Rollback
    except _Rollback:
        pass
    return errors or {-1: {"": ["The batch conflicts with records written at the same time; send it again."]}}


def _purchases_written(*, created: list[Purchase]) -> None:
    """Follow-ups of new purchase lines: a won opportunity is realised by its purchase."""
    if created:
        from crm.opportunities.services import opportunities_link_won_purchases

        opportunities_link_won_purchases(purchases=created)


@transaction.atomic
def record_delete(*, instance: models.Model, deleted_by: User | None = None) -> None:
    """Delete a synced record and log a tombstone for it (and for children a cascade removes).

    Each tombstone keeps the customer and its owner, so the change feed shows the deletion to
    the people who could see the record.
    """
    customer_id, owner_id = customer_and_owner(instance)

    def tombstone(model_label: str, pk: int, external_id: str | None) -> Tombstone:
        return Tombstone(
            model=model_label, object_id=pk, external_id=external_id, customer_id=customer_id,
            owner_id=owner_id, deleted_by=deleted_by,
        )

    tombstones = [tombstone(instance._meta.label_lower, instance.pk, getattr(instance, "external_id", None))]
    for rows in records_under(instance):
        tombstones += [tombstone(r._meta.label_lower, r.pk, r.external_id) for r in rows.only("pk", "external_id")]
    Tombstone.objects.bulk_create(tombstones)
    instance.delete()  # a customer's CLV summary rows go with it (cascade)
    if isinstance(instance, Purchase):
        summary_apply(customer_ids=[instance.customer_id])


def records_under(instance: models.Model) -> list[models.QuerySet]:
    """The synced records that go where this one goes: a customer's facets (and their usage), a holding's usage."""
    if isinstance(instance, Customer):
        return [*(getattr(instance, relation).all() for relation in SYNCED_CHILDREN),
                Usage.objects.filter(holding__customer=instance)]
    if isinstance(instance, Holding):
        return [instance.usage.all()]
    return []


def customer_and_owner(instance: models.Model) -> tuple[int | None, int | None]:
    """The customer a record is seen through, and that customer's owner."""
    if isinstance(instance, Customer):
        return instance.pk, instance.owner_id
    if isinstance(instance, Usage):
        customer_id = Holding.objects.filter(pk=instance.holding_id).values_list("customer_id", flat=True).first()
    else:
        customer_id = getattr(instance, "customer_id", None)
    if customer_id is None:
        return None, None
    owner_id = Customer.objects.filter(pk=customer_id).values_list("owner_id", flat=True).first()
    return customer_id, owner_id


def view_field(model: type[models.Model]) -> str:
    """The field whose change can take a record out of the view of people who could see it."""
    return {Customer: "owner", Usage: "holding"}.get(model, "customer")


def _view_before(instance: models.Model, data: dict[str, Any]) -> tuple[int | None, int | None] | None:
    """(customer, owner) the record is seen through, when `data` changes them; else None (no query)."""
    field = view_field(type(instance))
    if field not in data or instance.pk is None:
        return None
    model_field = instance._meta.get_field(field)
    value = data[field]
    if getattr(value, "pk", value) == getattr(instance, model_field.attname):
        return None
    return customer_and_owner(instance)


@transaction.atomic
def record_moved(*, instance: models.Model, before: tuple[int | None, int | None]) -> int:
    """The record now belongs to another customer, or its customer to another owner (after the save).

    People who could see it before and cannot now must learn that it left their view: the
    record, and for a customer or holding everything under it, get "moved" tombstones placed
    in the change feed (shown only to those who can no longer see it), and the records under
    it a new place in the feed, so clients of the people who see it now receive them.
    Returns the number of tombstones written.
    """
    previous_customer, previous_owner = before
    now_customer, now_owner = customer_and_owner(instance)
    if (previous_customer, previous_owner) == (now_customer, now_owner) or previous_customer is None:
        return 0

    def moved(label: str, pk: int, external_id: str | None) -> Tombstone:
        return Tombstone(
            model=label, object_id=pk, external_id=external_id, customer_id=previous_customer,
            owner_id=previous_owner, reason=Tombstone.Reason.MOVED, now_customer_id=now_customer,
        )

    tombstones = [moved(instance._meta.label_lower, instance.pk, instance.external_id)]
    for rows in records_under(instance):
        tombstones += [moved(r._meta.label_lower, r.pk, r.external_id) for r in rows.only("pk", "external_id")]
        rows.update(updated_at=models.F("updated_at"))  # the trigger gives each a new place in the feed
    Tombstone.objects.bulk_create(tombstones)
    return len(tombstones)


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


def purchase_amounts(
    *, quantity: Decimal, amount: Decimal | None, unit_price: Decimal | None
) -> tuple[Decimal, Decimal]:
    """(amount, unit price) of a purchase line from whichever of the two is given."""
    if amount is None and unit_price is None:
        raise ValidationError({"amount": "Give the amount or the unit price."})
    if amount is None:
        amount = (quantity * Decimal(unit_price)).quantize(Decimal("0.01"))
    if unit_price is None:
        unit_price = (Decimal(amount) / quantity).quantize(Decimal("0.01")) if quantity else Decimal(amount)
    return Decimal(amount), Decimal(unit_price)


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
    amount, unit_price = purchase_amounts(quantity=quantity, amount=amount, unit_price=unit_price)
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
    previous = opportunity.status
    opportunity.status = status
    opportunity.status_changed_at = timezone.now()
    opportunity.status_changed_by = user
    opportunity.save(update_fields=["status", "status_changed_at", "status_changed_by", "updated_at"])
    webhook_outbox.opportunity_status_changed(opportunity=opportunity, previous=previous)
    return opportunity
