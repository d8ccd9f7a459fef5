"""The change feed: every insert, update and deletion of a synced record, in commit-safe order.

Each synced row carries its place in the feed, `(change_txid, change_seq)`, set by a database
trigger on every insert and update whatever the write path (services, admin, COPY, raw SQL):
the id of the writing transaction and a number from one global sequence (even for an insert,
odd for an update). Deletions are rows of the deletion log (`Tombstone`), placed the same way.

Why not timestamps: a transaction that started earlier can commit later, so a reader that
has moved past its timestamp would never see its rows. Here a reader only returns rows whose
transaction id is below the oldest transaction still running (PostgreSQL's snapshot xmin),
so everything it returns is committed and anything committed later sorts after the cursor.
A client that follows the cursors sees every change once. The price: a long open write
transaction on this database holds the feed back until it ends (transactions of other
databases on the same server are recognised and do not).

On SQLite (single writer, so commit order is sequence order) the transaction id is 0 and
the triggers number rows from a one-row counter table.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, models, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.selectors import customer_visibility_q, deletion_visibility_q
from crm.models import (
    Contact,
    Customer,
    Event,
    Holding,
    IdempotencyRecord,
    Opportunity,
    Person,
    Product,
    Purchase,
    SyncHorizon,
    SyncReset,
    Task,
    Tombstone,
    Usage,
)

# Feed types, in the order a client should apply a page's records when it syncs several.
FEED_TYPES: dict[str, type[models.Model]] = {
    "products": Product,
    "customers": Customer,
    "people": Person,
    "purchases": Purchase,
    "holdings": Holding,
    "usage": Usage,
    "contacts": Contact,
    "tasks": Task,
    "events": Event,
    "opportunities": Opportunity,
}
TYPE_OF_LABEL = {model._meta.label_lower: name for name, model in FEED_TYPES.items()}
CATALOGUE_LABELS = {Product._meta.label_lower}
CHANGE_COLUMNS = ("change_txid", "change_seq")


class CursorError(ValueError):
    """The cursor is not one this server handed out."""


class CursorExpired(Exception):
    """The cursor is older than the deletion log kept: the client must resync in full."""


@dataclass(frozen=True, order=True)
class Position:
    txid: int
    seq: int


START = Position(-1, -1)


@dataclass(frozen=True)
class Cursor:
    position: Position
    issued_ms: int  # unix time in milliseconds when the server handed it out

    @property
    def issued_at(self) -> float:
        """Unix seconds."""
        return self.issued_ms / 1000

    def encode(self) -> str:
        raw = f"2.{self.position.txid}.{self.position.seq}.{self.issued_ms}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        """Version 2 carries milliseconds; version 1 (handed out before) whole seconds."""
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
            version, txid, seq, issued = raw.split(".")
            if version not in ("1", "2"):
                raise ValueError
            return cls(Position(int(txid), int(seq)), int(issued) * (1000 if version == "1" else 1))
        except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
            raise CursorError("This cursor is not valid; start again without one.") from exc


@dataclass
class Change:
    type: str
    op: str  # "created", "updated" or "deleted"
    position: Position
    instance: models.Model | None = None  # the record (created/updated)
    tombstone: Tombstone | None = None  # the deletion (deleted)


@dataclass
class ChangePage:
    changes: list[Change]
    cursor: Cursor
    has_more: bool


# The oldest transaction id that may still write to this database. Transactions listed as in
# progress by the snapshot count unless they are known to belong to another database of the
# same server (a backend never changes database): those cannot write our rows, and a long one
# (a bulk load elsewhere) must not hold this feed back. Unknown ones (other roles' sessions
# whose ids we may not read, subtransactions) count, which is only ever cautious.
STABLE_BOUND_SQL = """
    SELECT LEAST(
        pg_snapshot_xmax(s.snap)::text::bigint,
        (SELECT min(x::text::bigint) FROM pg_snapshot_xip(s.snap) AS x
         WHERE (x::text::bigint % 4294967296) NOT IN (
             SELECT backend_xid::text::bigint FROM pg_stat_activity
             WHERE backend_xid IS NOT NULL AND datname IS DISTINCT FROM current_database())))
    FROM (SELECT pg_current_snapshot() AS snap) AS s
