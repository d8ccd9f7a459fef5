"""The change history: who changed which record, when, old -> new per field.

Recorded by django-pghistory's database triggers (crm/history_models.py), so every write path
is covered: services, admin, bulk upsert (INSERT ... SELECT FROM unnest), the CSV import
(COPY) and raw SQL. Who made a change is the transaction's context: `HistoryContextMiddleware`
attaches the signed-in user, or the API token's user and token, to every write request;
commands and tasks use `history_context(via=...)`.

Reads are bounded by the visibility rule: a record's history is shown to whoever may see
its customer now (products: everyone; tasks: also whoever they are assigned to now).

History needs PostgreSQL: on SQLite (the embedded default) the tables exist but stay empty,
and `history_recorded()` is False so pages and the API say so.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pghistory
from django.core.handlers.wsgi import WSGIRequest
from django.db import connection, models
from django.db.models import OuterRef, Subquery
from pghistory.middleware import DjangoRequest

from accounts.selectors import customer_visibility_q
from crm.history_models import EVENT_MODELS, HISTORY_MODELS, NOT_TRACKED, QUIET_FIELDS

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OPS = {"insert": "created", "update": "updated", "delete": "deleted"}
RESOURCE_OF_MODEL = {model: name for name, model in HISTORY_MODELS.items()}
# The lookup from each tracked model's snapshot to the customer, for the visibility rule.
CUSTOMER_PATHS = {"crm.customer": "pgh_obj__", "crm.usage": "holding__customer__", "crm.product": None}


def history_recorded() -> bool:
    """True where the triggers record history (PostgreSQL)."""
    return connection.vendor == "postgresql"


@contextlib.contextmanager
def history_context(**metadata: Any) -> Iterator[None]:
    """Attach `metadata` (user=<id>, via="import_purchases", ...) to the changes made inside."""
    if not history_recorded():
        yield
        return
    with pghistory.context(**metadata):
        yield


# --- who made the change -------------------------------------------------------------------


class _ActorRequest(DjangoRequest):
    """pghistory's request that records `request.user` when it is set (DRF sets it in the view,
    after the middleware), and here also the API token (`request.auth`)."""

    def __setattr__(self, attr, value):
        if attr == "auth" and value is not None and getattr(value, "_meta", None) is not None:
            if value._meta.label_lower == "accounts.apitoken":
                pghistory.context(token=value.pk, token_name=value.name)
        return super().__setattr__(attr, value)


class _ActorWSGIRequest(_ActorRequest, WSGIRequest):
    pass


class HistoryContextMiddleware:
    """For every write request on PostgreSQL: the user (or token) and the path, as the context
    of the changes it makes."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method not in WRITE_METHODS or not history_recorded():
            return self.get_response(request)
        user = getattr(request, "user", None)
        user_id = user.pk if getattr(user, "is_authenticated", False) else None
        with pghistory.context(user=user_id, url=request.path, method=request.method):
            if isinstance(request, WSGIRequest):
                request.__class__ = _ActorWSGIRequest
            return self.get_response(request)


# --- reading it ----------------------------------------------------------------------------


@dataclass
class Change:
    field: str
    label: str
    old: Any
    new: Any


@dataclass
class HistoryEntry:
    id: int
    resource: str
    object_id: int
    op: str  # created, updated, deleted
    at: datetime.datetime
    actor: dict[str, Any]
    changes: list[Change] = field(default_factory=list)
    title: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "resource": self.resource,
            "object_id": self.object_id,
            "op": self.op,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "changes": [{"field": c.field, "old": _jsonable(c.old), "new": _jsonable(c.new)} for c in self.changes],
        }


def _jsonable(value):
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def tracked_fields(model: type[models.Model]) -> list[models.Field]:
    """The tracked model's fields kept in its snapshots, in declaration order."""
    return [
        f for f in model._meta.concrete_fields
        if f.name not in NOT_TRACKED and f.name != "created_at" and not f.primary_key
    ]


def visible_events(model: type[models.Model], user) -> models.QuerySet:
    """The history rows of `model` whose record `user` may see now, with who made them."""
    event_model = EVENT_MODELS[model]
    qs = event_model.objects.select_related("pgh_context")
    path = CUSTOMER_PATHS.get(model._meta.label_lower, "customer__")
    if path is None:
        if not getattr(user, "is_authenticated", False) or not user.is_active:
            return qs.none()
        return qs
    visible = customer_visibility_q(user, path)
    if model._meta.label_lower == "crm.task" and getattr(user, "is_authenticated", False) and user.is_active \
            and not user.sees_everything:
        visible |= models.Q(pgh_obj__assigned_to=user)  # as crm.models.TaskQuerySet: the assignee sees it too
    return qs.filter(visible)


def object_events(model: type[models.Model], pk: int, user) -> models.QuerySet:
    return visible_events(model, user).filter(pgh_obj_id=pk)


def customer_events(model: type[models.Model], customer_id: int, user) -> models.QuerySet:
    """The history of the records of one customer (the customer itself included)."""
    qs = visible_events(model, user)
    label = model._meta.label_lower
    if label == "crm.customer":
        return qs.filter(pgh_obj_id=customer_id)
    if label == "crm.usage":
        return qs.filter(holding__customer_id=customer_id)
    return qs.filter(customer_id=customer_id)


