"""CSV import of purchase histories: streamed, validated line by line, all or nothing.

The file is read row by row (never whole), purchases are written in batches through the
one bulk purchase path, and the whole import runs in one transaction: the first bad line
stops it with a message naming the line, and nothing of that file stays written. The CLV
summary of the customers the file touched is recomputed once, at the end of the import.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TextIO

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from clv.models import PurchaseDay, PurchaseSummary
from clv.summary import summary_deferred
from crm.bulk import bulk_insert, refresh_statistics
from crm.dates import happened_error
from crm.models import Customer, Product, Purchase
from crm.services import purchase_plausible, purchases_bulk_insert

REQUIRED_COLUMNS = ("customer_external_id", "purchased_at", "amount")
OPTIONAL_COLUMNS = ("product_sku", "quantity", "unit_cost", "order_ref")
PURCHASE_COLUMNS = ["customer_id", "product_id", "quantity", "unit_price", "amount", "unit_cost", "purchased_at",
                    "order_ref", "external_id", "created_at", "updated_at"]
DEFAULT_BATCH_SIZE = 5_000
MONEY = Decimal("0.01")


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


def import_purchases_csv(
    source: str | Path | TextIO,
    *,
    date_format: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Import purchases from CSV; raises ImportError_ (and writes nothing) on the first bad line."""
    if isinstance(source, str | Path):
        with open(source, newline="", encoding="utf-8-sig") as handle:
            return import_purchases_csv(handle, date_format=date_format, batch_size=batch_size, progress=progress)
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
        customers = _CustomerCache()
        products = dict(Product.objects.values_list("sku", "pk"))
        now = timezone.now()
        batch: list[tuple] = []
        for line, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise ImportError_(line, f"expected {len(header)} values, found {len(row)}")
            batch.append(_parse(row, index, line, customers, products, date_format, now))
            result.rows += 1
            if len(batch) >= batch_size:
                customers.flush()
                purchases_bulk_insert(columns=PURCHASE_COLUMNS, rows=customers.resolve(batch))
                batch = []
                if progress:
                    progress(result.rows)
        customers.flush()
        if batch:
            purchases_bulk_insert(columns=PURCHASE_COLUMNS, rows=customers.resolve(batch))
        if progress:
            progress(result.rows)
        result.customers_created = customers.created
        from crm.opportunities.services import opportunities_link_pending_wins

        opportunities_link_pending_wins()  # a won opportunity is realised by an imported purchase too
    refresh_statistics(Customer, Purchase, PurchaseDay, PurchaseSummary)
    return result


class _CustomerCache:
    """external_id -> customer pk, creating unseen customers in bulk before each batch is written."""

    def __init__(self):
        self.known: dict[str, int] = {}
        self.pending: set[str] = set()
        self.created = 0

    def note(self, external_id: str) -> str:
        if external_id not in self.known:
            self.pending.add(external_id)
        return external_id

    def flush(self) -> None:
        if not self.pending:
            return
        wanted = list(self.pending)
        found = dict(Customer.objects.filter(external_id__in=wanted).values_list("external_id", "pk"))
        new = sorted(set(wanted) - set(found))
        if new:
            now = timezone.now()
            bulk_insert(
                Customer,
                ["external_id", "name", "kind", "relationship_type", "lifecycle_stage", "industry", "city", "country",
                 "email", "phone", "website", "notes", "created_at", "updated_at"],
                ((e, e, "company", "transactional", "acquired", "", "", "", "", "", "", "", now, now) for e in new),
            )
            found.update(Customer.objects.filter(external_id__in=new).values_list("external_id", "pk"))
            self.created += len(new)
        self.known.update(found)
        self.pending.clear()

    def resolve(self, batch: list[tuple]):
        for row in batch:
            yield (self.known[row[0]], *row[1:])


def _parse(row, index, line, customers, products, date_format, now) -> tuple:
    def cell(name: str) -> str:
        return row[index[name]].strip() if name in index else ""

    external_id = cell("customer_external_id")
    if not external_id:
        raise ImportError_(line, "customer_external_id is empty")
    if len(external_id) > 100:
        raise ImportError_(line, "customer_external_id is longer than 100 characters")
    purchased_at = _parse_when(cell("purchased_at"), date_format, line)
    amount = _decimal(cell("amount"), "amount", line)
    quantity = _decimal(cell("quantity"), "quantity", line) if cell("quantity") else Decimal(1)
    if quantity <= 0:
        raise ImportError_(line, f"quantity must be positive, got {cell('quantity')!r}")
    unit_cost = _decimal(cell("unit_cost"), "unit_cost", line) if cell("unit_cost") else None
    sku = cell("product_sku")
    product_id = None
    if sku:
        product_id = products.get(sku)
        if product_id is None:
            raise ImportError_(line, f"unknown product_sku {sku!r}")
    order_ref = cell("order_ref")
    if len(order_ref) > 100:
        raise ImportError_(line, "order_ref is longer than 100 characters")
    unit_price = (amount / quantity).quantize(MONEY)
    try:
        purchase_plausible(amount=amount, unit_price=unit_price)
    except ValidationError as exc:
        raise ImportError_(line, " ".join(exc.messages)) from None
    return (customers.note(external_id), product_id, quantity, unit_price, amount.quantize(MONEY),
            None if unit_cost is None else unit_cost.quantize(MONEY), purchased_at, order_ref, None, now, now)


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
