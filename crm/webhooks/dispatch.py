"""Webhook dispatch and delivery: events read from the committed change feed, signed, sent, retried.

Each subscription reads the change feed (crm/sync.py) from its own stored position, the same way
a syncing client does, as its owner: only records the owner may see, only what has committed
(rows of transactions still running are held back by the feed's snapshot bound), each change
once. Events that are not row changes (an opportunity's status changed, a CLV run completed) are
outbox rows written in the causing transaction and placed in the same feed by the same trigger.
So a rolled-back write sends nothing and no committed change is skipped.

Reading the feed and recording the deliveries happen in one transaction that also moves the
subscription's position; the HTTP requests are sent afterwards by a Celery task per delivery,
retried with exponential backoff. After `WEBHOOK_DISABLE_AFTER_FAILURES` failed attempts in a
row the subscription is disabled and its owner notified.

Signature: `X-CRM-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` with
`X-CRM-Timestamp: <unix seconds>`; see docs/integrations.md for a verification snippet.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

from accounts.selectors import customer_visibility_q, visible_customers
from crm import sync
from crm.webhooks.models import (
    CLV_RUN_COMPLETED,
    CUSTOMER_VALUE_CHANGED,
    EVENT_TYPES,
    OUTBOX_EVENT_TYPES,
    RECORD_EVENT_PREFIXES,
    WebhookAttempt,
    WebhookDelivery,
    WebhookOutboxEvent,
    WebhookSubscription,
)

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-CRM-Signature"
TIMESTAMP_HEADER = "X-CRM-Timestamp"
EVENT_ID_HEADER = "X-CRM-Event-Id"
EVENT_TYPE_HEADER = "X-CRM-Event"
DISPATCH_BATCH = 500  # feed changes read per subscription per pass
DISPATCH_PASSES = 20  # passes per subscription per dispatch run (more wait for the next kick)
ERROR_TEXT_MAX = 500
SEQ_MAX = 2**62


# --- subscriptions -------------------------------------------------------------------------


def _validate(*, url: str, event_types: list[str]) -> None:
    errors: dict[str, list[str]] = {}
    if urlsplit(url).scheme not in ("http", "https"):
        errors["url"] = ["Give an http:// or https:// address."]
    if not event_types:
        errors["event_types"] = ["Choose at least one event type."]
    unknown = [t for t in event_types if t not in EVENT_TYPES]
    if unknown:
        errors["event_types"] = [f"Unknown event type(s): {', '.join(unknown)}. Known: {', '.join(EVENT_TYPES)}."]
    if errors:
        raise ValidationError(errors)


def feed_head() -> str:
    """The feed position of "now": a new subscription is sent what commits from here on."""
    if connection.vendor == "postgresql":
        return f"{sync._stable_xmin()}.-1"
    with connection.cursor() as cursor:
        cursor.execute("SELECT value FROM crm_change_counter WHERE id = 1")
        row = cursor.fetchone()
    return f"0.{2 * (row[0] if row else 0) + 1}"


@transaction.atomic
def subscription_create(
    *, owner, name: str, url: str, event_types: list[str], value_threshold: Decimal | None = None
) -> WebhookSubscription:
    """A subscription of `owner`, starting at the current end of the feed. Its secret is read once, here."""
    event_types = list(dict.fromkeys(event_types))
    _validate(url=url, event_types=event_types)
    return WebhookSubscription.objects.create(
        owner=owner, name=name, url=url, event_types=event_types, value_threshold=value_threshold,
        feed_position=feed_head(),
    )


@transaction.atomic
def subscription_update(*, subscription: WebhookSubscription, data: dict[str, Any]) -> WebhookSubscription:
    """Change name, url, event types, threshold or is_active; re-enabling clears the failure count."""
    for name in ("name", "url", "event_types", "value_threshold", "is_active"):
        if name in data:
            setattr(subscription, name, data[name])
    _validate(url=subscription.url, event_types=subscription.event_types)
    if data.get("is_active") and subscription.disabled_at:
        subscription.disabled_at = None
        subscription.disabled_reason = ""
        subscription.consecutive_failures = 0
    subscription.save()
    return subscription


def subscriptions_visible_to(user):
    """Admins see every subscription; everyone else their own."""
    qs = WebhookSubscription.objects.select_related("owner")
    return qs if user.sees_everything else qs.filter(owner=user)


# --- reading the feed ----------------------------------------------------------------------


@dataclass
class _Item:
    position: sync.Position
    event_type: str
    object_id: int | None
    payload_data: Any
    external_id: str | None = None


def _position(text: str) -> sync.Position:
    txid, seq = text.split(".")
    return sync.Position(int(txid), int(seq))


def _serialize(feed_type: str, instances: list) -> list[dict]:
    from crm.api.views import FEED_SERIALIZERS

    serializer_class = FEED_SERIALIZERS[feed_type][0]
    return [serializer_class(obj, context={}).data for obj in instances]


def _wanted_feed_types(event_types: set[str]) -> dict[str, set[str]]:
    """Feed type -> the ops the subscription wants of it."""
    wanted: dict[str, set[str]] = {}
    for feed_type, prefix in RECORD_EVENT_PREFIXES.items():
        if feed_type not in sync.FEED_TYPES:
            continue  # e.g. tasks before crm.Task is in the change feed
        ops = {op for op in ("created", "updated", "deleted") if f"{prefix}.{op}" in event_types}
        if ops:
            wanted[feed_type] = ops
    return wanted


def _read(subscription: WebhookSubscription, after: sync.Position) -> tuple[list[_Item], sync.Position, bool]:
    """The next events for `subscription` after `after`, and the position to store."""
    owner = subscription.owner
    event_types = set(subscription.event_types)
    xmin = sync._stable_xmin()
    found: list[tuple[sync.Position, str, Any]] = []  # (position, kind, object)
    wanted = _wanted_feed_types(event_types)
    for feed_type, ops in wanted.items():
        model = sync.FEED_TYPES[feed_type]
        if not ops & {"created", "updated"}:
            continue
        qs = model.objects.visible_to(owner)
        from crm.api.views import FEED_SERIALIZERS

        related = FEED_SERIALIZERS[feed_type][1]
        qs = qs.select_related(*related) if related else qs
        if feed_type == "contacts":
            qs = qs.prefetch_related("people")
        for instance in sync._after(qs, after, xmin)[: DISPATCH_BATCH + 1]:
            found.append((sync.Position(instance.change_txid, instance.change_seq), feed_type, instance))
    deleted_labels = [sync.FEED_TYPES[t]._meta.label_lower for t, ops in wanted.items() if "deleted" in ops]
    if deleted_labels:
        tombstones = sync.visible_tombstones(owner).filter(model__in=deleted_labels)
        for tombstone in sync._after(tombstones, after, xmin)[: DISPATCH_BATCH + 1]:
            found.append((sync.Position(tombstone.change_txid, tombstone.change_seq), "tombstone", tombstone))
    outbox_types = {t for t in event_types if t in OUTBOX_EVENT_TYPES}
    if CUSTOMER_VALUE_CHANGED in event_types:
        outbox_types.add(CLV_RUN_COMPLETED)  # value changes are computed when a run completes
    if outbox_types:
        outbox = WebhookOutboxEvent.objects.filter(event_type__in=outbox_types).filter(
            Q(customer_id__isnull=True) | Q(customer_id__in=visible_customers(owner).values("pk"))
        )
        for event in sync._after(outbox, after, xmin)[: DISPATCH_BATCH + 1]:
            found.append((sync.Position(event.change_txid, event.change_seq), "outbox", event))
    found.sort(key=lambda item: item[0])
    page = found[:DISPATCH_BATCH]
    more = len(found) > DISPATCH_BATCH
    last = max([after, *[p for p, _, _ in page]])
    if not more and connection.vendor == "postgresql" and xmin > 1:
        # Every committed change below the snapshot bound has been seen: move up to it, so the
        # next read starts there (anything committing later has a larger transaction id).
        last = max(last, sync.Position(xmin - 1, SEQ_MAX))
    return _items(subscription, page, event_types), last, more


def _items(subscription, page, event_types: set[str]) -> list[_Item]:
    items: list[_Item] = []
    by_type: dict[str, list] = {}
    for _, kind, obj in page:
        if kind not in ("tombstone", "outbox"):
            by_type.setdefault(kind, []).append(obj)
    data = {}
    for feed_type, instances in by_type.items():
        for obj, row in zip(instances, _serialize(feed_type, instances), strict=True):
            data[(feed_type, obj.pk)] = row
    for position, kind, obj in page:
        if kind == "tombstone":
            feed_type = sync.TYPE_OF_LABEL[obj.model]
            event_type = f"{RECORD_EVENT_PREFIXES[feed_type]}.deleted"
            if event_type in event_types:
                items.append(_Item(position, event_type, obj.object_id, {
                    "id": obj.object_id, "external_id": obj.external_id,
                    "deleted_at": obj.deleted_at, "reason": obj.reason,
                }, obj.external_id))
        elif kind == "outbox":
            items.extend(_outbox_items(subscription, position, obj, event_types))
        else:
            op = "created" if obj.change_seq % 2 == 0 else "updated"
            event_type = f"{RECORD_EVENT_PREFIXES[kind]}.{op}"
            if event_type in event_types:
                items.append(_Item(position, event_type, obj.pk, data[(kind, obj.pk)], obj.external_id))
    return items


def _outbox_items(subscription, position, event: WebhookOutboxEvent, event_types: set[str]) -> list[_Item]:
    items = []
    if event.event_type in event_types:
        items.append(_Item(position, event.event_type, event.object_id, event.data))
    if event.event_type == CLV_RUN_COMPLETED and CUSTOMER_VALUE_CHANGED in event_types:
        items.extend(_value_changes(subscription, position, event))
    return items


def _value_changes(subscription, position, event: WebhookOutboxEvent) -> list[_Item]:
    """customer.value_changed for each customer the owner sees whose CLV moved by at least the threshold."""
    from clv.models import ClvRun, CustomerValue

    run_id = event.object_id
    previous = (
        ClvRun.objects.filter(status=ClvRun.Status.SUCCEEDED, pk__lt=run_id).order_by("-pk").values_list("pk", flat=True).first()
    )
    if previous is None:
        return []
    threshold = subscription.value_threshold or Decimal("0.01")
    before = CustomerValue.objects.filter(run_id=previous)
    rows = (
        CustomerValue.objects.filter(run_id=run_id)
        .filter(customer_visibility_q(subscription.owner, "customer__"))
        .annotate(previous_clv=Subquery(before.filter(customer_id=OuterRef("customer_id")).values("clv")[:1]))
        .values("customer_id", "customer__external_id", "clv", "previous_clv")
    )
    items = []
    for row in rows:
        if row["previous_clv"] is None or abs(row["clv"] - row["previous_clv"]) < threshold:
            continue
        items.append(_Item(position, CUSTOMER_VALUE_CHANGED, row["customer_id"], {
            "customer": row["customer_id"], "customer_external_id": row["customer__external_id"],
            "run": run_id, "previous_run": previous, "clv": row["clv"], "previous_clv": row["previous_clv"],
            "change": row["clv"] - row["previous_clv"],
        }, row["customer__external_id"]))
    return items


def dispatch_subscription(subscription_id: int) -> tuple[list[int], bool]:
    """One pass for one subscription: read its next events, record their deliveries, move its position.

    Returns the new deliveries' ids (queued once this commits) and whether more may be waiting.
    Two dispatchers never read the same subscription at once (row lock, skip locked).
    """
    with transaction.atomic():
        subscription = (
            WebhookSubscription.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("owner").filter(pk=subscription_id, is_active=True).first()
        )
        if subscription is None:
            return [], False
        after = _position(subscription.feed_position) if subscription.feed_position else _position(feed_head())
        items, last, more = _read(subscription, after)
        deliveries = [
            WebhookDelivery(
                subscription=subscription, event_id=uuid.uuid4(), event_type=item.event_type,
                object_id=item.object_id, payload={},
            )
            for item in items
        ]
        now = timezone.now()
        for delivery, item in zip(deliveries, items, strict=True):
            delivery.payload = json.loads(json.dumps({
                "id": str(delivery.event_id), "type": item.event_type, "created_at": now,
                "object_id": item.object_id, "external_id": item.external_id, "data": item.payload_data,
            }, cls=DjangoJSONEncoder))
        if deliveries:
            WebhookDelivery.objects.bulk_create(deliveries)
        subscription.feed_position = f"{last.txid}.{last.seq}"
        subscription.save(update_fields=["feed_position"])
        ids = [d.pk for d in deliveries]
        transaction.on_commit(lambda: _queue(ids))
    return ids, more


def _queue(delivery_ids: list[int]) -> None:
    from crm.webhooks.tasks import webhook_deliver_task

    for pk in delivery_ids:
        webhook_deliver_task.delay(pk)


def dispatch_all() -> int:
    """Every active subscription's pending events turned into deliveries; returns how many."""
    total = 0
    for pk in WebhookSubscription.objects.filter(is_active=True).values_list("pk", flat=True):
        for _ in range(DISPATCH_PASSES):
            ids, more = dispatch_subscription(pk)
            total += len(ids)
            if not more:
                break
    return total