"""


def _stable_xmin() -> int:
    """Transaction ids below this belong to finished transactions (of this database) only."""
    if connection.vendor != "postgresql":
        return 1  # SQLite: every row has txid 0 and writers are serialised
    with connection.cursor() as cursor:
        cursor.execute(STABLE_BOUND_SQL)
        return cursor.fetchone()[0]


def _after(qs, position: Position, xmin: int):
    table = connection.ops.quote_name(qs.model._meta.db_table)
    return (
        qs.filter(change_txid__lt=xmin)
        .extra(where=[f"({table}.change_txid, {table}.change_seq) > (%s, %s)"], params=[position.txid, position.seq])
        .order_by("change_txid", "change_seq")
    )


def feed_touch(querysets) -> int:
    """Give these rows a new place in the feed without changing them (the trigger moves them).

    For records whose representation changes through another row: a customer's new
    external_id is part of every child's `customer_external_id`, so clients must receive the
    children again. Returns the number of rows touched.
    """
    return sum(rows.update(updated_at=models.F("updated_at")) for rows in querysets)


def visible_tombstones(user) -> models.QuerySet:
    """Deletions the user may learn of: catalogue ones, and those of customers they could see
    (by the owner and team at the time of the deletion, accounts.selectors.deletion_visibility_q).

    A "moved" row (the record left the view of its customer's previous owner) is shown to
    those who could see it before, except whoever may see the customer it belongs to now:
    for them it did not go anywhere. Users who see everything never lose sight of a record.
    """
    if getattr(user, "is_authenticated", False) and user.is_active and user.sees_everything:
        return Tombstone.objects.exclude(reason=Tombstone.Reason.MOVED)
    could_see = Tombstone.objects.filter(Q(model__in=CATALOGUE_LABELS) | deletion_visibility_q(user))
    sees_now = Customer.objects.filter(customer_visibility_q(user, "")).values("pk")
    return could_see.exclude(reason=Tombstone.Reason.MOVED, now_customer_id__in=sees_now)


def check_cursor(cursor: Cursor, user=None) -> None:
    """Refuse (CursorExpired) a cursor from before the oldest deletion kept, or before the user's view changed."""
    horizon = SyncHorizon.objects.first()
    if horizon and cursor.issued_at < horizon.pruned_before.timestamp():
        raise CursorExpired(
            f"This cursor is from before {horizon.pruned_before:%Y-%m-%d %H:%M} UTC, the oldest deletion kept; "
            "resync in full by starting again without a cursor."
        )
    reset = SyncReset.objects.filter(user_id=getattr(user, "pk", None)).first()
    # issued_ms is rounded down, so a cursor from the same millisecond as the reset counts
    # as older: at worst one resync too many, never a change missed.
    if reset and cursor.issued_at < reset.reset_at.timestamp():
        raise CursorExpired(
            f"Which customers you see changed at {reset.reset_at:%Y-%m-%d %H:%M:%S} UTC (team, role or manager); "
            "resync in full by starting again without a cursor."
        )


def require_resync(user_ids) -> None:
    """These users' view of the customers changed as a whole: their cursors from before now expire.

    Written once the change has committed, so a cursor issued from a page computed with the
    old view is always older than the reset.
    """
    ids = {int(pk) for pk in user_ids if pk is not None}
    if not ids:
        return

    def write() -> None:
        now = timezone.now()
        for pk in ids:
            SyncReset.objects.update_or_create(user_id=pk, defaults={"reset_at": now})

    transaction.on_commit(write)


def changes_since(
    *, user, types: list[str], cursor: Cursor | None, limit: int, prepare=None
) -> ChangePage:
    """The next `limit` changes after `cursor` that `user` may see, for the given types.

    `prepare(type, queryset)` may refine each type's queryset (select_related for the caller's
    serializer). Raises CursorExpired for a cursor older than the kept deletion log.
    """
    if cursor is not None:
        check_cursor(cursor, user)
    after = cursor.position if cursor else START
    xmin = _stable_xmin()
    issued = int(time.time() * 1000)
    candidates: list[Change] = []
    for name in types:
        model = FEED_TYPES[name]
        qs = model.objects.all() if model is Product else model.objects.visible_to(user)
        if prepare is not None:
            qs = prepare(name, qs)
        for instance in _after(qs, after, xmin)[: limit + 1]:
            position = Position(instance.change_txid, instance.change_seq)
            op = "created" if instance.change_seq % 2 == 0 else "updated"
            candidates.append(Change(name, op, position, instance=instance))
    labels = [FEED_TYPES[name]._meta.label_lower for name in types]
    for tombstone in _after(visible_tombstones(user).filter(model__in=labels), after, xmin)[: limit + 1]:
        position = Position(tombstone.change_txid, tombstone.change_seq)
        candidates.append(Change(TYPE_OF_LABEL[tombstone.model], "deleted", position, tombstone=tombstone))
    candidates.sort(key=lambda c: c.position)
    page = candidates[:limit]
    has_more = len(candidates) > limit
    last = page[-1].position if page else after
    return ChangePage(changes=page, cursor=Cursor(last, issued), has_more=has_more)


@transaction.atomic
def sync_log_prune(*, tombstone_days: int, idempotency_hours: int = 24) -> dict[str, int]:
    """Drop tombstones and idempotency records past their retention; move the feed's horizon."""
    now = timezone.now()
    cutoff = now - timedelta(days=tombstone_days)
    tombstones, _ = Tombstone.objects.filter(deleted_at__lt=cutoff).delete()
    horizon = SyncHorizon.objects.select_for_update().first()
    if horizon is None:
        SyncHorizon.objects.create(pruned_before=cutoff)
    elif horizon.pruned_before < cutoff:
        horizon.pruned_before = cutoff
        horizon.save(update_fields=["pruned_before"])
    replies, _ = IdempotencyRecord.objects.filter(created_at__lt=now - timedelta(hours=idempotency_hours)).delete()
    return {"tombstones": tombstones, "idempotency_records": replies}


# --- the triggers -------------------------------------------------------------------------

SYNCED_TABLES = [model._meta.db_table for model in FEED_TYPES.values()]


def _existing(conn, tables):
    """The tables of `tables` that exist yet (an early migration runs before later tables are made)."""
    present = set(conn.introspection.table_names())
    return [t for t in tables if t in present]


def _pg_sql(tables: list[str]) -> list[str]:
    statements = [
        "CREATE SEQUENCE IF NOT EXISTS crm_change_seq",
        """
        CREATE OR REPLACE FUNCTION crm_mark_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.change_txid := txid_current();
            IF TG_OP = 'INSERT' THEN
                NEW.change_seq := nextval('crm_change_seq') * 2;
            ELSE
                NEW.change_seq := nextval('crm_change_seq') * 2 + 1;
            END IF;
            RETURN NEW;
        END $$
        """,
    ]
    for table in tables:
        if table == "crm_tombstone":
            continue
        statements.append(
            f"CREATE OR REPLACE TRIGGER {table}_change BEFORE INSERT OR UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION crm_mark_change()"
        )
    statements.append(
        "CREATE OR REPLACE TRIGGER crm_tombstone_change BEFORE INSERT ON crm_tombstone "
        "FOR EACH ROW EXECUTE FUNCTION crm_mark_change()"
    )
    return statements


_SQLITE_BUMP = "UPDATE crm_change_counter SET value = value + 1 WHERE id = 1;"
_SQLITE_SEQ = "(SELECT value FROM crm_change_counter WHERE id = 1)"


def _sqlite_insert_trigger(table: str) -> str:
    # Skips rows a bulk insert placed already (sqlite_reserve_positions).
    return (f"CREATE TRIGGER {table}_change_ins AFTER INSERT ON {table} WHEN NEW.change_seq = 0 BEGIN {_SQLITE_BUMP} "
            f"UPDATE {table} SET change_txid = 0, change_seq = {_SQLITE_SEQ} * 2 WHERE id = NEW.id; END")


def _sqlite_sql(tables: list[str]) -> list[str]:
    statements = [
        "CREATE TABLE IF NOT EXISTS crm_change_counter (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)",
        "INSERT OR IGNORE INTO crm_change_counter (id, value) VALUES (1, 0)",
    ]
    bump, seq = _SQLITE_BUMP, _SQLITE_SEQ
    by_table = {model._meta.db_table: model for model in FEED_TYPES.values()}
    by_table["crm_tombstone"] = Tombstone
    for table, model in by_table.items():
        if table not in tables:
            continue
        statements.append(f"DROP TRIGGER IF EXISTS {table}_change_ins")
        statements.append(f"DROP TRIGGER IF EXISTS {table}_change_upd")
        statements.append(_sqlite_insert_trigger(table))
        if model is Tombstone:
            continue
        # Fires only when a column other than the feed's own is set, so the insert trigger's
        # own UPDATE does not count as an update.
        columns = ", ".join(
            f.column for f in model._meta.concrete_fields if f.column not in CHANGE_COLUMNS and not f.primary_key
        )
        statements.append(
            f"CREATE TRIGGER {table}_change_upd AFTER UPDATE OF {columns} ON {table} BEGIN {bump} "
            f"UPDATE {table} SET change_txid = 0, change_seq = {seq} * 2 + 1 WHERE id = NEW.id; END"
        )
    return statements


def sqlite_reserve_positions(cursor, count: int) -> int:
    """SQLite: take `count` numbers from the feed's counter for rows a bulk insert places itself
    (change_txid 0, change_seq 2 x number, as the insert trigger would). Returns the first one;
    SQLite has one writer at a time, so the block belongs to this transaction."""
    cursor.execute("UPDATE crm_change_counter SET value = value + %s WHERE id = 1 RETURNING value", [count])
    (last,) = cursor.fetchone()
    return last - count + 1


@contextlib.contextmanager
def sqlite_insert_trigger_suspended(cursor, table: str) -> Iterator[None]:
    """SQLite, inside a transaction: the feed's insert trigger of `table` is dropped for the block
    and created again after it, for a bulk insert that places its rows itself.

    Even a trigger whose WHEN is false costs about as much per row as the insert (SQLite keeps
    each new row for it). Safe because DDL is part of the transaction on SQLite: the first write
    takes the database's one write lock until commit, so no other connection writes a row while
    the trigger is gone, other readers see the committed schema, and a rollback restores it.
    """
    if connection.vendor != "sqlite" or not connection.in_atomic_block or table not in SYNCED_TABLES:
        yield
        return
    cursor.execute(f"DROP TRIGGER IF EXISTS {table}_change_ins")
    try:
        yield
    finally:
        cursor.execute(_sqlite_insert_trigger(table))


def backfill_positions(conn=None) -> None:
    """Give rows written before the triggers existed a place in the feed (inserts, in id order)."""
    conn = conn or connection
    tables = _existing(conn, [*SYNCED_TABLES, "crm_tombstone"])
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            cursor.execute("CREATE SEQUENCE IF NOT EXISTS crm_change_seq")
            for table in tables:
                cursor.execute(
                    f"UPDATE {table} SET change_txid = txid_current(), change_seq = nextval('crm_change_seq') * 2 "
                    "WHERE change_seq = 0"
                )
            return
        cursor.execute("CREATE TABLE IF NOT EXISTS crm_change_counter (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)")
        cursor.execute("INSERT OR IGNORE INTO crm_change_counter (id, value) VALUES (1, 0)")
        for table in tables:
            cursor.execute(
                f"UPDATE {table} SET change_txid = 0, "
                "change_seq = 2 * (id + (SELECT value FROM crm_change_counter WHERE id = 1)) WHERE change_seq = 0"
            )
            cursor.execute(
                f"UPDATE crm_change_counter SET value = value + (SELECT COALESCE(MAX(id), 0) FROM {table}) WHERE id = 1"
            )


def install_change_triggers(conn=None) -> None:
    """Create (or re-create) the feed's sequence and triggers; safe to run again."""
    conn = conn or connection
    tables = _existing(conn, [*SYNCED_TABLES, "crm_tombstone"])
    statements = _pg_sql(tables) if conn.vendor == "postgresql" else _sqlite_sql(tables)
    with conn.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)


