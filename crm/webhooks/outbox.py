"""Events that are not row changes, written in the transaction that causes them (the outbox).

The change-feed trigger places each outbox row like a row change, so the dispatcher sends it
only once that transaction has committed, in order with the changes around it.
"""

from __future__ import annotations

from django.db import connection

from crm.webhooks.models import CLV_RUN_COMPLETED, OPPORTUNITY_STATUS_CHANGED, WebhookOutboxEvent


def opportunity_status_changed(*, opportunity, previous: str) -> None:
    if previous == opportunity.status:
        return
    WebhookOutboxEvent.objects.create(
        event_type=OPPORTUNITY_STATUS_CHANGED, customer_id=opportunity.customer_id, object_id=opportunity.pk,
        data={"opportunity": opportunity.pk, "external_id": opportunity.external_id,
              "customer": opportunity.customer_id, "product": opportunity.product_id, "kind": opportunity.kind,
              "previous_status": previous, "status": opportunity.status,
              "changed_by": opportunity.status_changed_by_id},
    )


def clv_run_completed(*, run_id: int) -> None:
    from clv.models import ClvRun

    run = ClvRun.objects.filter(pk=run_id).values("pk", "as_of", "model", "counts").first()
    WebhookOutboxEvent.objects.create(
        event_type=CLV_RUN_COMPLETED, object_id=run_id,
        data={"run": run_id, "as_of": run["as_of"].isoformat() if run else None,
              "model": run["model"] if run else "", "counts": run["counts"] if run else {}},
    )


# --- placing outbox rows in the change feed -----------------------------------------------

TABLE = WebhookOutboxEvent._meta.db_table


def install_outbox_trigger(conn=None) -> None:
    """The change feed's trigger on the outbox table (after crm.sync's triggers exist); safe to rerun."""
    conn = conn or connection
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            cursor.execute(
                f"CREATE OR REPLACE TRIGGER {TABLE}_change BEFORE INSERT ON {TABLE} "
                "FOR EACH ROW EXECUTE FUNCTION crm_mark_change()"
            )
            return
        cursor.execute(f"DROP TRIGGER IF EXISTS {TABLE}_change_ins")
        cursor.execute(
            f"CREATE TRIGGER {TABLE}_change_ins AFTER INSERT ON {TABLE} BEGIN "
            "UPDATE crm_change_counter SET value = value + 1 WHERE id = 1; "
            f"UPDATE {TABLE} SET change_txid = 0, change_seq = "
            "(SELECT value FROM crm_change_counter WHERE id = 1) * 2 WHERE id = NEW.id; END"
        )