def kick() -> None:
    """Ask for a dispatch soon (after a write committed); the beat schedule is the backstop."""
    from crm.webhooks.tasks import webhooks_dispatch_task

    if not WebhookSubscription.objects.filter(is_active=True).exists():
        return
    webhooks_dispatch_task.delay()


# --- sending -------------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, tolerance: int = 300) -> bool:
    """What a receiver does (documented in docs/integrations.md): recompute and compare, reject old ones."""
    if abs(time.time() - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


class DeliveryFailed(Exception):
    """The receiver did not answer 2xx (or could not be reached): retry later."""


def backoff_seconds(attempt: int) -> float:
    """Exponential: base × 2^(attempt-1), capped."""
    return min(settings.WEBHOOK_RETRY_BASE_SECONDS * 2 ** (attempt - 1), settings.WEBHOOK_RETRY_MAX_SECONDS)


def deliver(delivery_id: int) -> str:
    """Send one delivery once; record the attempt. Raises DeliveryFailed when it should be retried."""
    delivery = WebhookDelivery.objects.select_related("subscription").filter(pk=delivery_id).first()
    if delivery is None or delivery.status == WebhookDelivery.Status.SUCCEEDED:
        return "skipped"
    subscription = delivery.subscription
    if not subscription.is_active:
        return "disabled"
    body = json.dumps(delivery.payload, separators=(",", ":")).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "CLV-CRM-Webhooks/1",
        EVENT_ID_HEADER: str(delivery.event_id),
        EVENT_TYPE_HEADER: delivery.event_type,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(subscription.secret, timestamp, body),
    }
    started = time.perf_counter()
    status_code, error = None, ""
    try:
        response = requests.post(subscription.url, data=body, headers=headers,
                                 timeout=settings.WEBHOOK_TIMEOUT_SECONDS, allow_redirects=False)
        status_code = response.status_code
    except requests.RequestException as exc:
        error = f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_MAX]
    duration_ms = int((time.perf_counter() - started) * 1000)
    ok = status_code is not None and 200 <= status_code < 300
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
        delivery.attempts += 1
        delivery.last_status_code = status_code
        WebhookAttempt.objects.create(delivery=delivery, number=delivery.attempts, status_code=status_code,
                                      duration_ms=duration_ms, error=error or ("" if ok else f"HTTP {status_code}"))
        subscription = WebhookSubscription.objects.select_for_update().get(pk=subscription.pk)
        if ok:
            delivery.status = WebhookDelivery.Status.SUCCEEDED
            delivery.delivered_at = timezone.now()
            subscription.consecutive_failures = 0
            subscription.last_success_at = delivery.delivered_at
        else:
            subscription.consecutive_failures += 1
            if delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
                delivery.status = WebhookDelivery.Status.FAILED
            if subscription.consecutive_failures >= settings.WEBHOOK_DISABLE_AFTER_FAILURES and subscription.is_active:
                _disable(subscription, f"{subscription.consecutive_failures} failed attempts in a row "
                                       f"(last: {error or f'HTTP {status_code}'}).")
        delivery.save(update_fields=["attempts", "last_status_code", "status", "delivered_at"])
        subscription.save(update_fields=["consecutive_failures", "last_success_at", "is_active", "disabled_at",
                                         "disabled_reason"])
    if ok:
        return "delivered"
    if delivery.status == WebhookDelivery.Status.FAILED or not subscription.is_active:
        return "gave up"
    raise DeliveryFailed(error or f"HTTP {status_code}")


def _disable(subscription: WebhookSubscription, reason: str) -> None:
    subscription.is_active = False
    subscription.disabled_at = timezone.now()
    subscription.disabled_reason = reason[:300]
    log.warning("webhook subscription %s disabled: %s", subscription.pk, reason)
    owner = subscription.owner
    if owner.email:
        transaction.on_commit(lambda: send_mail(
            f"Webhook “{subscription.name}” was disabled",
            f"Deliveries to {subscription.url} failed repeatedly, so the subscription was disabled: {reason}\n"
            "Fix the receiver, then re-enable it on the Webhooks page or with PATCH is_active=true.",
            None, [owner.email], fail_silently=True,
        ))


@transaction.atomic
def delivery_redeliver(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a delivery again (whatever its status), with a fresh timestamp and signature."""
    delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery.pk)
    delivery.status = WebhookDelivery.Status.PENDING
    delivery.save(update_fields=["status"])
    transaction.on_commit(lambda: _queue([delivery.pk]))
    return delivery
