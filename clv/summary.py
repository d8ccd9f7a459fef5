"""The per-customer purchase summary kept current on every purchase write, and the CLV run's reads of it.

Two tables (clv.models): PurchaseDay, one row per customer and calendar day (a purchase
occasion) with its lines, value and margin parts; PurchaseSummary, one row per customer with
first and last day, occasions, lines, value, value on repeat days and margin parts.

crm.services calls summary_apply() with the customers a purchase write touched, in the
write's transaction: their rows are recomputed from their purchase lines with set-based SQL.
Recomputing (rather than adding deltas) makes an update that moves a purchase to another day
or customer, a deleted purchase, or a product whose cost changed right by construction. Lines
that are only added (the bulk upsert's new lines) are added to the kept rows instead, each
summary row updated from the added days alone; tests check this equals a rebuild.
Bulk writes inside summary_deferred() recompute once, at the end of the block.
summary_rebuild() recomputes everything from scratch.

Margin is the run's aggregate's: amount - quantity x (the line's unit cost, else the product's,
else unit price x (1 - default margin)). It is kept as amount, cost (lines with a known cost)
and uncosted price (the others), so a run applies CLV_DEFAULT_MARGIN as it is that night and
gets exactly the aggregate's number.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import NamedTuple

import numpy as np
from django.conf import settings
from django.db import connection, transaction

from clv.engine.summary import CustomerSummary
from crm.bulk import fetch_arrays, pg_array

EPOCH = date(1970, 1, 1)
# Up to this many customers a write locks their rows (writes to other customers go on in
# parallel); above it, one table lock serialises summary upkeep for the rest of the transaction.
ROW_LOCK_MAX = 10_000
SQLITE_CHUNK = 500  # customer ids per IN (...) on SQLite

_pending: ContextVar[set[int] | None] = ContextVar("clv_summary_pending", default=None)


class LineValues(NamedTuple):
    """What the kept summary counts of one purchase line (summary_apply's revalued: before and after a change)."""

    customer_id: int
    purchased_at: datetime
    product_id: int | None
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    unit_cost: Decimal | None


# ---------------------------------------------------------------------------------------------
# Keeping it current


def summary_apply(
    *, customer_ids: Iterable[int] = (), added: Iterable[tuple[int, int]] = (), days: Iterable[tuple[int, date]] = (),
    revalued: Iterable[tuple[LineValues, LineValues]] = (),
) -> int:
    """Bring the kept summary of these customers up to date with their purchase lines; returns how many.

    customer_ids: customers whose lines changed in any way; their rows are recomputed from all
    their lines. added: (customer_id, purchase_id) of lines just inserted, for customers whose
    lines were only added to (the bulk upsert's new lines): on PostgreSQL those lines are added
    to their days and their summary rows in one statement that reads no other line or day of
    the customer (_lines_add_sql), the same result for a fraction of the reads. days: (customer_id, day) pairs, for customers whose lines
    changed on those days only (the bulk upsert's updated lines: each line's day before and
    after): on PostgreSQL those days are recomputed from their lines, then the summary row from
    the days. A customer in customer_ids is recomputed whole; one in days takes no `added` lines
    (give their days instead). revalued: lines whose values changed but not their customer or
    day (the bulk upsert's updated amounts), each as (before, after) the change (LineValues): on
    PostgreSQL the difference is added to its day and summary row, which reads no line; a
    customer given revalued lines is given nothing else.
    Inside summary_deferred() the customers are only noted, and recomputed when the block ends.
    """
    ids = {int(c) for c in customer_ids if c is not None}
    added_lines: dict[int, list[int]] = {}
    for customer_id, purchase_id in added:
        if customer_id is not None and int(customer_id) not in ids:
            added_lines.setdefault(int(customer_id), []).append(int(purchase_id))
    changed_days = {(int(c), d) for c, d in days if c is not None and int(c) not in ids}
    revalued_lines = [(was, now) for was, now in revalued if was.customer_id not in ids]
    day_customers = {c for c, _ in changed_days}
    revalued_customers = {was.customer_id for was, _ in revalued_lines}
    pending = _pending.get()
    if pending is not None:
        pending |= ids | set(added_lines) | day_customers | revalued_customers
        return 0
    if connection.vendor != "postgresql":
        ids |= set(added_lines) | day_customers | revalued_customers
        added_lines, changed_days, day_customers, revalued_lines, revalued_customers = {}, set(), set(), [], set()
    if added_lines.keys() & day_customers:
        raise ValueError("summary_apply: a customer given days takes the days of its added lines, not the lines")
    if revalued_customers & (added_lines.keys() | day_customers):
        raise ValueError("summary_apply: a customer given revalued lines takes nothing else (give its days instead)")
    if not ids and not added_lines and not changed_days and not revalued_lines:
        return 0
    with transaction.atomic():
        _recompute(sorted(ids), added_lines, sorted(changed_days), revalued_lines)
    return len(ids) + len(added_lines) + len(day_customers) + len(revalued_customers)


def summary_apply_product(*, product_id: int) -> int:
    """A product's unit cost changed: recompute the customers whose lines take their cost from it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT customer_id FROM crm_purchase WHERE product_id = %s AND unit_cost IS NULL", [product_id]
        )
        ids = [row[0] for row in cursor.fetchall()]
    return summary_apply(customer_ids=ids)


@contextmanager
def summary_deferred() -> Iterator[None]:
    """Note the customers purchase writes touch inside the block; recompute them once when it ends.

    For bulk paths (CSV import) that write in batches: one set-based pass at the end instead
    of one per batch. Use it inside the transaction of the writes. Nested blocks defer to the
    outermost one; a block left by an exception recomputes nothing (its transaction rolls back).
    """
    if _pending.get() is not None:
        yield
        return
    token = _pending.set(set())
    try:
        yield
        ids = _pending.get()
    finally:
        _pending.reset(token)
    summary_apply(customer_ids=ids)


def summary_rebuild() -> dict:
    """Recompute the whole kept summary from every purchase line, in one transaction; returns counts and seconds."""
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("LOCK TABLE clv_purchaseday, clv_purchasesummary IN SHARE ROW EXCLUSIVE MODE")
            cursor.execute("TRUNCATE clv_purchaseday, clv_purchasesummary")
        else:
            cursor.execute("DELETE FROM clv_purchaseday")
            cursor.execute("DELETE FROM clv_purchasesummary")
        cursor.execute(_days_insert_sql(""), [])
        days_seconds = time.perf_counter() - started
        cursor.execute(_summary_insert_sql(""), [])
        cursor.execute("SELECT COUNT(*), COALESCE(SUM(days), 0), COALESCE(SUM(lines), 0) FROM clv_purchasesummary")
        customers, days, lines = cursor.fetchone()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE clv_purchaseday")
            cursor.execute("ANALYZE clv_purchasesummary")
    return {"customers": int(customers), "days": int(days), "lines": int(lines),
            "days_seconds": round(days_seconds, 3), "seconds": round(time.perf_counter() - started, 3)}


def _recompute(
    ids: list[int], added: dict[int, list[int]] | None = None, days: list[tuple[int, date]] | None = None,
    revalued: list[tuple[LineValues, LineValues]] | None = None,
) -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            day_customers = {c for c, _ in days or ()}
            revalued_customers = {was.customer_id for was, _ in revalued or ()}
            # one lock, in id order, for all
            _lock(cursor, sorted({*ids, *(added or ()), *day_customers, *revalued_customers}))
            if ids:
                _recompute_where(cursor, "customer_id = ANY(%s::bigint[])", [pg_array(ids)])
            if added:
                lines = [p for purchase_ids in added.values() for p in purchase_ids]
                cursor.execute(_lines_add_sql(), [pg_array(lines)])
            if days:
                pairs = [pg_array(c for c, _ in days), pg_array(d for _, d in days)]
                cursor.execute(
                    "DELETE FROM clv_purchaseday d USING unnest(%s::bigint[], %s::date[]) AS t(customer_id, day) "
                    "WHERE d.customer_id = t.customer_id AND d.day = t.day", pairs,
                )
                cursor.execute(_days_of_sql(), pairs)
                customers = [pg_array(sorted(day_customers))]
                cursor.execute("DELETE FROM clv_purchasesummary WHERE customer_id = ANY(%s::bigint[])", customers)
                cursor.execute(_summary_insert_sql("WHERE d.customer_id = ANY(%s::bigint[])"), customers)
            if revalued:
                cursor.execute(_lines_revalued_sql(), [
                    pg_array([line[i] for line in lines]) for lines in zip(*revalued, strict=True)
                    for i in range(len(LineValues._fields))
                ])
        else:
            for start in range(0, len(ids), SQLITE_CHUNK):
                chunk = ids[start:start + SQLITE_CHUNK]
                _recompute_where(cursor, f"customer_id IN ({', '.join(['%s'] * len(chunk))})", chunk)


def _lock(cursor, ids: list[int]) -> None:
    """Serialise upkeep of one customer's rows, so each write recomputes from every committed line.

    Statements after the lock see what the writer before us committed (read committed takes
    a new snapshot per statement), so two writes to one customer cannot leave it stale.
    """
    if len(ids) <= ROW_LOCK_MAX:
        cursor.execute(
            "SELECT id FROM crm_customer WHERE id = ANY(%s::bigint[]) ORDER BY id FOR NO KEY UPDATE", [pg_array(ids)],
        )
    else:
        cursor.execute("LOCK TABLE clv_purchaseday, clv_purchasesummary IN SHARE ROW EXCLUSIVE MODE")


def _recompute_where(cursor, condition: str, params: list) -> None:
    cursor.execute(f"DELETE FROM clv_purchaseday WHERE {condition}", params)
    cursor.execute(_days_insert_sql(f"WHERE p.{condition}"), params)
    cursor.execute(f"DELETE FROM clv_purchasesummary WHERE {condition}", params)
    cursor.execute(_summary_insert_sql(f"WHERE d.{condition}"), params)


def day_of(column: str) -> str:
    """SQL for the calendar day (a date, in the CRM's time zone) of a timestamp column."""
    if connection.vendor == "postgresql":
        return f"({column} AT TIME ZONE '{settings.TIME_ZONE}')::date"
    return f"date({column})"


def day_number(column: str) -> str:
    """SQL for a date column as days since 1970-01-01."""
    if connection.vendor == "postgresql":
        return f"({column} - DATE '1970-01-01')"
    return f"CAST(julianday({column}) - 2440587.5 AS INTEGER)"


def _days_select_sql(where: str, *, lines: str = "crm_purchase p", day: str | None = None) -> str:
    """SELECT the days (customer_id, day, lines, amount, cost, uncosted_price) of the purchase lines
    `lines` (aliased p) that match `where`, grouped by customer and `day` (default: the line's calendar day)."""
    known_cost = "COALESCE(p.unit_cost, pr.unit_cost)"
    return f"""
        SELECT p.customer_id, {day or day_of("p.purchased_at")}, COUNT(*), SUM(p.amount),
               SUM(CASE WHEN {known_cost} IS NULL THEN 0 ELSE p.quantity * {known_cost} END),
               SUM(CASE WHEN {known_cost} IS NULL THEN p.quantity * p.unit_price ELSE 0 END)
        FROM {lines} LEFT JOIN crm_product pr ON pr.id = p.product_id
        {where}
        GROUP BY 1, 2
    """


def _days_insert_sql(where: str, *, lines: str = "crm_purchase p", day: str | None = None) -> str:
    """INSERT the days of the purchase lines `lines` (aliased p) that match `where` (see _days_select_sql)."""
    return ("INSERT INTO clv_purchaseday (customer_id, day, lines, amount, cost, uncosted_price)"
            + _days_select_sql(where, lines=lines, day=day))


def _lines_add_sql() -> str:
    """Add the purchase lines with these ids (PostgreSQL, one statement): to their customers' days
    (new days are created), and to their summary rows, from each row as it was and the added days
    alone, without reading the customer's other days.

    A day is new when its row holds only the added lines after the upsert (a kept day has at least
    one line). The summary row (read as it was before the statement) then follows:
    - days: the old count plus the new days; lines, value and cost parts: the old ones plus the added;
    - first and last day: the earlier and the later of the old ones and the added;
    - value on repeat days (after the first day): if an added day comes before the old first day,
      every old day is now a repeat day (the old total) and so is every added day after the new
      first; otherwise the old repeat value plus the added value after the old first day.
    Sums of exact decimals in another order: the same numbers as summing the days again, which
    tests/clv/test_summary.py checks against summary_rebuild().
    """
    return f"""
        WITH added (customer_id, day, lines, amount, cost, uncosted_price) AS (
            {_days_select_sql("WHERE p.id = ANY(%s::bigint[])")}
        ),
        written AS (
            INSERT INTO clv_purchaseday (customer_id, day, lines, amount, cost, uncosted_price)
            SELECT customer_id, day, lines, amount, cost, uncosted_price FROM added
            ON CONFLICT (customer_id, day) DO UPDATE SET
                lines = clv_purchaseday.lines + EXCLUDED.lines,
                amount = clv_purchaseday.amount + EXCLUDED.amount,
                cost = clv_purchaseday.cost + EXCLUDED.cost,
                uncosted_price = clv_purchaseday.uncosted_price + EXCLUDED.uncosted_price
            RETURNING customer_id, day, lines
        )
        INSERT INTO clv_purchasesummary
            (customer_id, first_day, last_day, days, lines, total_value, repeat_value, cost, uncosted_price)
        SELECT a.customer_id, LEAST(s.first_day, MIN(a.day)), GREATEST(s.last_day, MAX(a.day)),
               COALESCE(s.days, 0) + COUNT(*) FILTER (WHERE w.lines = a.lines),
               COALESCE(s.lines, 0) + SUM(a.lines),
               COALESCE(s.total_value, 0) + SUM(a.amount),
               CASE WHEN s.customer_id IS NULL OR MIN(a.day) < s.first_day
                    THEN COALESCE(s.total_value, 0) + COALESCE(SUM(a.amount) FILTER (WHERE a.day > a.first_added), 0)
                    ELSE s.repeat_value + COALESCE(SUM(a.amount) FILTER (WHERE a.day > s.first_day), 0) END,
               COALESCE(s.cost, 0) + SUM(a.cost), COALESCE(s.uncosted_price, 0) + SUM(a.uncosted_price)
        FROM (SELECT *, MIN(day) OVER (PARTITION BY customer_id) AS first_added FROM added) a
        JOIN written w ON w.customer_id = a.customer_id AND w.day = a.day
        LEFT JOIN clv_purchasesummary s ON s.customer_id = a.customer_id
        GROUP BY a.customer_id, s.customer_id
        ON CONFLICT (customer_id) DO UPDATE SET
            first_day = EXCLUDED.first_day, last_day = EXCLUDED.last_day, days = EXCLUDED.days,
            lines = EXCLUDED.lines, total_value = EXCLUDED.total_value, repeat_value = EXCLUDED.repeat_value,
            cost = EXCLUDED.cost, uncosted_price = EXCLUDED.uncosted_price
    """


def _lines_revalued_sql() -> str:
    """Lines whose values changed on the same customer and day (PostgreSQL, one statement): each
    day and summary row takes the difference between the lines after and before the change (bound
    as arrays in LineValues' order, before then after, cast to the line's column types as the
    stored values are), counted by the one formula of the days.

    The lines and days stay where they were, so only the value and cost parts move: the value on
    repeat days by the difference on days after the customer's first. Tested against a rebuild.
    """
    from crm.models import Purchase

    def lines(alias: str) -> str:
        types = ["bigint", "timestamptz", "bigint",
                 *(Purchase._meta.get_field(name).db_type(connection)
                   for name in ("quantity", "unit_price", "amount", "unit_cost"))]
        arrays = ", ".join(f"%s::{kind}[]" for kind in types)
        return f"unnest({arrays}) AS {alias}({', '.join(LineValues._fields)})"

    return f"""
        WITH difference AS (
            SELECT customer_id, day, SUM(amount) AS amount, SUM(cost) AS cost, SUM(uncosted_price) AS uncosted_price
            FROM (SELECT customer_id, day, -amount, -cost, -uncosted_price
                  FROM ({_days_select_sql("", lines=lines("p"))}) AS was (customer_id, day, lines, amount, cost,
                                                                           uncosted_price)
                  UNION ALL
                  SELECT customer_id, day, amount, cost, uncosted_price
                  FROM ({_days_select_sql("", lines=lines("p"))}) AS now (customer_id, day, lines, amount, cost,
                                                                           uncosted_price)
            ) AS both_ (customer_id, day, amount, cost, uncosted_price)
            GROUP BY customer_id, day
        ),
        days_written AS (
            UPDATE clv_purchaseday d SET amount = d.amount + x.amount, cost = d.cost + x.cost,
                   uncosted_price = d.uncosted_price + x.uncosted_price
            FROM difference x WHERE d.customer_id = x.customer_id AND d.day = x.day
        )
        UPDATE clv_purchasesummary s SET
            total_value = s.total_value + t.amount, repeat_value = s.repeat_value + t.repeat_amount,
            cost = s.cost + t.cost, uncosted_price = s.uncosted_price + t.uncosted_price
        FROM (SELECT x.customer_id, SUM(x.amount) AS amount,
                     COALESCE(SUM(x.amount) FILTER (WHERE x.day > k.first_day), 0) AS repeat_amount,
                     SUM(x.cost) AS cost, SUM(x.uncosted_price) AS uncosted_price
              FROM difference x JOIN clv_purchasesummary k ON k.customer_id = x.customer_id
              GROUP BY x.customer_id) t
        WHERE s.customer_id = t.customer_id
    """


def _days_of_sql() -> str:
    """Recompute these (customer, day) pairs from their lines (PostgreSQL): each day's lines found
    by the (customer, purchased_at) index between the day's local midnights."""
    zone = settings.TIME_ZONE
    return _days_insert_sql("", day="t.day", lines=f"""
        (SELECT DISTINCT * FROM unnest(%s::bigint[], %s::date[]) AS u(customer_id, day)) t
        JOIN crm_purchase p ON p.customer_id = t.customer_id
             AND p.purchased_at >= (t.day::timestamp AT TIME ZONE '{zone}')
             AND p.purchased_at < ((t.day + 1)::timestamp AT TIME ZONE '{zone}')""")


def _summary_insert_sql(where: str) -> str:
    return f"""
        INSERT INTO clv_purchasesummary
            (customer_id, first_day, last_day, days, lines, total_value, repeat_value, cost, uncosted_price)
        SELECT customer_id, MIN(day), MAX(day), COUNT(*), SUM(lines), SUM(amount),
               SUM(CASE WHEN day > first_day THEN amount ELSE 0 END), SUM(cost), SUM(uncosted_price)
        FROM (SELECT d.*, MIN(d.day) OVER (PARTITION BY d.customer_id) AS first_day
              FROM clv_purchaseday d {where}) t
        GROUP BY customer_id
    """


# ---------------------------------------------------------------------------------------------
# What the CLV run reads


@dataclass(frozen=True)
class SummarySource:
    """Where a run reads its per-customer summary from, and why.

    kept:  PurchaseSummary, one row per customer (no purchase is dated after the as-of date);
    days:  PurchaseDay up to the as-of date (a backdated run);
    lines: the aggregate over every purchase line (the kept summary is out of step).
    """

    name: str
    reason: str


def summary_in_step() -> tuple[bool, str]:
    """Does the kept summary hold every purchase line? (line count and total value both agree)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT COUNT(*) FROM crm_purchase), (SELECT COALESCE(SUM(amount), 0) FROM crm_purchase), "
            "(SELECT COALESCE(SUM(lines), 0) FROM clv_purchasesummary), "
            "(SELECT COALESCE(SUM(total_value), 0) FROM clv_purchasesummary)"
        )
        lines, value, kept_lines, kept_value = cursor.fetchone()
    same_value = Decimal(str(value)) == Decimal(str(kept_value)) if connection.vendor == "postgresql" else (
        abs(float(value) - float(kept_value)) <= 1e-6 * max(1.0, abs(float(value)))
    )
    detail = f"{int(lines):,} purchase lines worth {value}, kept summary {int(kept_lines):,} lines worth {kept_value}"
    return int(lines) == int(kept_lines) and same_value, detail


def purchases_after(as_of: date) -> bool:
    """Is any purchase dated (in the CRM's time zone) after the as-of date?"""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT EXISTS (SELECT 1 FROM crm_purchase "
                "WHERE purchased_at >= (%s::date + 1)::timestamp AT TIME ZONE %s)",
                [as_of, settings.TIME_ZONE],
            )
        else:
            cursor.execute("SELECT EXISTS (SELECT 1 FROM crm_purchase WHERE date(purchased_at) > %s)", [as_of])
        return bool(cursor.fetchone()[0])


def summary_source(*, as_of: date) -> SummarySource:
    """Pick the cheapest source that gives the aggregate's exact summary as of this date."""
    in_step, detail = summary_in_step()
    if not in_step:
        return SummarySource("lines", f"kept summary out of step ({detail}); run rebuild_clv_summary")
    if purchases_after(as_of):
        return SummarySource("days", "purchases dated after the as-of date: per-day rows up to it")
    return SummarySource("kept", "no purchase dated after the as-of date: the kept per-customer rows")


def read_summary(
    *, source: str, as_of: date, default_margin: float, first_id: int = 0, end_id: int | None = None
) -> CustomerSummary:
    """The per-customer summary as of `as_of` from the kept tables (source "kept" or "days").

    first_id / end_id restrict it to customers with first_id <= id < end_id (a scoring shard).
    """
    cutoff = (as_of - EPOCH).days
    uncosted_share = 1 - default_margin
    ids_filter, ids_params = customer_range("customer_id", first_id, end_id)
    if source == "kept":
        sql = f"""
            SELECT customer_id, CAST(days - 1 AS double precision), CAST({day_number("first_day")} AS double precision),
                   CAST({day_number("last_day")} AS double precision), CAST(total_value AS double precision),
                   CAST(repeat_value AS double precision), CAST(total_value - cost - uncosted_price * %s AS double precision)
            FROM clv_purchasesummary WHERE {ids_filter} ORDER BY customer_id
        """
        params = [uncosted_share, *ids_params]
    elif source == "days":
        sql = f"""
            SELECT customer_id, CAST(COUNT(*) - 1 AS double precision), CAST({day_number("MIN(day)")} AS double precision),
                   CAST({day_number("MAX(day)")} AS double precision), CAST(SUM(amount) AS double precision),
                   CAST(SUM(CASE WHEN day > first_day THEN amount ELSE 0 END) AS double precision),
                   CAST(SUM(amount) - SUM(cost) - SUM(uncosted_price) * %s AS double precision)
            FROM (SELECT d.*, MIN(d.day) OVER (PARTITION BY d.customer_id) AS first_day
                  FROM clv_purchaseday d WHERE d.day <= %s AND {ids_filter}) t
            GROUP BY customer_id ORDER BY customer_id
        """
        params = [uncosted_share, as_of, *ids_params]
    else:
        raise ValueError(f"read_summary reads the kept tables (source kept or days), not {source!r}")
    columns = fetch_arrays(sql, params, ["int8"] + ["float8"] * 6)
    return summary_from_columns(*columns, cutoff=cutoff)


def calibration_and_holdout(*, as_of: date, calibration_end: date) -> tuple[CustomerSummary, np.ndarray]:
    """In one pass over PurchaseDay: the purchase-count summary as of calibration_end of the customers
    who had bought by then, and each one's occasions in (calibration_end, as_of].

    The holdout check compares purchase counts only, so the calibration summary's values
    (monetary, total value, margin) are NaN.
    """
    cal = (calibration_end - EPOCH).days
    if connection.vendor != "postgresql":
        return _calibration_and_holdout_counts(as_of=as_of, calibration_end=calibration_end)
    # litt: sum of ln(days between consecutive occasions) up to the calibration date, for MBG/CNBD-k's regularity.
    sql = f"""
        SELECT customer_id,
               CAST(COUNT(*) FILTER (WHERE day <= %s) - 1 AS double precision),
               CAST({day_number("MIN(day)")} AS double precision),
               CAST({day_number("MAX(day) FILTER (WHERE day <= %s)")} AS double precision),
               CAST(COUNT(*) FILTER (WHERE day > %s) AS double precision),
               CAST(COALESCE(SUM(LN(day - previous)) FILTER (WHERE day <= %s), 0) AS double precision)
        FROM (SELECT customer_id, day, LAG(day) OVER (PARTITION BY customer_id ORDER BY day) AS previous
              FROM clv_purchaseday WHERE day <= %s) t
        GROUP BY customer_id HAVING MIN(day) <= %s ORDER BY customer_id
    """
    ids, frequency, first, last, holdout, litt = fetch_arrays(
        sql, [calibration_end, calibration_end, calibration_end, calibration_end, as_of, calibration_end],
        ["int8"] + ["float8"] * 5,
    )
    nan = np.full(ids.size, np.nan)
    summary = summary_from_columns(ids, frequency, first, last, nan, nan, nan, cutoff=cal)
    summary.litt = litt
    return summary, holdout


def _calibration_and_holdout_counts(*, as_of: date, calibration_end: date) -> tuple[CustomerSummary, np.ndarray]:
    """The same without litt (SQLite has no LN): MBG/CNBD-k then sits out of the model choice."""
    cal = (calibration_end - EPOCH).days
    sql = f"""
        SELECT customer_id,
               CAST(COUNT(*) FILTER (WHERE day <= %s) - 1 AS double precision),
               CAST({day_number("MIN(day)")} AS double precision),
               CAST({day_number("MAX(day) FILTER (WHERE day <= %s)")} AS double precision),
               CAST(COUNT(*) FILTER (WHERE day > %s) AS double precision)
        FROM clv_purchaseday WHERE day <= %s
        GROUP BY customer_id HAVING MIN(day) <= %s ORDER BY customer_id
    """
    ids, frequency, first, last, holdout = fetch_arrays(
        sql, [calibration_end, calibration_end, calibration_end, as_of, calibration_end], ["int8"] + ["float8"] * 4
    )
    nan = np.full(ids.size, np.nan)
    return summary_from_columns(ids, frequency, first, last, nan, nan, nan, cutoff=cal), holdout


def customer_range(column: str, first_id: int, end_id: int | None) -> tuple[str, list]:
    """SQL condition (and its parameters) for first_id <= column < end_id (no upper bound when end_id is None)."""
    if end_id is None:
        return f"{column} >= %s", [first_id]
    return f"{column} >= %s AND {column} < %s", [first_id, end_id]


def summary_from_columns(ids, frequency, first_day, last_day, total_value, repeat_value, margin, *, cutoff: int):
    """CustomerSummary from per-customer columns (days as numbers since 1970-01-01), the same for every source."""
    monetary = np.divide(repeat_value, frequency, out=np.zeros_like(repeat_value), where=frequency > 0)
    epoch = np.datetime64(EPOCH, "D")
    return CustomerSummary(
        customer_ids=np.asarray(ids, dtype=np.int64), frequency=frequency, recency=last_day - first_day,
        T=cutoff - first_day, monetary=monetary, total_value=total_value, total_margin=margin,
        first_purchase=epoch + first_day.astype("timedelta64[D]"),
        last_purchase=epoch + last_day.astype("timedelta64[D]"), time_unit="days",
    )
