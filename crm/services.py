"""Writes to customers and their facets: one function per action, one transaction each.

Pages, the API, CSV imports and tasks all call these, so validation, the deletion log
and anything that must follow a write (such as keeping the CLV summary current) live in
one place. Each function validates before saving and raises django's ValidationError
with field messages on bad input.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, models, router, transaction
from django.utils import timezone

from accounts.models import User
from clv.summary import LineValues, summary_apply, summary_apply_product
from crm.bulk import (
    among,
    bare_instance,
    builds_bare,
    bulk_insert,
    column_values,
    insert_instances,
    pg_array,
    stored_instances,
)
from crm.conflicts import ConcurrentWrite
from crm.dates import record_date_errors
from crm.models import (
    Contact,
    Customer,
    Event,
    Holding,
    Opportunity,
    Person,
    Product,
    Purchase,
    Task,
    Tombstone,
    Usage,
)
from crm.sync import feed_touch
from crm.webhooks import outbox as webhook_outbox

SYNCED_CHILDREN = ("people", "purchases", "holdings", "contacts", "tasks", "events", "opportunities")


def _save_new(instance: models.Model) -> models.Model:
    instance.full_clean()
    instance.save()
    return instance


def _apply_changes(instance: models.Model, data: dict[str, Any]) -> list[str]:
    """Set the fields in `data` that differ; returns the names that changed.

    Foreign keys are compared by id, so checking a record does not load its related rows.
    """
    changed = []
    keys = _foreign_key_attnames(type(instance))
    for field, value in data.items():
        attname = keys.get(field)
        if attname is not None:
            new = value.pk if isinstance(value, models.Model) else value
            if getattr(instance, attname) != new:
                setattr(instance, field, value)
                changed.append(field)
        elif getattr(instance, field) != value:
            setattr(instance, field, value)
            changed.append(field)
    return changed


@functools.cache
def _foreign_key_attnames(model: type[models.Model]) -> dict[str, str]:
    """name -> attname (its id) of each many-to-one field of the model."""
    return {f.name: f.attname for f in model._meta.get_fields() if f.many_to_one and f.concrete}


def _split_many_to_many(model: type[models.Model], data: dict[str, Any]) -> dict[str, Any]:
    """Pop many-to-many values (e.g. a contact's people) out of `data`."""
    names = _many_to_many_names(model)
    return {name: data.pop(name) for name in names if name in data} if names else {}


@functools.cache
def _many_to_many_names(model: type[models.Model]) -> tuple[str, ...]:
    return tuple(f.name for f in model._meta.many_to_many)


def new_instance(model: type[models.Model], data: dict[str, Any]) -> models.Model:
    """`model(**data)` for validated values, faster for a batch of them (4.7 against 19.6 ms per 1,000
    purchase lines, measured side by side).

    Django's keyword path looks every field up by name and assigns each related record through
    its descriptor (type and database-router checks); here every concrete field's value is set
    on the new instance as Model.__init__ sets it, related records as their key with the record
    itself put in the instance's cache, as the descriptor leaves it. Anything else in `data` (a
    property, an unknown name), a model the plan does not cover, or a pre_init/post_init
    receiver takes Django's own path. tests/api/test_fast_writes.py checks both give the same.
    """
    fields = _construction_plan(model)
    if fields is None or not fields.keys() >= data.keys() or not builds_bare(model):
        return model(**data)
    values = {}
    related = []
    for name, field, target in fields.values():
        if name in data:
            value = data[name]
            if target is not None:
                related.append((field, value))
                value = None if value is None else getattr(value, target)
            values[field.attname] = value
        else:
            values[field.attname] = field.get_default()
    instance = bare_instance(model, values)  # what Model.__init__ leaves, given every concrete field
    for field, value in related:
        field.set_cached_value(instance, value)
        if value is not None and instance._state.db is None:  # as the descriptor sets it
            instance._state.db = router.db_for_write(model, instance=value)
    return instance


@functools.cache
def _construction_plan(model: type[models.Model]) -> dict[str, tuple[str, models.Field, str | None]] | None:
    """name -> (name, field, the related record's attribute its key is read from, or None), in the
    order of the model's concrete fields; None for a model with a one-to-one field (its descriptor
    also fills the other side's cache)."""
    if any(f.one_to_one for f in model._meta.concrete_fields):
        return None
    return {
        f.name: (f.name, f, f.target_field.attname if f.many_to_one else None)
        for f in model._meta.concrete_fields
    }


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
        if isinstance(instance, Customer) and "external_id" in changed:
            feed_touch(records_under(instance))  # their customer_external_id changed with it
        if isinstance(instance, Purchase):  # the purchase may have moved to another day or customer
            summary_apply(customer_ids=[customer_before, instance.customer_id])
        elif isinstance(instance, Product) and "unit_cost" in changed:
            summary_apply_product(product_id=instance.pk)
    people_dropped = _keep_people_with_their_customer(instance, changed, many)
    many_changed = _many_to_many_changed(instance, many)
    if (many_changed or people_dropped) and not changed:
        instance.save(update_fields=["updated_at"])  # the record changed: it moves in the change feed
    if changed and isinstance(instance, Contact):
        follow_up_sync(contacts=[instance])
    elif changed and isinstance(instance, Task):
        _task_to_contact(instance)
    return instance, bool(changed or many_changed or people_dropped)


def _keep_people_with_their_customer(instance: models.Model, changed: list[str], many: dict[str, Any]) -> bool:
    """A contact's people are people of the contact's customer, whichever of the two moves.

    - people given for a contact must all belong to its (new) customer, else ValidationError;
    - a contact moved to another customer without new people loses those of its old customer;
    - a person moved to another customer leaves the contacts of its old customer (each such
      contact is touched, so it moves in the change feed).
    Called after the record's own fields are set (and saved) inside the write's transaction.
    Returns True when links of `instance` itself were dropped.
    """
    if isinstance(instance, Contact):
        if "people" in many:
            wanted = {getattr(p, "pk", p) for p in many["people"]}
            theirs = set(Person.objects.filter(pk__in=wanted, customer_id=instance.customer_id).values_list("pk", flat=True))
            if wanted - theirs:
                raise ValidationError({"people": "Every person must belong to this contact's customer."})
            return False
        if "customer" in changed and instance.pk is not None:
            stale = instance.people.exclude(customer_id=instance.customer_id)
            if stale.exists():
                instance.people.remove(*stale)
                return True
        return False
    if isinstance(instance, Person) and "customer" in changed:
        links = Contact.people.through.objects.filter(person_id=instance.pk).exclude(
            contact__customer_id=instance.customer_id
        )
        contact_ids = list(links.values_list("contact_id", flat=True))
        if contact_ids:
            links.delete()
            Contact.objects.filter(pk__in=contact_ids).update(updated_at=timezone.now())
    return False


class RecordErrors(Exception):
    """Records of a batch the database refused: {index: {field: [messages]}}."""

    def __init__(self, errors: dict[int, dict[str, list[str]]]):
        self.errors = errors
        super().__init__(f"{len(errors)} invalid record(s)")


def records_locked(*, model: type[models.Model], external_ids: Iterable[str]) -> dict[str, models.Model]:
    """The stored rows with these external_ids, locked for update until the transaction ends.

    Locked in id order, the one order every batch uses, so two batches sharing rows queue
    behind each other instead of deadlocking.
    """
    rows = model.objects.select_for_update().filter(among(model, "external_id", list(external_ids))).order_by("pk")
    return {row.external_id: row for row in stored_instances(rows, [f.attname for f in model._meta.concrete_fields])}


def records_visible(*, queryset: models.QuerySet, stored: dict[str, models.Model]) -> set[str]:
    """The external_ids of `stored` (records_locked's answer) that `queryset`, what the caller may
    see, holds; no query when nothing is stored or the queryset has no filter (it holds every record)."""
    if not stored or not queryset.query.where:
        return set(stored)
    return set(
        queryset.filter(among(queryset.model, "external_id", list(stored))).values_list("external_id", flat=True)
    )


@transaction.atomic
def records_upsert(
    *, model: type[models.Model], records: list[dict[str, Any]], existing: dict[str, models.Model]
) -> list[tuple[str, models.Model]]:
    """Create or update many records keyed by external_id, in one transaction.

    `records` are validated values (each with its external_id); `existing` maps the
    external_ids already stored to their rows (locked by the caller, see records_locked).
    Returns, per record, ("created" | "updated" | "unchanged", row). A record equal to what is
    stored is not written at all: no new `updated_at`, no change-feed entry, so a replayed
    batch is a no-op. Raises RecordErrors naming the records the database refuses, and
    ConcurrentWrite when a concurrent request created one of the new external_ids first
    (send the batch again: crm.conflicts.retrying); nothing is written then.
    """
    now = timezone.now()
    results: list[tuple[str, models.Model]] = []
    to_create: list[models.Model] = []
    to_update: list[models.Model] = []
    update_fields: set[str] = set()
    many_values: list[tuple[models.Model, dict[str, Any], bool]] = []
    days_moved: set[tuple[int, date]] = set()  # purchases: (customer, day) of each moved line, before and after
    revalued: list[tuple[LineValues, LineValues]] = []  # purchases: changed on their customer and day
    moved: list[tuple[models.Model, tuple[int | None, int | None]]] = []
    changed_of: dict[int, list[str]] = {}
    for data in records:
        data = dict(data)
        many = _split_many_to_many(model, data)
        row = existing.get(data["external_id"])
        if row is None:
            row = new_instance(model, data)
            to_create.append(row)
            results.append(("created", row))
        else:
            line_before = _line_values(row) if model is Purchase else None
            view_before = _view_before(row, data)
            changed = _apply_changes(row, data)
            changed_of[id(row)] = changed
            if changed:
                if view_before is not None:
                    moved.append((row, view_before))
                if line_before is not None:
                    day_before = _purchase_day(line_before)
                    day_after = _purchase_day(row)
                    if day_after == day_before:
                        revalued.append((line_before, _line_values(row)))
                    else:
                        days_moved |= {day_before, day_after}
                row.updated_at = now
                update_fields.update(changed)
                to_update.append(row)
            results.append(("updated" if changed else "unchanged", row))
        if many:
            many_values.append((row, many, row in to_create))
    keyed = all(row.external_id for row in to_create)
    date_errors = {
        index: errors for index, (result, row) in enumerate(results)
        if result != "unchanged" and (errors := record_date_errors(row))
    }
    if date_errors:
        raise RecordErrors(date_errors)
    try:
        with transaction.atomic():
            taken = insert_instances(model, to_create, skip_taken="external_id" if keyed else None)
            if taken:  # created meanwhile by a concurrent request (which this one waited for)
                raise ConcurrentWrite([row.external_id for row in taken])
            if to_update:
                _bulk_update(model, to_update, [*sorted(update_fields), "updated_at"])
    except IntegrityError:
        raise RecordErrors(_find_refused(results)) from None
    for row, view_before in moved:
        record_moved(instance=row, before=view_before)
    touched_by_many = []
    many_of = {id(row): many for row, many, _ in many_values}
    for row in to_update if model in (Contact, Person) else ():  # links stay consistent, as in record_update
        if _keep_people_with_their_customer(row, changed_of[id(row)], many_of.get(id(row), {})):
            touched_by_many.append(row)
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
    if model is Contact:
        follow_up_sync(contacts=[row for result, row in results if result != "unchanged"])
    elif model is Task:
        for result, row in results:
            if result != "unchanged":
                _task_to_contact(row)
    if model is Purchase:
        # The kept summary: a moved line's day before and after are recomputed; a line that changed
        # on its customer and day takes the difference; new lines are added to their days. A customer
        # with a moved line, or with new and changed lines both, has every touched day recomputed.
        created = [row for result, row in results if result == "created"]
        days = days_moved
        day_customers = {c for c, _ in days} | (
            {was.customer_id for was, _ in revalued} & {row.customer_id for row in created}
        )
        days |= {_purchase_day(was) for was, _ in revalued if was.customer_id in day_customers}
        days |= {_purchase_day(row) for row in created if row.customer_id in day_customers}
        summary_apply(
            added=[(row.customer_id, row.pk) for row in created if row.customer_id not in day_customers], days=days,
            revalued=[(was, now) for was, now in revalued if was.customer_id not in day_customers],
        )
        _purchases_written(created=created)
    elif model is Product and "unit_cost" in update_fields:
        for row in to_update:
            summary_apply_product(product_id=row.pk)
    return results


class _Rollback(Exception):
    pass


def _bulk_update(model: type[models.Model], rows: list[models.Model], fields: list[str]) -> None:
    """UPDATE many rows in one statement: a join on the rows' values (linear, where Django's
    bulk_update builds a CASE per field that grows with the batch) on PostgreSQL, each column
    bound as one array (crm.bulk.pg_array); bulk_update elsewhere."""
    if connection.vendor != "postgresql":
        model.objects.bulk_update(rows, fields)
        return
    opts = model._meta
    model_fields = [opts.get_field(name) for name in fields]
    qn = connection.ops.quote_name
    names = ", ".join(qn(f.column) for f in model_fields)
    assignments = ", ".join(f"{qn(f.column)} = v.{qn(f.column)}::{f.db_type(connection)}" for f in model_fields)
    columns = [[row.pk for row in rows]] + [column_values(f, rows) for f in model_fields]
    literals = [pg_array(values) for values in columns]
    if all(literal is not None for literal in literals):
        types = ["bigint", *(f.db_type(connection) for f in model_fields)]
        source = f"unnest({', '.join(f'%s::{t}[]' for t in types)})"
        params = literals
    else:  # a value no array literal writes (JSON...): a VALUES list, each value bound on its own
        placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
        source = f"(VALUES {', '.join([placeholders] * len(rows))})"
        params = [value for values in zip(*columns, strict=True) for value in values]
    sql = (f"UPDATE {qn(opts.db_table)} AS t SET {assignments} "
           f"FROM {source} AS v(id, {names}) WHERE t.id = v.id::bigint")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _find_refused(results: list[tuple[str, models.Model]]) -> dict[int, dict[str, list[str]]]:
    """Write the batch again record by record (then roll it all back) to name the refused ones.

    Raises ConcurrentWrite when the refusal came from a concurrent request, not from a record.
    """
    errors: dict[int, dict[str, list[str]]] = {}
    raced: list[str] = []
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
                    if result == "created" and "external_id" in exc.message_dict:
                        raced.append(row.external_id)  # stored since the batch looked its keys up
                    errors[index] = exc.message_dict
                except IntegrityError as exc:
                    errors[index] = {"": [f"The database refused this record: {str(exc).splitlines()[0]}"]}
            raise _Rollback
    except _Rollback:
        pass
    if raced or not errors:  # nothing wrong with the records: a concurrent request wrote some of them
        raise ConcurrentWrite(raced)
    return errors


def _line_values(row: Purchase) -> LineValues:
    """What the kept summary counts of a purchase line."""
    return LineValues(row.customer_id, row.purchased_at, row.product_id, row.quantity, row.unit_price, row.amount,
                      row.unit_cost)


def _purchase_day(row: Purchase | LineValues) -> tuple[int, date]:
    """A purchase line's customer and calendar day (in TIME_ZONE, as the kept summary counts days)."""
    when = row.purchased_at
    if timezone.is_naive(when):
        when = timezone.make_aware(when, timezone.get_default_timezone())
    return row.customer_id, timezone.localtime(when, timezone.get_default_timezone()).date()


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
    team_id = _team_of(owner_id)

    def tombstone(model_label: str, pk: int, external_id: str | None) -> Tombstone:
        return Tombstone(
            model=model_label, object_id=pk, external_id=external_id, customer_id=customer_id,
            owner_id=owner_id, team_id=team_id, deleted_by=deleted_by,
        )

    def to_assignee(task: Task) -> list[Tombstone]:
        """A task is seen by its assignee too, who may not see the account: they must learn it went."""
        if task.assigned_to_id in (None, owner_id):
            return []
        return [Tombstone(model="crm.task", object_id=task.pk, external_id=task.external_id,
                          customer_id=customer_id, owner_id=task.assigned_to_id, deleted_by=deleted_by)]

    tombstones = [tombstone(instance._meta.label_lower, instance.pk, getattr(instance, "external_id", None))]
    if isinstance(instance, Task):
        tombstones += to_assignee(instance)
    for rows in records_under(instance):
        if rows.model is Task:
            for task in rows.only("pk", "external_id", "assigned_to_id"):
                tombstones += [tombstone("crm.task", task.pk, task.external_id), *to_assignee(task)]
        else:
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
    if isinstance(instance, Contact):
        return [Task.objects.filter(contact=instance)]
    return []


def _team_of(user_id: int | None) -> int | None:
    """The user's team now; kept on a tombstone, whose visibility must not follow later team changes."""
    if user_id is None:
        return None
    return User.objects.filter(pk=user_id).values_list("team_id", flat=True).first()


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

    previous_team = _team_of(previous_owner)

    def moved(label: str, pk: int, external_id: str | None) -> Tombstone:
        return Tombstone(
            model=label, object_id=pk, external_id=external_id, customer_id=previous_customer,
            owner_id=previous_owner, team_id=previous_team, reason=Tombstone.Reason.MOVED,
            now_customer_id=now_customer,
        )

    if isinstance(instance, Customer) and previous_owner is not None:
        # The account's open tasks of its previous owner go to the new one with it.
        Task.objects.filter(customer=instance, assigned_to_id=previous_owner, done_at__isnull=True).update(
            assigned_to_id=now_owner
        )
    tombstones = [moved(instance._meta.label_lower, instance.pk, instance.external_id)]
    for rows in records_under(instance):
        tombstones += [moved(r._meta.label_lower, r.pk, r.external_id) for r in rows.only("pk", "external_id")]
    feed_touch(records_under(instance))
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


# What a salesperson keeps of an account on the pages; the owner moves through customer_reassign.
CUSTOMER_EDITABLE = (
    "name", "kind", "relationship_type", "lifecycle_stage", "email", "phone", "website", "address", "city",
    "country", "notes", "external_id",
)


@transaction.atomic
def customer_update(*, customer: Customer, data: dict[str, Any]) -> tuple[Customer, bool]:
    """Edit an account's own fields (not its owner); returns (customer, whether anything changed).

    An account becomes lost only through customer_mark_lost (which asks why); one that is won
    back (its stage moves away from lost) forgets its lost date and reason.
    """
    unknown = set(data) - set(CUSTOMER_EDITABLE)
    if unknown:
        raise ValidationError({name: "This field cannot be changed here." for name in sorted(unknown)})
    data = dict(data)
    if "external_id" in data:
        data["external_id"] = data["external_id"] or None
    stage = data.get("lifecycle_stage", customer.lifecycle_stage)
    if stage == Customer.Stage.LOST and customer.lifecycle_stage != Customer.Stage.LOST:
        raise ValidationError({"lifecycle_stage": "Use “Mark lost” to record why the account was lost."})
    if stage != Customer.Stage.LOST and customer.lifecycle_stage == Customer.Stage.LOST:
        data.update(lost_on=None, lost_reason="", lost_note="")
    return record_update(instance=customer, data=data)


def assignable_owners(user: User):
    """Who `user` may make the owner of an account: admins anyone active; managers themselves and
    the salespeople of the teams they manage; salespeople only themselves."""
    users = User.objects.filter(is_active=True)
    if user.sees_everything:
        return users.order_by("first_name", "last_name", "username")
    if user.is_manager:
        users = users.filter(models.Q(pk=user.pk) | models.Q(team__manager=user))
    else:
        users = users.filter(pk=user.pk)
    return users.order_by("first_name", "last_name", "username")


@transaction.atomic
def customer_reassign(*, customer: Customer, owner: User, by: User) -> Customer:
    """Give the account to another salesperson (managers within their teams, admins to anyone).

    Goes through record_update, so record_moved sends the account and everything under it to
    the old owner's sync clients as "moved" tombstones and to the new owner's as changes.
    """
    if not (by.sees_everything or by.is_manager):
        raise ValidationError({"owner": "Only managers and admins reassign accounts."})
    if owner is None or not assignable_owners(by).filter(pk=owner.pk).exists():
        raise ValidationError({"owner": "Choose yourself or a salesperson of your team."})
    if owner.pk == customer.owner_id:
        raise ValidationError({"owner": f"{owner} already owns this account."})
    record_update(instance=customer, data={"owner": owner})
    return customer


@transaction.atomic
def customer_mark_lost(
    *, customer: Customer, reason: str, note: str = "", lost_on: date | None = None
) -> Customer:
    """Mark the account lost, with why (a reason from the list, and words for "other") and when."""
    note = (note or "").strip()
    if reason not in Customer.LostReason.values:
        raise ValidationError({"reason": "Choose why the account was lost."})
    if reason == Customer.LostReason.OTHER and not note:
        raise ValidationError({"note": "Say in a few words why the account was lost."})
    customer.lifecycle_stage = Customer.Stage.LOST
    customer.lost_on = lost_on or timezone.localdate()
    customer.lost_reason = reason
    customer.lost_note = note
    try:
        customer.full_clean()
    except ValidationError as exc:
        if "lost_note" in exc.message_dict:
            raise ValidationError({"note": exc.message_dict["lost_note"]}) from None
        raise
    customer.save(update_fields=["lifecycle_stage", "lost_on", "lost_reason", "lost_note", "updated_at"])
    return customer


def _demote_primary(customer: Customer, *, keep: Person | None = None) -> None:
    """Clear the current primary contact (one per customer, as the database requires), through
    record_update so the change reaches the change feed. The customer row is locked, so two
    people cannot be made primary at the same time."""
    Customer.objects.select_for_update().filter(pk=customer.pk).values_list("pk", flat=True).first()
    current = customer.people.filter(is_primary=True)
    if keep is not None and keep.pk is not None:
        current = current.exclude(pk=keep.pk)
    for person in current:
        record_update(instance=person, data={"is_primary": False})


@transaction.atomic
def person_add(*, customer: Customer, last_name: str, external_id: str | None = None, **fields: Any) -> Person:
    """Add a person to the customer's decision-making unit; a new primary contact replaces the old one."""
    if fields.get("is_primary"):
        _demote_primary(customer)
    return _save_new(Person(customer=customer, last_name=last_name, external_id=external_id or None, **fields))


@transaction.atomic
def person_update(*, person: Person, data: dict[str, Any]) -> tuple[Person, bool]:
    """Edit a person of the decision-making unit; making them primary demotes the current primary
    (of the customer they belong to after the edit). An erased person (crm/privacy.py) stays erased."""
    if person.erased_at is not None:
        raise ValidationError("This person's personal data was erased on request; the record cannot be edited.")
    customer = data.get("customer", person.customer)
    if data.get("is_primary") and (not person.is_primary or customer.pk != person.customer_id):
        _demote_primary(customer, keep=person)
    return record_update(instance=person, data=data)


@transaction.atomic
def person_remove(*, person: Person, removed_by: User | None) -> None:
    """Remove a person from the decision-making unit (their contacts stay, without them); a tombstone tells sync clients."""
    record_delete(instance=person, deleted_by=removed_by)


@transaction.atomic
def holding_add(
    *,
    customer: Customer,
    product: Product,
    since: date,
    quantity: Decimal = Decimal("1"),
    until: date | None = None,
    status: str = Holding.Status.ACTIVE,
    external_id: str | None = None,
) -> Holding:
    """Record a product the customer holds: how many units or seats, from when, until or renewing when."""
    return _save_new(
        Holding(customer=customer, product=product, quantity=quantity, since=since, until=until, status=status,
                external_id=external_id or None)
    )


@transaction.atomic
def usage_record(
    *,
    holding: Holding,
    period_start: date,
    period_end: date,
    used: Decimal,
    capacity: Decimal | None = None,
    satisfaction: int | None = None,
    nps: int | None = None,
    note: str = "",
    external_id: str | None = None,
) -> Usage:
    """Record how much of a holding was used in a period (against its capacity) and what the customer says of it."""
    if period_start and holding.since and period_end and period_end < holding.since:
        raise ValidationError({"period_end": f"The holding starts on {holding.since:%d %b %Y}; usage cannot end before."})
    return _save_new(
        Usage(holding=holding, period_start=period_start, period_end=period_end, used=used, capacity=capacity,
              satisfaction=satisfaction, nps=nps, note=note, external_id=external_id or None)
    )


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
    purchase_plausible(amount=Decimal(amount), unit_price=Decimal(unit_price))
    return Decimal(amount), Decimal(unit_price)


def purchase_amount_max() -> Decimal:
    """The largest amount (and unit price) one purchase line may have: CRM_PURCHASE_AMOUNT_MAX."""
    return Decimal(settings.CRM_PURCHASE_AMOUNT_MAX)


def purchase_plausible(*, amount: Decimal, unit_price: Decimal) -> None:
    """Refuse a purchase line above CRM_PURCHASE_AMOUNT_MAX (raises ValidationError naming the field).

    One mistyped line would dominate its customer's value and the spend model of every run;
    the CLV run also caps implausible spend (clv.engine.outliers), this refuses it at the door.
    """
    bound = purchase_amount_max()
    errors = {
        name: f"At most {bound:,.2f} per purchase line (the CRM_PURCHASE_AMOUNT_MAX setting); got {value:,.2f}."
        for name, value in (("amount", amount), ("unit_price", unit_price)) if value > bound
    }
    if errors:
        raise ValidationError(errors)


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


PURCHASE_LINE_FIELDS = ["customer", "product", "quantity", "unit_price", "amount", "unit_cost", "purchased_at",
                        "order_ref", "external_id"]


@transaction.atomic
def purchases_bulk_update(*, rows: list[Purchase], customers_before: dict[int, int]) -> int:
    """Write changed stored purchase lines at once (the CSV import of lines it finds by their key).

    `rows` are stored lines (pk set) with every field of PURCHASE_LINE_FIELDS set to its new,
    already valid value; `customers_before` maps the pk of each line that changed customer to
    its previous customer. One UPDATE per call; a line that moved gets "moved" tombstones for
    those who could see it before (record_moved), and the CLV summary of the old and new
    customers is recomputed (at the end of a summary_deferred() block).
    """
    if not rows:
        return 0
    now = timezone.now()
    for row in rows:
        row.updated_at = now
    _bulk_update(Purchase, rows, [*PURCHASE_LINE_FIELDS, "updated_at"])
    if customers_before:
        owners = dict(Customer.objects.filter(pk__in=set(customers_before.values())).values_list("pk", "owner_id"))
        for row in rows:
            before = customers_before.get(row.pk)
            if before is not None:
                record_moved(instance=row, before=(before, owners.get(before)))
    summary_apply(customer_ids={row.customer_id for row in rows} | set(customers_before.values()))
    return len(rows)


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
    follow_up_done_at: datetime | None = None,
    external_id: str | None = None,
) -> Contact:
    """Log an interaction with the customer's decision-making unit (its follow-up may be done already)."""
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
            follow_up_done_at=follow_up_done_at,
            external_id=external_id or None,
        )
    )
    if people:
        contact.people.set(people)
    if follow_up_on is not None:
        follow_up_sync(contacts=[contact])
    return contact


