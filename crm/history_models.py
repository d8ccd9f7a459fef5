"""The change history's event tables: one per tracked model, filled by PostgreSQL triggers.

django-pghistory generates, for every tracked model, an event model holding a snapshot of the
row after each insert and update and before each delete, with the transaction's context
(who, through which request) attached. The triggers are statement-level (one INSERT ... SELECT
from the statement's transition table per statement), so bulk upserts, `INSERT ... SELECT
FROM unnest(...)` and COPY are recorded like single saves, at a small cost per row. The update
trigger's INSERT joins the statement's old and new rows; it runs through EXECUTE, so PostgreSQL
plans that join for each statement, knowing how many rows it holds (see _PlannedUpdateEvent).

The feed's own columns (`change_txid`, `change_seq`) and `updated_at` are not kept: a save
that changes nothing else records nothing.

An opportunity's engine-made fields (`QUIET_FIELDS`: score, expected value, evidence and its
numbers, rule, generated_at) are kept in its snapshots but do not by themselves make an
update event: the nightly regeneration re-scores about 100,000 suggestions, and a history row
for each of them would record the engine, not a person. Creation, deletion and every change
of status, who changed it, dismissal reason and note, won purchase, customer, product, kind or
from-product are recorded; such an event's snapshot carries the scores and evidence of that
moment.

Imported at the end of crm/models.py. To track another model, create its event model with
`track_history`, add it to `HISTORY_MODELS` and `EVENT_MODELS` below and run `makemigrations crm`.
On SQLite the tables exist but no trigger fills them: history needs PostgreSQL.
"""

from __future__ import annotations

import pghistory
import pghistory.trigger
import pgtrigger
from django.db import models

from crm.models import Contact, Customer, Event, Holding, Opportunity, Person, Product, Purchase, Task, Usage

__all__ = [
    "ContactHistory", "CustomerHistory", "EventHistory", "HoldingHistory", "OpportunityHistory", "PersonHistory",
    "ProductHistory", "PurchaseHistory", "TaskHistory", "UsageHistory",
]

NOT_TRACKED = ("change_txid", "change_seq", "updated_at")
# Per model: fields kept in the snapshots whose change alone records no update (see above).
QUIET_FIELDS: dict[type[models.Model], tuple[str, ...]] = {
    Opportunity: ("score", "expected_value", "evidence", "evidence_data", "rule", "generated_at"),
}


def _unindexed_references(model: type[models.Model]) -> dict[str, models.ForeignKey]:
    """The snapshot's foreign keys: unconstrained and without an index each (every index costs on
    bulk writes); the lookups the history needs get the composite indexes below."""
    return {
        field.name: models.ForeignKey(
            field.remote_field.model,
            null=True,
            blank=True,
            db_constraint=False,
            db_index=False,
            on_delete=models.DO_NOTHING,
            related_name="+",
            related_query_name="+",
        )
        for field in model._meta.local_fields
        if isinstance(field, models.ForeignKey)
    }


class _PlannedTrigger(pghistory.trigger.Event):
    """pghistory's statement-level trigger, its INSERT run with EXECUTE.

    An update's INSERT joins the statement's old and new rows (two transition tables, without an
    index or statistics) to keep the rows whose tracked fields changed. Run as PL/pgSQL's own SQL,
    its plan is cached after a few statements, planned for a few rows: once that cached plan was
    a nested loop, a statement of 20,000 rows took 40 s instead of 0.7 s, growing with the square
    of its rows. A plan made by EXECUTE is made for each statement, from the transition tables'
    real row counts (a hash join for many rows). A row-level trigger avoids the join but costs
    about 45 us per row (two PL/pgSQL calls, each with its exception block, and an INSERT), a
    quarter of a bulk update's time.
    """

    def get_func(self, model):
        sql = super().get_func(model).func.strip()
        body, end = sql.rsplit("RETURN NULL;", 1)
        if end.strip() or "$pgh_statement$" in body:
            raise AssertionError(f"unexpected history trigger function: {sql}")
        return pgtrigger.Func(f"EXECUTE $pgh_statement$ {body.strip().rstrip(';')} $pgh_statement$; RETURN NULL;")


class _PlannedUpdateEvent(pghistory.UpdateEvent):
    """The update event, recorded by a statement-level _PlannedTrigger."""

    def add_event_trigger(self, event_model):
        pgtrigger.register(
            _PlannedTrigger(
                event_model=event_model, label=self.label, name=self.trigger_name, row=self.row,
                operation=self.operation, condition=self.condition, level=pghistory.Statement,
            )
        )(event_model.pgh_tracked_model)


def track_history(model: type[models.Model]) -> type[models.Model]:
    """Create the event model `<Model>History` for `model`, with insert, update and delete triggers."""
    name = model._meta.model_name
    quiet = QUIET_FIELDS.get(model, ())
    # A rewrite that changes only what the history does not keep (an opportunity's scores and
    # words, re-computed every night) records nothing: the condition leaves those rows out.
    update_condition = {"condition": pghistory.AnyChange(exclude=[*NOT_TRACKED, *quiet])}
    indexes = [models.Index(fields=["pgh_obj", "pgh_id"], name=f"{name}_hist_obj")]
    for parent in ("customer", "holding"):
        if any(f.name == parent for f in model._meta.local_fields):
            indexes.append(models.Index(fields=[parent, "pgh_id"], name=f"{name}_hist_{parent}"))
    return pghistory.create_event_model(
        model,
        pghistory.InsertEvent(level=pghistory.Statement),
        _PlannedUpdateEvent(**update_condition),
        pghistory.DeleteEvent(level=pghistory.Statement),
        exclude=list(NOT_TRACKED),
        obj_field=pghistory.ObjForeignKey(related_name="history", db_index=False),
        context_field=pghistory.ContextForeignKey(db_index=False),
        model_name=f"{model.__name__}History",
        abstract=False,
        attrs=_unindexed_references(model),
        meta={"indexes": indexes, "ordering": ["pgh_id"]},
    )


CustomerHistory = track_history(Customer)
PersonHistory = track_history(Person)
ProductHistory = track_history(Product)
PurchaseHistory = track_history(Purchase)
HoldingHistory = track_history(Holding)
UsageHistory = track_history(Usage)
ContactHistory = track_history(Contact)
EventHistory = track_history(Event)
OpportunityHistory = track_history(Opportunity)
TaskHistory = track_history(Task)  # standalone tasks and contacts' follow-ups

# Resource name (as in the API's paths) -> the tracked model.
HISTORY_MODELS: dict[str, type[models.Model]] = {
    "customers": Customer,
    "people": Person,
    "products": Product,
    "purchases": Purchase,
    "holdings": Holding,
    "usage": Usage,
    "contacts": Contact,
    "events": Event,
    "opportunities": Opportunity,
    "tasks": Task,
}
EVENT_MODELS: dict[type[models.Model], type[models.Model]] = {
    Customer: CustomerHistory,
    Person: PersonHistory,
    Product: ProductHistory,
    Purchase: PurchaseHistory,
    Holding: HoldingHistory,
    Usage: UsageHistory,
    Contact: ContactHistory,
    Event: EventHistory,
    Opportunity: OpportunityHistory,
    Task: TaskHistory,
}
