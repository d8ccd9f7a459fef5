"""CSV import of purchase histories: streamed, validated line by line, all or nothing.

The file is read row by row (never whole), purchases are written in batches through the
one bulk purchase path, and the whole import runs in one transaction: the first bad line
stops it with a message naming the line, and nothing of that file stays written. The CLV
summary of the customers the file touched is recomputed once, at the end of the import.

A line is keyed by its optional `external_id` (the line's key in your other system) or, for a
line stored without one, by `id`, the CRM's own number of the line as the export writes it: a
line whose key is stored updates that line (or leaves it alone when nothing differs) instead
of adding one, so an exported file imported again changes nothing. Without either column
every line is added, as before. The stored keys of each batch are looked up in one query.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TextIO

import numpy as np
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from clv.models import PurchaseDay, PurchaseSummary
from clv.summary import summary_deferred
from crm.bulk import among, bulk_insert, refresh_statistics, storable_key
from crm.dates import happened_error
from crm.models import Customer, Product, Purchase
from crm.services import (
    PURCHASE_LINE_FIELDS,
    purchase_amount_max,
    purchase_plausible,
    purchases_bulk_insert,
    purchases_bulk_update,
)

REQUIRED_COLUMNS = ("customer_external_id", "purchased_at", "amount")
OPTIONAL_COLUMNS = ("product_sku", "quantity", "unit_cost", "order_ref", "external_id", "id")
PURCHASE_COLUMNS = ["customer_id", "product_id", "quantity", "unit_price", "amount", "unit_cost", "purchased_at",
                    "order_ref", "external_id", "created_at", "updated_at"]
DEFAULT_BATCH_SIZE = 5_000
MONEY = Decimal("0.01")
ONE = Decimal(1)


class ImportError_(Exception):
    """A problem with the file, naming the line (1 is the header)."""

    def __init__(self, line: int, problem: str):
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


@dataclass
class ImportResult:
    rows: int = 0
    customers_created: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0


def import_purchases_csv(
    source: str | Path | TextIO,
    *,
    date_format: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
    user=None,
) -> ImportResult:
    """Import purchases from CSV; raises ImportError_ (and writes nothing) on the first bad line.

    With `user` (the import page), a stored line is found by its key only among the lines of
    customers that user may see; without (the command line), among all of them.
    """
    if isinstance(source, str | Path):
        with open(source, newline="", encoding="utf-8-sig") as handle:
            return import_purchases_csv(handle, date_format=date_format, batch_size=batch_size, progress=progress,
                                        user=user)
    reader = csv.reader(source)
    header = next(reader, None)
    if header is None:
        raise ImportError_(1, "the file is empty; expected a header line")
    header = [h.strip() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if missing or unknown or len(set(header)) != len(header):
        parts = []
        if missing:
            parts.append("missing column(s) " + ", ".join(missing))
        if unknown:
            parts.append("unknown column(s) " + ", ".join(unknown))
        if len(set(header)) != len(header):
            parts.append("repeated column names")
        raise ImportError_(1, "; ".join(parts) + f" (expected {', '.join(REQUIRED_COLUMNS)} and optionally "
                           f"{', '.join(OPTIONAL_COLUMNS)})")
    index = {name: i for i, name in enumerate(header)}
    result = ImportResult()
    # One pass over the CLV summary of every customer the file touched, at the end, inside the transaction.
    with transaction.atomic(), summary_deferred():
        customers = _CustomerCache(user)
        products = dict(Product.objects.values_list("sku", "pk"))
        parse = _RowParser(index, customers, products, date_format, timezone.now())
        keyed = (_KeyedWriter(customers, parse.keys, parse.ids, parse.id_at is not None)
                 if parse.keyed else None)
        width = len(header)
        batch: list[tuple] = []
        for line, row in enumerate(reader, start=2):
            if len(row) != width:
                if not row or all(not cell.strip() for cell in row):
                    continue
                raise ImportError_(line, f"expected {width} values, found {len(row)}")
            parsed = parse(row, line)
            if parsed is None:
                continue
            batch.append(parsed)
            result.rows += 1
            if len(batch) >= batch_size:
                _write(batch, customers, keyed)
                batch = []
                if progress:
                    progress(result.rows)
        _write(batch, customers, keyed)
        if progress:
            progress(result.rows)
        result.customers_created = customers.created
        if keyed is None:
            result.created = result.rows
        else:
            result.created, result.updated, result.unchanged = keyed.created, keyed.updated, keyed.unchanged
        from crm.opportunities.services import opportunities_link_pending_wins

        opportunities_link_pending_wins()  # a won opportunity is realised by an imported purchase too
    refresh_statistics(Customer, Purchase, PurchaseDay, PurchaseSummary)
    return result


def _write(batch: list[tuple], customers: _CustomerCache, keyed: _KeyedWriter | None) -> None:
    customers.flush()
    if keyed is not None:
        for seen in keyed.seen:
            seen.flush()  # a key or id of an earlier batch again: refused before the batch is written
        keyed.write(batch)
    elif batch:
        purchases_bulk_insert(columns=PURCHASE_COLUMNS, rows=customers.resolve(batch))


# What a stored line is compared on, in the order of PURCHASE_COLUMNS' first nine (customer_id first).
_STORED = ("pk", "customer_id", "product_id", "quantity", "unit_price", "amount", "unit_cost", "purchased_at",
           "order_ref", "external_id")
_KEY_AT = PURCHASE_COLUMNS.index("external_id")


class _SeenOnce:
    """The file's values of one column that must appear once (external_ids, ids), each with the line
    it is on, in about 12 bytes a value, so a file of millions of keyed lines stays small: the
    current batch's in a dict, the earlier batches' as a sorted int64 array with their lines.

    Text is kept as its 64-bit hash (Python's, fixed within the process); two different keys
    sharing one would be refused as repeated, about once in 10**7 files of a million keys."""

    def __init__(self, name: str, hashed: bool):
        self.name = name
        self.hashed = hashed
        self.batch: dict = {}
        self.values = np.empty(0, dtype=np.int64)
        self.lines = np.empty(0, dtype=np.int64)

    def add(self, value, line: int) -> None:
        first = self.batch.setdefault(value, line)
        if first != line:
            raise ImportError_(line, f"{self.name} {value!r} is also on line {first}; each purchase line once per file")

    def get(self, value) -> int | None:
        """The line `value` is on (None: not in the file so far)."""
        if value in self.batch:
            return self.batch[value]
        code = hash(value) if self.hashed else value
        at = int(np.searchsorted(self.values, code))
        return int(self.lines[at]) if at < self.values.size and self.values[at] == code else None

    def flush(self) -> None:
        """Merge the current batch into the earlier ones; raises ImportError_ naming the first
        line of the batch whose value an earlier batch had."""
        if not self.batch:
            return
        given = list(self.batch)
        codes = np.fromiter((hash(v) for v in given) if self.hashed else given, dtype=np.int64, count=len(given))
        lines = np.fromiter(self.batch.values(), dtype=np.int64, count=len(given))
        order = np.argsort(codes, kind="stable")
        codes, lines = codes[order], lines[order]
        at = np.searchsorted(self.values, codes)
        if self.values.size:
            hit = self.values[np.minimum(at, self.values.size - 1)] == codes
            if hit.any():
                i = np.flatnonzero(hit)
                j = i[np.argmin(lines[i])]
                value = given[order[j]]
                raise ImportError_(int(lines[j]), f"{self.name} {value!r} is also on line "
                                                  f"{int(self.lines[at[j]])}; each purchase line once per file")
        self.values = np.insert(self.values, at, codes)
        self.lines = np.insert(self.lines, at, lines)
        self.batch = {}


class _KeyedWriter:
    """A file with an external_id or id column: each batch's lines split into new ones (inserted
    by the bulk path) and stored ones (updated when they differ), the stored ones found in one query."""

    def __init__(self, customers: _CustomerCache, keys: _SeenOnce, ids: _SeenOnce, with_ids: bool):
        self.customers = customers
        self.seen = (keys, ids)
        self.ids = ids  # the file's ids read so far -> their line
        self.with_ids = with_ids
        self.restricted = customers.restricted
        # Lines the import itself adds get ids above this: an id of the file is matched only against
        # lines stored before it began (an id from another book that the import just gave a new line
        # must not update that line).
        self.max_id = Purchase.objects.aggregate(top=Max("pk"))["top"] or 0
        self.matched: dict[int, int] = {}  # id of a stored line found by its key on a row without an id -> row
        self.created = self.updated = self.unchanged = 0

    def write(self, batch: list[tuple]) -> None:
        if not batch:
            return
        keys = [row[_KEY_AT] for _, _, row in batch if row[_KEY_AT] is not None]
        ids = [pk for _, pk, _ in batch if pk is not None and pk <= self.max_id]
        by_key: dict[str, tuple] = {}
        by_id: dict[int, tuple] = {}
        if keys or ids:  # one query per batch
            found = ((among(Purchase, "external_id", keys) if keys else Q())
                     | (among(Purchase, "id", ids) if ids else Q()))
            for stored in Purchase.objects.filter(found).values_list(*_STORED):
                by_id[stored[0]] = stored
                if stored[-1] is not None:
                    by_key[stored[-1]] = stored
        visible = None
        if self.restricted is not None and by_id:
            visible = set(Customer.objects.visible_to(self.restricted)
                          .filter(pk__in={stored[1] for stored in by_id.values()}).values_list("pk", flat=True))
        known = self.customers.known
        new: list[tuple] = []
        changed: list[Purchase] = []
        customers_before: dict[int, int] = {}
        for line, pk, row in batch:
            values = (known[row[0]], *row[1:])
            key = row[_KEY_AT]
            stored = by_key.get(key) if key is not None else None
            if stored is not None:
                if pk is not None and pk != stored[0]:
                    raise ImportError_(line, f"external_id {key!r} is the line with id {stored[0]}, not id {pk}")
            elif pk is not None and pk in by_id:
                stored = by_id[pk]
                if key is not None and stored[-1] is not None:
                    raise ImportError_(line, f"id {pk} is the line with external_id {stored[-1]!r}, not {key!r}; "
                                             "a line's external_id is not changed by an import")
                if stored[1] != values[0]:
                    raise ImportError_(line, f"id {pk} is a purchase line of another customer; an id matches a line "
                                             "of the same customer only (empty the id cell to add this line)")
            if stored is None:
                new.append(values)
                continue
            if visible is not None and stored[1] not in visible:
                what = f"external_id {key!r}" if key is not None and stored[-1] == key else f"id {stored[0]}"
                raise ImportError_(line, f"{what} is a purchase line of a customer you cannot see")
            # A line found by its key on one row and by its id on another (repeated keys and repeated
            # ids are refused as the file is read).
            if pk is None and self.with_ids:
                first = self.ids.get(stored[0]) or self.matched.setdefault(stored[0], line)
            else:
                first = self.matched.get(stored[0], line)
            if first != line:  # named at the later of the two (the other may be later in this batch)
                raise ImportError_(max(first, line), f"the same purchase line (id {stored[0]}) as line "
                                                     f"{min(first, line)}; each line once per file")
            if key is None:
                values = (*values[:_KEY_AT], stored[-1], *values[_KEY_AT + 1:])
            if values[:_KEY_AT + 1] == stored[1:]:
                self.unchanged += 1
                continue
            if values[0] != stored[1]:
                customers_before[stored[0]] = stored[1]
            changed.append(Purchase(pk=stored[0], **_line_fields(values)))
        if new:
            purchases_bulk_insert(columns=PURCHASE_COLUMNS, rows=new)
            self.created += len(new)
        if changed:
            purchases_bulk_update(rows=changed, customers_before=customers_before)
            self.updated += len(changed)


def _line_fields(values: tuple) -> dict:
    """A line's values (PURCHASE_COLUMNS order) as Purchase's field attributes."""
    return dict(zip([f"{name}_id" if name in ("customer", "product") else name for name in PURCHASE_LINE_FIELDS],
                    values, strict=False))


class _CustomerCache:
    """external_id -> customer pk, creating unseen customers in bulk before each batch is written.

    With a user who does not see everything (the import page), a stored customer they may not see
    is refused, naming the first line that refers to it (adding lines to an account one cannot
    open would change its figures behind its owner's back), and the customers the file creates
    are theirs, so they can see what they imported.
    """

    def __init__(self, user=None):
        self.known: dict[str, int] = {}
        self.pending: dict[str, int] = {}  # external_id -> the first line naming it
        self.created = 0
        self.restricted = user if user is not None and not user.sees_everything else None
        self.owner_id = self.restricted.pk if self.restricted is not None else None  # an admin's stay unassigned

    def flush(self) -> None:
        if not self.pending:
            return
        wanted = list(self.pending)
        found = dict(Customer.objects.filter(among(Customer, "external_id", wanted)).values_list("external_id", "pk"))
        if self.restricted is not None and found:
            seen = set(Customer.objects.visible_to(self.restricted).filter(pk__in=list(found.values()))
                       .values_list("pk", flat=True))
            hidden = [e for e, pk in found.items() if pk not in seen]
            if hidden:
                first = min(hidden, key=self.pending.__getitem__)
                raise ImportError_(self.pending[first], f"customer_external_id {first!r} is a customer you cannot see; "
                                   "ask its owner or an admin to import its lines")
        new = sorted(set(wanted) - set(found))
        if new:
            now = timezone.now()
            bulk_insert(
                Customer,
                ["external_id", "name", "kind", "relationship_type", "lifecycle_stage", "industry", "city", "country",
                 "email", "phone", "website", "notes", "owner_id", "created_at", "updated_at"],
                ((e, e, "company", "transactional", "acquired", "", "", "", "", "", "", "", self.owner_id, now, now)
                 for e in new),
            )
            found.update(Customer.objects.filter(among(Customer, "external_id", new)).values_list("external_id", "pk"))
            self.created += len(new)
        self.known.update(found)
        self.pending.clear()

    def resolve(self, batch: list[tuple]):
        for row in batch:
            yield (self.known[row[0]], *row[1:])


class _RowParser:
    """Checks and converts one line at a time. What stays the same from line to line (column
    positions, the products, the plausibility bound, dates already seen) is worked out once."""

    DATE_CACHE_MAX = 100_000  # distinct purchased_at texts remembered, so memory stays bounded

    def __init__(self, index: dict[str, int], customers: _CustomerCache, products: dict[str, int],
                 date_format: str | None, now: datetime):
        self.customer_at = index["customer_external_id"]
        self.when_at = index["purchased_at"]
        self.amount_at = index["amount"]
        self.sku_at = index.get("product_sku")
        self.quantity_at = index.get("quantity")
        self.cost_at = index.get("unit_cost")
        self.ref_at = index.get("order_ref")
        self.key_at = index.get("external_id")
        self.id_at = index.get("id")
        self.keyed = self.key_at is not None or self.id_at is not None
        self.keys = _SeenOnce("external_id", hashed=True)  # the file's keys and ids -> the line each is on
        self.ids = _SeenOnce("id", hashed=False)
        self.customers = customers
        self.products = products
        self.date_format = date_format
        self.now = now
        self.bound = purchase_amount_max()
        self.dates: dict[str, datetime] = {}

    def __call__(self, row: list[str], line: int) -> tuple | None:
        """The row to write (customer's external id first), or None for a line of empty cells; for a
        file with keys, (line, id or None, row)."""
        external_id = row[self.customer_at].strip()
        if not external_id:
            if all(not cell.strip() for cell in row):
                return None
            raise ImportError_(line, "customer_external_id is empty")
        if len(external_id) > 100:
            raise ImportError_(line, "customer_external_id is longer than 100 characters")
        text = row[self.when_at].strip()
        purchased_at = self.dates.get(text)
        if purchased_at is None:
            purchased_at = _parse_when(text, self.date_format, line)
            if len(self.dates) >= self.DATE_CACHE_MAX:
                self.dates.clear()
            self.dates[text] = purchased_at
        amount = _decimal(row[self.amount_at].strip(), "amount", line)
        quantity_text = row[self.quantity_at].strip() if self.quantity_at is not None else ""
        if quantity_text:
            quantity = _decimal(quantity_text, "quantity", line)
            if quantity <= 0:
                raise ImportError_(line, f"quantity must be positive, got {quantity_text!r}")
        else:
            quantity = ONE
        cost_text = row[self.cost_at].strip() if self.cost_at is not None else ""
        unit_cost = _decimal(cost_text, "unit_cost", line).quantize(MONEY) if cost_text else None
        product_id = None
        if self.sku_at is not None:
            sku = row[self.sku_at].strip()
            if sku:
                product_id = self.products.get(sku)
                if product_id is None:
                    raise ImportError_(line, f"unknown product_sku {sku!r}")
        order_ref = row[self.ref_at].strip() if self.ref_at is not None else ""
        if len(order_ref) > 100:
            raise ImportError_(line, "order_ref is longer than 100 characters")
        unit_price = (amount / quantity).quantize(MONEY)
        if amount > self.bound or unit_price > self.bound:
            try:
                purchase_plausible(amount=amount, unit_price=unit_price)
            except ValidationError as exc:
                raise ImportError_(line, " ".join(exc.messages)) from None
        if external_id not in self.customers.known:
            self.customers.pending.setdefault(external_id, line)
        if not self.keyed:
            return (external_id, product_id, quantity, unit_price, amount.quantize(MONEY), unit_cost, purchased_at,
                    order_ref, None, self.now, self.now)
        key = row[self.key_at].strip() if self.key_at is not None else ""
        if key:
            if not storable_key(key):
                raise ImportError_(line, "external_id is longer than 100 characters or holds a NUL character")
            self.keys.add(key, line)
        pk_text = row[self.id_at].strip() if self.id_at is not None else ""
        pk = None
        if pk_text:
            if not pk_text.isdecimal() or len(pk_text) > 18 or int(pk_text) == 0:
                raise ImportError_(line, f"id {pk_text!r} is not the CRM's number of a purchase line (leave it empty "
                                         "for a new line)")
            pk = int(pk_text)
            self.ids.add(pk, line)
        return line, pk, (external_id, product_id, quantity, unit_price, amount.quantize(MONEY), unit_cost,
                          purchased_at, order_ref, key or None, self.now, self.now)


def _decimal(text: str, name: str, line: int) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ImportError_(line, f"{name} is not a number: {text!r}") from None
    if not value.is_finite():
        raise ImportError_(line, f"{name} is not a number: {text!r}")
    if value < 0:
        raise ImportError_(line, f"{name} must not be negative, got {text}")
    if abs(value) >= Decimal("1e12"):
        raise ImportError_(line, f"{name} is too large: {text}")
    return value


def _parse_when(text: str, date_format: str | None, line: int) -> datetime:
    if not text:
        raise ImportError_(line, "purchased_at is empty")
    try:
        if date_format:
            value = datetime.strptime(text, date_format)
        elif len(text) == 10:
            value = datetime.combine(date.fromisoformat(text), time(12))
        else:
            value = datetime.fromisoformat(text)
    except ValueError:
        expected = date_format or "ISO 8601 (YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM])"
        raise ImportError_(line, f"purchased_at {text!r} is not a date in the format {expected}") from None
    if timezone.is_naive(value):
        value = timezone.make_aware(value)
    problem = happened_error(value, f"purchased_at {text!r}")
    if problem:
        raise ImportError_(line, problem)
    return value