@transaction.atomic
def contact_complete_follow_up(*, contact: Contact, outcome: str = "") -> Contact:
    """Mark the contact's follow-up done; its task is completed with it."""
    task = Task.objects.filter(contact=contact).first()
    if task is not None:
        task_complete(task=task, outcome=outcome)
        contact.refresh_from_db(fields=["follow_up_done_at", "updated_at"])
        return contact
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
def opportunity_set_status(
    *,
    opportunity: Opportunity,
    status: str,
    user: User | None,
    dismiss_reason: str = "",
    dismiss_note: str = "",
) -> Opportunity:
    """Record what a salesperson did with a suggestion (accepted, dismissed, won, lost), or undo
    it (back to open). A dismissal keeps its reason: one of the short list, "other" with words."""
    if status not in Opportunity.Status.values:
        raise ValidationError({"status": f"Unknown status {status!r}."})
    if status == Opportunity.Status.EXPIRED:
        raise ValidationError({"status": "Only the opportunity engine expires suggestions."})
    previous = opportunity.status
    dismiss_note = (dismiss_note or "").strip()
    if status == Opportunity.Status.DISMISSED:
        if dismiss_reason and dismiss_reason not in Opportunity.DismissReason.values:
            raise ValidationError({"dismiss_reason": "Choose not relevant, already has it, bad timing or other."})
        if dismiss_reason == Opportunity.DismissReason.OTHER and not dismiss_note:
            raise ValidationError({"dismiss_note": "Say in a few words why it is dismissed."})
        if len(dismiss_note) > 300:
            raise ValidationError({"dismiss_note": "At most 300 characters."})
    else:
        dismiss_reason, dismiss_note = "", ""
    opportunity.status = status
    opportunity.status_changed_at = timezone.now()
    opportunity.status_changed_by = user
    opportunity.dismiss_reason = dismiss_reason
    opportunity.dismiss_note = dismiss_note
    opportunity.save(update_fields=["status", "status_changed_at", "status_changed_by", "dismiss_reason",
                                    "dismiss_note", "updated_at"])
    webhook_outbox.opportunity_status_changed(opportunity=opportunity, previous=previous)
    return opportunity