def _actor(context) -> dict[str, Any]:
    metadata = dict(context.metadata) if context is not None else {}
    return {
        key: metadata[key]
        for key in ("user", "username", "token", "token_name", "via", "url", "method")
        if metadata.get(key) is not None
    }


def entries(model: type[models.Model], events) -> list[HistoryEntry]:
    """History entries for a page of `model`'s events: each compared with the record's event
    before it (one query for all predecessors), so an update lists the fields it changed."""
    events = list(events)
    if not events:
        return []
    event_model = EVENT_MODELS[model]
    fields = tracked_fields(model)
    # Fields whose change alone records nothing (an opportunity's scores and words, re-computed by
    # the engine every night): an update lists them not, or the engine's changes since the record's
    # last event would read as made by whoever changed its status.
    quiet = set(QUIET_FIELDS.get(model, ()))
    previous_ids = dict(
        event_model.objects.filter(pk__in=[e.pk for e in events])
        .annotate(
            previous_id=Subquery(
                event_model.objects.filter(pgh_obj_id=OuterRef("pgh_obj_id"), pk__lt=OuterRef("pk"))
                .order_by("-pk")
                .values("pk")[:1]
            )
        )
        .values_list("pk", "previous_id")
    )
    previous = event_model.objects.in_bulk([pk for pk in previous_ids.values() if pk is not None])
    usernames = _usernames(events)
    resource = RESOURCE_OF_MODEL[model]
    result = []
    for event in events:
        before = previous.get(previous_ids.get(event.pk))
        op = OPS.get(event.pgh_label, event.pgh_label)
        changes = []
        for f in fields:
            new = getattr(event, f.attname)
            if op == "deleted":
                old, new = new, None
                if old in (None, ""):
                    continue
            elif before is None:
                old = None
                if new in (None, "") and op == "created":
                    continue
            else:
                old = getattr(before, f.attname)
                if old == new or (op == "updated" and f.name in quiet):
                    continue
            changes.append(Change(f.name, str(f.verbose_name), old, new))
        if op == "updated" and before is not None and not changes:
            continue  # nothing the history keeps changed
        actor = _actor(event.pgh_context)
        if "user" in actor and actor["user"] in usernames:
            actor["username"] = usernames[actor["user"]]
        title = _title(model, event)
        result.append(HistoryEntry(event.pk, resource, event.pgh_obj_id, op, event.pgh_created_at, actor, changes, title))
    return result


def _title(model, event) -> str:
    for name in ("name", "subject", "title", "sku", "last_name", "order_ref"):
        value = getattr(event, name, "")
        if value:
            return str(value)
    return f"{model._meta.verbose_name} #{event.pgh_obj_id}"


def _usernames(events) -> dict[int, str]:
    from accounts.models import User

    ids = {e.pgh_context.metadata.get("user") for e in events if e.pgh_context is not None}
    ids.discard(None)
    return dict(User.objects.filter(pk__in=ids).values_list("pk", "username")) if ids else {}


def account_history(customer_id: int, user, *, limit: int = 100) -> list[HistoryEntry]:
    """The latest `limit` changes of one customer and its records, newest first."""
    collected: list[HistoryEntry] = []
    for model in HISTORY_MODELS.values():
        if model._meta.label_lower == "crm.product":
            continue
        events = customer_events(model, customer_id, user).order_by("-pgh_id")[:limit]
        collected.extend(entries(model, events))
    collected.sort(key=lambda e: (e.at, e.id), reverse=True)
    return collected[:limit]


# --- the History tab of Account 360 --------------------------------------------------------

ACCOUNT_HISTORY_LIMIT = 100


def _display(value, names: dict) -> str:
    from django.utils import timezone

    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime.datetime):
        return timezone.localtime(value).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return f"{value.normalize():,f}" if value == value.to_integral() else f"{value:,}"
    if isinstance(value, dict | list):
        return "(data)"
    return str(names.get(value, value)) if names else str(value)


def account_history_context(customer, user, *, limit: int = ACCOUNT_HISTORY_LIMIT) -> dict[str, Any]:
    """What the History tab shows: the latest changes of the customer and its records, with
    users and products named and values formatted."""
    from accounts.models import User
    from crm.models import Product

    found = account_history(customer.pk, user, limit=limit)
    user_ids, product_ids = set(), set()
    for entry in found:
        for change in entry.changes:
            target = _relation_target(entry.resource, change.field)
            bucket = user_ids if target == "user" else product_ids if target == "product" else None
            if bucket is not None:
                bucket.update(v for v in (change.old, change.new) if v is not None)
    names = {
        "user": dict(User.objects.filter(pk__in=user_ids).values_list("pk", "username")),
        "product": dict(Product.objects.filter(pk__in=product_ids).values_list("pk", "sku")),
    }
    for entry in found:
        for change in entry.changes:
            lookup = names.get(_relation_target(entry.resource, change.field), {})
            change.old_text = _display(change.old, lookup)
            change.new_text = _display(change.new, lookup)
    return {"history_entries": found, "history_recorded": history_recorded(), "history_limit": limit}


def _relation_target(resource: str, field_name: str) -> str | None:
    model = HISTORY_MODELS[resource]
    try:
        f = model._meta.get_field(field_name)
    except Exception:  # noqa: BLE001  (a field removed since the change was recorded)
        return None
    if not f.is_relation:
        return None
    label = f.related_model._meta.label_lower
    return "user" if label == "accounts.user" else "product" if label == "crm.product" else None
