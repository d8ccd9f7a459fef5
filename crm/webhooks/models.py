"""Webhook subscriptions, the outbox of events that are not row changes, deliveries and their attempts.

Imported from crm/models.py, so these are models of the crm app.
"""

from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.db import models

__all__ = ["WebhookAttempt", "WebhookDelivery", "WebhookOutboxEvent", "WebhookSubscription"]

# Event types, by the feed type they follow. crm.Task's feed type "tasks" maps to task.* once it
# is in the change feed (crm.sync.FEED_TYPES); until then task events are accepted but never sent.
RECORD_EVENT_PREFIXES = {
    "customers": "customer",
    "people": "person",
    "purchases": "purchase",
    "holdings": "holding",
    "usage": "usage",
    "contacts": "contact",
    "events": "event",
    "opportunities": "opportunity",
    "tasks": "task",
}
RECORD_EVENT_TYPES = [f"{prefix}.{op}" for prefix in RECORD_EVENT_PREFIXES.values() for op in ("created", "updated", "deleted")]
OPPORTUNITY_STATUS_CHANGED = "opportunity.status_changed"
CLV_RUN_COMPLETED = "clv_run.completed"
CUSTOMER_VALUE_CHANGED = "customer.value_changed"
OUTBOX_EVENT_TYPES = [OPPORTUNITY_STATUS_CHANGED, CLV_RUN_COMPLETED]
EVENT_TYPES = [*RECORD_EVENT_TYPES, OPPORTUNITY_STATUS_CHANGED, CLV_RUN_COMPLETED, CUSTOMER_VALUE_CHANGED]


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


class WebhookSubscription(models.Model):
    """Where to send which events, on behalf of `owner`: payloads hold only what the owner may see."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_subscriptions")
    name = models.CharField(max_length=100)
    url = models.URLField(max_length=500, help_text="Receives a POST with a JSON body per event.")
    event_types = models.JSONField(default=list, help_text="Event types to send, e.g. customer.updated.")
    value_threshold = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True,
        help_text="For customer.value_changed: the change of CLV between two runs that is worth a notice.",
    )
    secret = models.CharField(max_length=100, default=new_secret, help_text="HMAC-SHA256 key; shown once.")
    is_active = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0, help_text="Failed attempts since the last success.")
    # Where this subscription has read the change feed to (crm.sync position "txid.seq").
    feed_position = models.CharField(max_length=60, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_success_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return f"{self.name} → {self.url}"


class WebhookOutboxEvent(models.Model):
    """An event that is not a row change (an opportunity's status changed, a CLV run completed),
    written in the transaction that caused it and placed in the change feed by the same trigger,
    so it is sent only once that transaction has committed, in order with the row changes."""

    event_type = models.CharField(max_length=50)
    customer_id = models.BigIntegerField(null=True, blank=True, help_text="Whose customer it concerns, if any.")
    object_id = models.BigIntegerField(null=True, blank=True)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    change_txid = models.BigIntegerField(default=0, editable=False)
    change_seq = models.BigIntegerField(default=0, editable=False)

    class Meta:
        indexes = [models.Index(fields=["change_txid", "change_seq"], name="webhookoutbox_change_pos")]

    def __str__(self) -> str:
        return f"{self.event_type} #{self.object_id}"


class WebhookDelivery(models.Model):
    """One event for one subscription: its payload (fixed when the event is read from the feed)
    and where its delivery stands."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Delivered"
        FAILED = "failed", "Failed (gave up)"

    subscription = models.ForeignKey(WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    event_type = models.CharField(max_length=50)
    object_id = models.BigIntegerField(null=True, blank=True)
    payload = models.JSONField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["subscription", "-id"], name="webhookdelivery_sub_idx")]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"


class WebhookAttempt(models.Model):
    """One HTTP attempt of a delivery: the delivery log."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    at = models.DateTimeField(auto_now_add=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number}: {self.status_code or self.error}"