# --- tasks and follow-ups -----------------------------------------------------------------

EARLIEST_DATE = date(1900, 1, 1)
TASK_YEARS_AHEAD = 2


def task_due_range(today: date | None = None) -> tuple[date, date]:
    """The dates a task or follow-up may be due on: from 1 Jan 1900 to two years from today.

    (One small rule for tasks; a shared date rule for every entered date replaces it when it lands.)
    """
    today = today or timezone.localdate()
    try:
        latest = today.replace(year=today.year + TASK_YEARS_AHEAD)
    except ValueError:  # 29 February
        latest = today.replace(year=today.year + TASK_YEARS_AHEAD, day=28)
    return EARLIEST_DATE, latest


def check_due_date(value: date | None, field: str = "due_on") -> None:
    """Raise ValidationError({field: ...}) naming the allowed range when `value` is outside it."""
    if value is None:
        return
    earliest, latest = task_due_range()
    if not earliest <= value <= latest:
        raise ValidationError(
            {field: f"Give a date between {earliest:%-d %b %Y} and {latest:%-d %b %Y} (at most two years ahead)."}
        )


def _follow_up_title(contact: Contact) -> str:
    return f"Follow up: {contact.subject}"[:200]


@transaction.atomic
def follow_up_sync(*, contacts: Iterable[Contact]) -> None:
    """Keep each contact's follow-up task in step with the contact (one query for the lookup).

    A follow-up date creates the task (assigned to the contact's salesperson) or moves it; a
    done follow-up completes it and an undone one reopens it; no follow-up date removes it
    (with a tombstone, so syncing clients drop it too).
    """
    contacts = [c for c in contacts if c.pk is not None]
    if not contacts:
        return
    tasks = {t.contact_id: t for t in Task.objects.filter(contact__in=[c.pk for c in contacts])}
    for contact in contacts:
        task = tasks.get(contact.pk)
        if contact.follow_up_on is None:
            if task is not None:
                record_delete(instance=task)
            continue
        check_due_date(contact.follow_up_on, "follow_up_on")
        wanted = {
            "customer_id": contact.customer_id,
            "due_on": contact.follow_up_on,
            "done_at": contact.follow_up_done_at,
        }
        if task is None:
            _save_new(Task(
                contact=contact, assigned_to_id=contact.salesperson_id,
                created_by_id=contact.salesperson_id, title=_follow_up_title(contact), **wanted,
            ))
            continue
        if task.done_at is not None and contact.follow_up_done_at is not None:
            wanted.pop("done_at")  # both done: keep the task's own completion time
        changed = [name for name, value in wanted.items() if getattr(task, name) != value]
        if changed:
            for name in changed:
                setattr(task, name, wanted[name])
            task.save(update_fields=[*changed, "updated_at"])


