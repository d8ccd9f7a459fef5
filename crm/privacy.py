"""Personal-data requests about a person of a customer's decision-making unit (admins only).

- `person_personal_data`: everything the CRM holds about the person, as one JSON-ready dict:
  their fields, the contacts they took part in, the tasks that follow up those contacts or
  name them, their change-history rows, and the webhook deliveries about them.
- `person_erase`: anonymise the person. The row stays (with its id, external_id, customer and
  role in the decision-making unit) so the contacts they took part in keep their facts and
  counts; their name, e-mail, phone and job title are blanked and `erased_at` is set. The
  erasure is one change in the history (via "person_erase", by whom), their personal values
  are scrubbed from their earlier history rows, from queued and logged webhook payloads about
  them, from stored API replies (Idempotency-Key) and from the admin's change log. The update
  moves the person in the change feed, so sync clients and webhook subscribers receive the
  anonymised record (`erased_at` set) and drop what they held. Erasing twice changes nothing.

Messages already delivered to other systems cannot be recalled from here: the person.updated
event that follows an erasure is what tells them (docs/security.md).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from crm.history import history_context, history_recorded
from crm.models import Contact, Person, Task

ERASED_LAST_NAME = "Erased person"
# The person's personal values and what they become; the rest of the row (role, customer,
# external_id, is_active) is about the relationship and stays.
ERASED_VALUES: dict[str, Any] = {
    "first_name": "",
    "last_name": ERASED_LAST_NAME,
    "job_title": "",
    "email": "",
    "phone": "",
}
PERSON_FIELDS = ("id", "external_id", "first_name", "last_name", "job_title", "dmu_role", "email", "phone",
                 "is_active", "is_primary", "created_at", "updated_at", "erased_at")
CONTACT_FIELDS = ("id", "external_id", "occurred_at", "channel", "direction", "subject", "notes", "outcome",
                  "follow_up_on", "follow_up_done_at")
TASK_FIELDS = ("id", "external_id", "title", "notes", "due_on", "done_at", "outcome", "contact_id")


def may_handle_personal_data(user) -> bool:
    """Personal-data requests are for admins."""
    return bool(user and user.is_authenticated and user.sees_everything)


def _require_admin(user) -> None:
    if not may_handle_personal_data(user):
        raise PermissionDenied("Only admins handle personal-data requests.")


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return DjangoJSONEncoder().default(value)


def _person_fields(person: Person) -> dict[str, Any]:
    row = {name: getattr(person, name) for name in PERSON_FIELDS}
    row["customer"] = {"id": person.customer_id, "external_id": person.customer.external_id,
                       "name": person.customer.name}
    return row


def _mentions(person: Person) -> Q | None:
    """Tasks naming the person (full name, e-mail) in their title or notes."""
    terms = [t for t in (f"{person.first_name} {person.last_name}".strip(), person.email) if len(t) >= 3]
    if not terms or person.erased_at is not None:
        return None
    q = Q()
    for term in terms:
        q |= Q(title__icontains=term) | Q(notes__icontains=term)
    return q


def person_personal_data(*, person: Person, requested_by: User) -> dict[str, Any]:
    """Everything held about `person`, for a personal-data request (JSON-ready)."""
    _require_admin(requested_by)
    from crm.history_models import PersonHistory
    from crm.webhooks.models import WebhookDelivery

    contacts = list(Contact.objects.filter(people=person).select_related("salesperson").order_by("occurred_at", "id"))
    tasks_q = Q(contact__in=[c.pk for c in contacts])
    mentions = _mentions(person)
    if mentions is not None:
        tasks_q |= Q(customer_id=person.customer_id) & mentions
    tasks = Task.objects.filter(tasks_q).order_by("due_on", "id")
    fields = [f.name for f in PersonHistory._meta.fields if f.name in PERSON_FIELDS or f.name == "customer"]
    history = []
    for event in PersonHistory.objects.filter(pgh_obj_id=person.pk).select_related("pgh_context").order_by("pgh_id"):
        context = dict(event.pgh_context.metadata) if event.pgh_context_id else {}
        history.append({
            "id": event.pgh_id, "at": event.pgh_created_at, "label": event.pgh_label,
            "by": {k: context[k] for k in ("user", "username", "token", "token_name", "via", "url") if k in context},
            "values": {name: getattr(event, name if name != "customer" else "customer_id") for name in fields},
        })
    deliveries = WebhookDelivery.objects.filter(event_type__startswith="person.", object_id=person.pk).select_related(
        "subscription"
    ).order_by("id")
    data = {
        "generated_at": timezone.now(),
        "generated_by": requested_by.get_username(),
        "person": _person_fields(person),
        "contacts": [
            {**{name: getattr(c, name) for name in CONTACT_FIELDS},
             "salesperson": c.salesperson.get_username() if c.salesperson_id else None}
            for c in contacts
        ],
        "tasks": [{name: getattr(t, name) for name in TASK_FIELDS} for t in tasks],
        "history_recorded": history_recorded(),
        "history": history,
        "webhook_deliveries": [
            {"id": d.pk, "subscription": d.subscription.name, "event_type": d.event_type, "status": d.status,
             "created_at": d.created_at, "delivered_at": d.delivered_at}
            for d in deliveries
        ],
    }
    return _jsonable(data)


@transaction.atomic
def person_erase(*, person: Person, erased_by: User) -> dict[str, Any]:
    """Anonymise `person` and scrub their personal values wherever the CRM kept copies; returns counts.

    Safe to run twice: an erased person is not changed again (their copies are scrubbed again).
    """
    _require_admin(erased_by)
    person = Person.objects.select_for_update().select_related("customer").get(pk=person.pk)
    already = person.erased_at is not None
    if not already:
        with history_context(via="person_erase", user=erased_by.pk, username=erased_by.get_username()):
            for name, value in ERASED_VALUES.items():
                setattr(person, name, value)
            person.is_primary = False
            person.erased_at = timezone.now()
            person.save(update_fields=[*ERASED_VALUES, "is_primary", "erased_at", "updated_at"])
    counts = {
        "history_rows": _scrub_history(person),
        "webhook_deliveries": _scrub_deliveries(person),
        "api_replies": _scrub_idempotency_records(person),
        "admin_log": _scrub_admin_log(person),
    }
    return {"person": person.pk, "erased_at": person.erased_at, "already_erased": already, "scrubbed": counts}


def _scrub_history(person: Person) -> int:
    """Every history row of the person holds the anonymised values (the erasure itself shows as
    the change of erased_at, by whom, when)."""
    from crm.history_models import PersonHistory

    return PersonHistory.objects.filter(pgh_obj_id=person.pk).exclude(**ERASED_VALUES).update(**ERASED_VALUES)


def _erased_record(record: Any) -> Any:
    if isinstance(record, dict):
        return {k: (ERASED_VALUES[k] if k in ERASED_VALUES else v) for k, v in record.items()}
    return record


def _scrub_deliveries(person: Person) -> int:
    """Queued, failed and delivered webhook payloads about the person keep only anonymised values
    (a retry sends those; the delivery log shows no more)."""
    from crm.webhooks.models import WebhookDelivery

    changed = 0
    deliveries = WebhookDelivery.objects.select_for_update().filter(event_type__startswith="person.",
                                                                    object_id=person.pk)
    for delivery in deliveries:
        payload = dict(delivery.payload or {})
        scrubbed = {**payload, "data": _erased_record(payload.get("data"))}
        if scrubbed != payload:
            delivery.payload = scrubbed
            delivery.save(update_fields=["payload"])
            changed += 1
    return changed


def _scrub_idempotency_records(person: Person) -> int:
    """Stored replies to API writes of the person (replayed on a retried Idempotency-Key)."""
    from crm.models import IdempotencyRecord

    changed = 0
    records = IdempotencyRecord.objects.select_for_update().filter(path__startswith="/api/v1/people/",
                                                                   response_body__id=person.pk)
    for record in records:
        scrubbed = _erased_record(record.response_body)
        if scrubbed != record.response_body:
            record.response_body = scrubbed
            record.save(update_fields=["response_body"])
            changed += 1
    return changed


def _scrub_admin_log(person: Person) -> int:
    """The Django admin's change log names the object it changed ("Anna Berg")."""
    from django.contrib.admin.models import LogEntry
    from django.contrib.contenttypes.models import ContentType

    kind = ContentType.objects.get_for_model(Person)
    return (LogEntry.objects.filter(content_type=kind, object_id=str(person.pk))
            .exclude(object_repr=ERASED_LAST_NAME).update(object_repr=ERASED_LAST_NAME))