def uninstall_change_triggers(conn=None) -> None:
    conn = conn or connection
    tables = _existing(conn, [*SYNCED_TABLES, "crm_tombstone"])
    with conn.cursor() as cursor:
        for table in tables:
            if conn.vendor == "postgresql":
                cursor.execute(f"DROP TRIGGER IF EXISTS {table}_change ON {table}")
            else:
                cursor.execute(f"DROP TRIGGER IF EXISTS {table}_change_ins")
                cursor.execute(f"DROP TRIGGER IF EXISTS {table}_change_upd")
        if conn.vendor == "postgresql":
            cursor.execute("DROP FUNCTION IF EXISTS crm_mark_change()")


# ---------------------------------------------------------------------------------------------
# Whole-view changes: a user's team, role or status, a team's manager. Connected in CrmConfig.ready.

VIEW_FIELDS_OF_USER = ("team_id", "role", "is_superuser", "is_active")


def user_view_changing(sender, instance, raw=False, update_fields=None, **kwargs) -> None:
    """pre_save of a user: a new team, role or status changes what they (and the managers of the
    old and new team) see; their cursors expire once it commits."""
    if raw or instance.pk is None:
        return
    if update_fields is not None and not {"team", "team_id", "role", "is_superuser", "is_active"} & set(update_fields):
        return  # e.g. last_login on every login: nothing that changes the view
    before = sender.objects.filter(pk=instance.pk).values(*VIEW_FIELDS_OF_USER).first()
    if before is None or before == {f: getattr(instance, f) for f in VIEW_FIELDS_OF_USER}:
        return
    from accounts.models import Team

    teams = {before["team_id"], instance.team_id} - {None}
    managers = Team.objects.filter(pk__in=teams).values_list("manager_id", flat=True)
    require_resync({instance.pk, *managers})


def team_manager_changing(sender, instance, raw=False, **kwargs) -> None:
    """pre_save of a team: a new manager; the old one stops seeing the team's customers."""
    if raw or instance.pk is None:
        return
    before = sender.objects.filter(pk=instance.pk).values_list("manager_id", flat=True).first()
    if before != instance.manager_id:
        require_resync({before, instance.manager_id})


def team_deleting(sender, instance, **kwargs) -> None:
    """pre_delete of a team: its members lose their team, so its manager stops seeing their customers."""
    require_resync({instance.manager_id})