@transaction.atomic
def follow_up_tasks_backfill() -> int:
    """Give every contact follow-up that has no task yet its task, in one INSERT ... SELECT
    (the bulk paths, seed and imports, that write contacts without follow_up_sync). Returns the count."""
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO crm_task (customer_id, contact_id, assigned_to_id, created_by_id, title, notes, due_on,
                                  done_at, outcome, created_at, updated_at, change_txid, change_seq)
            SELECT c.customer_id, c.id, c.salesperson_id, c.salesperson_id, substr('Follow up: ' || c.subject, 1, 200),
                   '', c.follow_up_on, c.follow_up_done_at, '', %s, %s, 0, 0
            FROM crm_contact c
            WHERE c.follow_up_on IS NOT NULL AND NOT EXISTS (SELECT 1 FROM crm_task t WHERE t.contact_id = c.id)
            """,
            [now, now],
        )
        return cursor.rowcount


def _task_to_contact(task: Task) -> None:
    """A follow-up task changed (moved, done, reopened): the contact says the same."""
    if task.contact_id is None:
        return
    contact = Contact.objects.filter(pk=task.contact_id).first()
    if contact is None:
        return
    wanted = {"follow_up_on": task.due_on, "follow_up_done_at": task.done_at}
    if contact.follow_up_done_at is not None and task.done_at is not None:
        wanted.pop("follow_up_done_at")
    changed = [name for name, value in wanted.items() if getattr(contact, name) != value]
    if changed:
        for name in changed:
            setattr(contact, name, wanted[name])
        contact.save(update_fields=[*changed, "updated_at"])


@transaction.atomic
def task_create(
    *,
    customer: Customer,
    title: str,
    due_on: date,
    assigned_to: User | None = None,
    created_by: User | None = None,
    due_time: time | None = None,
    notes: str = "",
    outcome: str = "",
    done_at: datetime | None = None,
    contact: Contact | None = None,
    external_id: str | None = None,
) -> Task:
    """A standalone task on an account ("call Anna about the renewal"), due on a day."""
    title = (title or "").strip()
    if not title:
        raise ValidationError({"title": "Say in a few words what is to be done."})
    check_due_date(due_on)
    if contact is not None and contact.customer_id != customer.pk:
        raise ValidationError({"contact": "The contact must belong to this customer."})
    task = _save_new(Task(
        customer=customer, title=title, due_on=due_on, due_time=due_time, assigned_to=assigned_to,
        created_by=created_by, notes=notes, outcome=outcome, done_at=done_at, contact=contact,
        external_id=external_id or None,
    ))
    _task_to_contact(task)
    return task


@transaction.atomic
def task_update(*, task: Task, data: dict[str, Any]) -> Task:
    """Change a task's fields (the API's PUT/PATCH); its contact follows."""
    if "due_on" in data:
        check_due_date(data["due_on"])
    if "title" in data:
        data = {**data, "title": (data["title"] or "").strip()}
        if not data["title"]:
            raise ValidationError({"title": "Say in a few words what is to be done."})
    return record_update(instance=task, data=data)[0]


@transaction.atomic
def task_complete(*, task: Task, outcome: str = "") -> Task:
    """Mark the task done, with an optional note of what came of it; a follow-up's contact too."""
    if len(outcome) > 300:
        raise ValidationError({"outcome": "At most 300 characters."})
    fields = ["updated_at"]
    if task.done_at is None:
        task.done_at = timezone.now()
        fields.append("done_at")
    if outcome.strip() and outcome.strip() != task.outcome:
        task.outcome = outcome.strip()
        fields.append("outcome")
    if len(fields) > 1:
        task.save(update_fields=fields)
        _task_to_contact(task)
    return task


