"""Celery tasks of the webhooks: thin, ids in, safe to run twice."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings


@shared_task(name="crm.webhooks.dispatch")
def webhooks_dispatch_task() -> int:
    """Read the change feed for every active subscription and queue the deliveries (beat + after-commit kick)."""
    from crm.webhooks.dispatch import dispatch_all

    return dispatch_all()


@shared_task(name="crm.webhooks.deliver", bind=True, max_retries=None, acks_late=True)
def webhook_deliver_task(self, delivery_id: int) -> str:
    """POST one delivery; on failure retried with exponential backoff up to WEBHOOK_MAX_ATTEMPTS attempts."""
    from crm.webhooks.dispatch import DeliveryFailed, backoff_seconds, deliver

    if self.request.is_eager:  # no broker (embedded default, tests): the attempts follow at once
        for _ in range(settings.WEBHOOK_MAX_ATTEMPTS):
            try:
                return deliver(delivery_id)
            except DeliveryFailed:
                continue
        return "gave up"
    try:
        return deliver(delivery_id)
    except DeliveryFailed as exc:
        attempt = self.request.retries + 1
        if attempt >= settings.WEBHOOK_MAX_ATTEMPTS:
            return "gave up"
        raise self.retry(exc=exc, countdown=backoff_seconds(attempt)) from None
