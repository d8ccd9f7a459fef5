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
from crm.services import purchase_amount_max, purchase_plausible, purchases_bulk_insert

REQUIRED_COLUMNS = ("customer_external_id", "purchased_at", "amount")
OPTIONAL_COLUMNS = ("product_sku", "quantity", "unit_cost", "order_ref")
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
        parse = _RowParser(index, customers, products, date_format, timezone.now())
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
        self.customers = customers
        self.products = products
        self.date_format = date_format
        self.now = now
        self.bound = purchase_amount_max()
        self.dates: dict[str, datetime] = {}

    def __call__(self, row: list[str], line: int) -> tuple | None:
        """The row to write (customer's external id first), or None for a line of empty cells."""
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
            self.customers.pending.add(external_id)
        return (external_id, product_id, quantity, unit_price, amount.quantize(MONEY), unit_cost, purchased_at,
                order_ref, None, self.now, self.now)


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