@transaction.atomic
def task_reopen(*, task: Task) -> Task:
    """Undo a completion."""
    if task.done_at is not None:
        task.done_at = None
        task.save(update_fields=["done_at", "updated_at"])
        _task_to_contact(task)
    return task


SNOOZE_CHOICES = {"tomorrow": 1, "next_week": 7}


def snooze_target(choice: str, *, on: date | None = None, today: date | None = None) -> date:
    """The day "tomorrow" or "next week" (a week from today) means; or the given date."""
    today = today or timezone.localdate()
    if choice in SNOOZE_CHOICES:
        return today + timedelta(days=SNOOZE_CHOICES[choice])
    if choice == "date" and on is not None:
        return on
    raise ValidationError({"until": "Choose tomorrow, next week or a date."})


@transaction.atomic
def task_snooze(*, task: Task, until: date) -> Task:
    """Move an open task to a later day, keeping the day it was first due."""
    if task.done_at is not None:
        raise ValidationError({"until": "This task is done; reopen it to snooze it."})
    today = timezone.localdate()
    if until <= today and until <= task.due_on:
        raise ValidationError({"until": "Snooze to a day after today."})
    check_due_date(until, "until")
    if until != task.due_on:
        if task.original_due_on is None:
            task.original_due_on = task.due_on
        task.due_on = until
        task.snoozed_at = timezone.now()
        task.save(update_fields=["due_on", "original_due_on", "snoozed_at", "updated_at"])
        _task_to_contact(task)
    return task


def can_assign_task(by: User, assignee: User) -> bool:
    """Admins assign to anyone; managers to themselves and the salespeople of the teams they manage."""
    if not assignee.is_active:
        return False
    if by.sees_everything:
        return True
    if by.is_manager:
        return assignee.pk == by.pk or (assignee.team_id is not None and assignee.team.manager_id == by.pk)
    return False


@transaction.atomic
def task_reassign(*, task: Task, assignee: User, by: User) -> Task:
    """A manager gives a task to another salesperson of their team (admins: to anyone).

    The previous assignee, if they cannot see the task's customer, learns in their change
    feed that it left their view.
    """
    if not (by.sees_everything or by.is_manager):
        raise ValidationError({"assigned_to": "Only managers and admins reassign tasks."})
    if not can_assign_task(by, assignee):
        raise ValidationError({"assigned_to": "Choose yourself or a salesperson of a team you manage."})
    previous = task.assigned_to_id
    if previous == assignee.pk:
        return task
    task.assigned_to = assignee
    task.save(update_fields=["assigned_to", "updated_at"])
    customer_id, owner_id = customer_and_owner(task)
    if previous is not None and previous != owner_id:
        from accounts.selectors import visible_customers

        previous_user = User.objects.filter(pk=previous).first()
        if previous_user is not None and not visible_customers(previous_user).filter(pk=customer_id).exists():
            Tombstone.objects.create(
                model="crm.task", object_id=task.pk, external_id=task.external_id, customer_id=customer_id,
                owner_id=previous, reason=Tombstone.Reason.MOVED, now_customer_id=customer_id, deleted_by=by,
            )
    return task
