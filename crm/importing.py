"""CSV import of every kind of record: the one parser behind the import commands and the import page.

A file is read row by row (never whole) with a column mapping {file column -> field}; each row
is turned into what the API's bulk upsert receives and validated by the same serializers
(crm.api.serializers), then written in batches through crm.services.records_upsert, so the
change history, the change feed, webhooks, tombstones and the CLV summary follow as for any
other write. Records are keyed by external_id: a row whose external_id is stored updates that
record, any other row creates one, so importing the same file twice changes nothing.
References to other records are by their key: a customer or holding by external_id, a product
by SKU, a user by username, a contact's people by their external_ids separated by ";".

The whole file is imported in one transaction, all or nothing: every line is checked, errors
are collected with their line number ("line 7: email: Enter a valid email address.") and if
there is any, nothing stays written. A dry run (the preview) does the same work and always
rolls back. Purchase lines go through crm.imports.import_purchases_csv, the fast purchase path,
keyed by an optional external_id or the CRM's own id (an export's lines update themselves).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, TextIO

from django.db import transaction
from rest_framework import exceptions, serializers
from rest_framework import views as _drf_views  # noqa: F401  (before crm.api.problems, which DRF's settings import)

from accounts.models import User
from crm import services
from crm.api import serializers as s
from crm.api.fast import BulkValidation
from crm.api.problems import ExternalIdTaken, flatten_errors
from crm.bulk import storable_key
from crm.conflicts import ConcurrentWrite
from crm.exports import FORMULA_STARTS
from crm.models import Contact, Customer, Event, Holding, Person, Product, Purchase, Usage

BATCH_SIZE = 1_000  # rows validated and written together
MAX_ERRORS_KEPT = 200  # error messages kept for the report; all of them are counted
PREVIEW_ROWS = 20
PEOPLE_SEPARATOR = ";"


@dataclass(frozen=True)
class Column:
    """A field of an import file: its name, whether every row needs it, and what it refers to."""

    name: str
    required: bool = False
    ref: str = ""  # "", "customer", "holding", "product", "user", "people"
    api: str = ""  # the serializer field it feeds (default: its own name)
    help: str = ""

    @property
    def target(self) -> str:
        return self.api or self.name


def _c(name: str, required: bool = False, **kw) -> Column:
    return Column(name, required, **kw)


EXTERNAL_ID = _c("external_id", True, help="The record's key in your system; a stored key updates that record.")
CUSTOMER_REF = _c("customer_external_id", True, ref="customer", api="customer", help="The customer's external_id.")


@dataclass(frozen=True)
class ImportKind:
    key: str
    label: str
    model: type
    serializer_class: type | None
    columns: tuple[Column, ...]
    admin_only: bool = False

    @property
    def fields(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


KINDS: dict[str, ImportKind] = {
    kind.key: kind
    for kind in [
        ImportKind(
            "customers",
            "Customers",
            Customer,
            s.CustomerSerializer,
            (
                EXTERNAL_ID,
                _c("name", True),
                _c("kind"),
                _c("owner", ref="user", help="The owner's username."),
                _c("relationship_type"),
                _c("lifecycle_stage"),
                _c("acquired_on"),
                _c("lost_on"),
                _c("industry"),
                _c("address"),
                _c("city"),
                _c("country"),
                _c("email"),
                _c("phone"),
                _c("website"),
                _c("notes"),
            ),
        ),
        ImportKind(
            "people",
            "People",
            Person,
            s.PersonSerializer,
            (
                EXTERNAL_ID,
                CUSTOMER_REF,
                _c("first_name"),
                _c("last_name", True),
                _c("job_title"),
                _c("dmu_role"),
                _c("email"),
                _c("phone"),
                _c("is_active"),
                _c("is_primary"),
            ),
        ),
        ImportKind(
            "products",
            "Products",
            Product,
            s.ProductSerializer,
            (
                EXTERNAL_ID,
                _c("sku", True),
                _c("name", True),
                _c("family", True),
                _c("tier"),
                _c("list_price", True),
                _c("unit_cost"),
                _c("capacity_unit"),
                _c("capacity_per_unit"),
                _c("is_active"),
                _c("description"),
                _c("renewal_period"),
                _c("period_price"),
            ),
            admin_only=True,
        ),
        ImportKind(
            "holdings",
            "Holdings",
            Holding,
            s.HoldingSerializer,
            (
                EXTERNAL_ID,
                CUSTOMER_REF,
                _c("product_sku", True, ref="product", api="product", help="The product's SKU."),
                _c("quantity"),
                _c("since", True),
                _c("until"),
                _c("status"),
            ),
        ),
        ImportKind(
            "usage",
            "Usage",
            Usage,
            s.UsageSerializer,
            (
                EXTERNAL_ID,
                _c("holding_external_id", True, ref="holding", api="holding", help="The holding's external_id."),
                _c("period_start", True),
                _c("period_end", True),
                _c("used", True),
                _c("capacity"),
                _c("satisfaction"),
                _c("nps"),
                _c("note"),
            ),
        ),
        ImportKind(
            "contacts",
            "Contacts",
            Contact,
            s.ContactSerializer,
            (
                EXTERNAL_ID,
                CUSTOMER_REF,
                _c("channel", True),
                _c("direction"),
                _c("occurred_at", True),
                _c("subject", True),
                _c("salesperson", ref="user", help="The salesperson's username."),
                _c("people", ref="people", help="External ids of the people who took part, separated by ;."),
                _c("notes"),
                _c("outcome"),
                _c("follow_up_on"),
                _c("follow_up_done_at"),
            ),
        ),
        ImportKind(
            "events",
            "Events",
            Event,
            s.EventSerializer,
            (
                EXTERNAL_ID,
                CUSTOMER_REF,
                _c("kind", True),
                _c("occurred_at", True),
                _c("impact"),
                _c("description"),
            ),
        ),
        ImportKind(
            "purchases",
            "Purchases",
            Purchase,
            None,
            (
                _c("id", help="The CRM's own number of a stored line, as exported: that line is updated."),
                _c("external_id", help="The line's key in your system; a stored key updates that line."),
                _c("customer_external_id", True, help="The customer's external_id; unknown customers are created."),
                _c("purchased_at", True),
                _c("amount", True),
                _c("product_sku", help="The product's SKU."),
                _c("quantity"),
                _c("unit_cost"),
                _c("order_ref"),
            ),
        ),
    ]
}


class ImportFailed(Exception):
    """The file cannot be imported; nothing was written. `errors` name the lines."""

    def __init__(self, result: ImportResult):
        self.result = result
        super().__init__(f"{result.error_count} error(s); first: {result.errors[0] if result.errors else ''}")


@dataclass
class RowError:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.field + ': ' if self.field else ''}{self.message}"


@dataclass
class PreviewRow:
    line: int
    values: dict[str, str]
    errors: list[str] = field(default_factory=list)


@dataclass
class ImportResult:
    kind: str
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    error_count: int = 0
    errors: list[RowError] = field(default_factory=list)
    preview: list[PreviewRow] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    def add_error(self, line: int, field_name: str, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(RowError(line, field_name, message))
        for row in self.preview:
            if row.line == line:
                row.errors.append(f"{field_name + ': ' if field_name else ''}{message}")


# --- the mapping ---------------------------------------------------------------------------


def parse_mapping(pairs: Iterable[str]) -> dict[str, str]:
    """`file_col=field` strings (the commands' --map) as {file column: field}."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        column, sep, target = pair.partition("=")
        if not sep or not column.strip() or not target.strip():
            raise ValueError(f"--map {pair!r}: give it as file_column=field")
        mapping[column.strip()] = target.strip()
    return mapping


def default_mapping(kind: ImportKind, header: list[str], remembered: dict[str, str] | None = None) -> dict[str, str]:
    """A mapping for `header`: the remembered one where it names a column of this file, else
    columns named like a field (case and spaces aside), else nothing."""
    by_norm = {_norm(f): f for f in kind.fields}
    mapping = {}
    used: set[str] = set()
    for column in header:
        target = (remembered or {}).get(column) or by_norm.get(_norm(column), "")
        if target in kind.fields and target not in used:
            mapping[column] = target
            used.add(target)
    return mapping


def _norm(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def mapping_problems(kind: ImportKind, header: list[str], mapping: dict[str, str]) -> list[str]:
    """What is wrong with a mapping for this file (empty when it can be used)."""
    problems = []
    unknown_columns = [c for c in mapping if c not in header]
    if unknown_columns:
        problems.append("the file has no column(s) " + ", ".join(unknown_columns))
    bad_fields = sorted({t for t in mapping.values() if t and t not in kind.fields})
    if bad_fields:
        problems.append(f"{kind.key} have no field(s) {', '.join(bad_fields)} (fields: {', '.join(kind.fields)})")
    targets = [t for t in mapping.values() if t]
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        problems.append("field(s) mapped from more than one column: " + ", ".join(twice))
    missing = [f for f in kind.required if f not in targets]
    if missing:
        problems.append("no column for the required field(s) " + ", ".join(missing))
    if len(set(header)) != len(header):
        problems.append("repeated column names in the header")
    return problems


def read_header(source: TextIO) -> list[str]:
    return [h.strip() for h in next(csv.reader(source), [])]


# --- running an import ---------------------------------------------------------------------


def import_csv(
    kind: ImportKind | str,
    source: TextIO | Iterable[str],
    *,
    user: User,
    mapping: dict[str, str] | None = None,
    dry_run: bool = False,
    preview_rows: int = 0,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Import a CSV stream of `kind` as `user` (the visibility rule and the API's role rules apply).

    `mapping` maps file columns to fields (None: columns named as the fields). Returns the
    result when every line was good (written unless `dry_run`); raises ImportFailed, having
    written nothing, otherwise. With `preview_rows`, the result (or the exception's result)
    carries the first rows with their values and errors.
    """
    kind = KINDS[kind] if isinstance(kind, str) else kind
    result = ImportResult(kind=kind.key, dry_run=dry_run)
    reader = csv.reader(source)
    header = [h.strip() for h in next(reader, [])]
    if not header:
        result.add_error(1, "", "the file is empty; expected a header line")
        raise ImportFailed(result)
    if mapping is None:
        mapping = {h: h for h in header if h in kind.fields}
        extra = [h for h in header if h not in kind.fields]
        if extra:
            result.add_error(
                1, "", f"unknown column(s) {', '.join(extra)} (fields: {', '.join(kind.fields)}); map or drop them"
            )
    mapping = {c: t for c, t in mapping.items() if t}
    problems = mapping_problems(kind, header, mapping)
    for problem in problems:
        result.add_error(1, "", problem)
    if result.error_count:
        raise ImportFailed(result)
    if kind.admin_only and not user.sees_everything:
        result.add_error(1, "", f"only admins import {kind.label.lower()}")
        raise ImportFailed(result)
    if kind.key == "purchases":
        return _import_purchases(
            kind,
            reader,
            header,
            mapping,
            result,
            user=user,
            dry_run=dry_run,
            preview_rows=preview_rows,
            batch_size=batch_size,
            progress=progress,
        )
    index = [(i, mapping[name]) for i, name in enumerate(header) if name in mapping]
    label_of = {
        target: (target if column == target else f"{target} (column {column!r})") for column, target in mapping.items()
    }
    importer = _Importer(kind, user, result, label_of)
    try:
        with transaction.atomic():
            batch: list[tuple[int, dict[str, str]]] = []
            for line, row in _rows(reader):
                result.rows += 1
                if len(row) != len(header):
                    result.add_error(line, "", f"expected {len(header)} values, found {len(row)}")
                    continue
                values = {target: cell_text(row[i]) for i, target in index}
                if len(result.preview) < preview_rows:
                    result.preview.append(PreviewRow(line, values))
                batch.append((line, values))
                if len(batch) >= batch_size:
                    importer.write(batch)
                    batch = []
                    if progress:
                        progress(result.rows)
            if batch:
                importer.write(batch)
            if progress:
                progress(result.rows)
            if result.error_count or dry_run:
                raise _Undo
    except _Undo:
        pass
    if result.error_count:
        raise ImportFailed(result)
    return result


class _Undo(Exception):
    """Leaves the import's transaction, rolling it back."""


def cell_text(raw: str) -> str:
    """A cell as written by someone: trimmed, and without the ' the exports put before a value that a
    spreadsheet would take for a formula (crm.exports.spreadsheet_safe), so an export imports back as it was."""
    text = raw.strip()
    if len(text) > 1 and text[0] == "'" and text[1] in FORMULA_STARTS:
        return text[1:]
    return text


def _rows(reader) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) of the data rows; blank lines are skipped; `line` counts from 1 (the header)."""
    for row in reader:
        if not row or all(not cell.strip() for cell in row):
            continue
        yield reader.line_num, row


class _Importer:
    """Validates and writes batches of one kind, collecting errors by line."""

    def __init__(self, kind: ImportKind, user: User, result: ImportResult, label_of: dict[str, str]):
        self.kind = kind
        self.user = user
        self.result = result
        self.label_of = label_of
        self.seen: dict[str, int] = {}  # external_id -> first line
        self.serializer = kind.serializer_class(context={"request": SimpleNamespace(user=user)})
        self.validate = BulkValidation(self.serializer)
        self.assignable = None

    def error(self, line: int, target: str, message: str) -> None:
        column = next((c for c in self.kind.columns if c.target == target), None)
        name = self.label_of.get(column.name, column.name) if column else target
        self.result.add_error(line, name, message)

    def write(self, batch: list[tuple[int, dict[str, str]]]) -> None:
        model = self.kind.model
        records: list[tuple[int, dict[str, Any]]] = []
        prepared = self._resolve([values for _, values in batch])
        for (line, values), (record, problems) in zip(batch, prepared, strict=True):
            for target, message in problems:
                self.error(line, target, message)
            key = values.get("external_id", "")
            if not key:
                self.error(line, "external_id", "Every row needs an external_id (the record's key in your system).")
                continue
            if not storable_key(key):
                self.error(line, "external_id", "At most 100 characters.")
                continue
            if key in self.seen:
                self.error(line, "external_id", f"{key!r} is also on line {self.seen[key]}; each record once per file.")
                continue
            self.seen[key] = line
            if not problems:
                records.append((line, record))
        if not records:
            return
        keys = [record["external_id"] for _, record in records]
        stored = services.records_locked(model=model, external_ids=keys)
        visible = services.records_visible(queryset=s.visible_queryset(model, self.user), stored=stored)
        self.serializer.context["ref_cache"] = s.prefetch_refs(self.serializer, [r for _, r in records], self.user)
        validated: list[dict[str, Any]] = []
        lines: list[int] = []
        for line, record in records:
            key = record["external_id"]
            if key in stored and key not in visible:
                self.error(line, "external_id", ExternalIdTaken.message(key))
                continue
            instance = stored.get(key)
            try:
                data = dict(self.validate(record, instance=instance, partial=instance is not None))
            except exceptions.ValidationError as exc:
                for problem in flatten_errors(exc.detail):
                    self.error(line, problem["field"], problem["message"])
                continue
            if instance is None and model is Event:
                data["recorded_by"] = self.user
            validated.append(data)
            lines.append(line)
        if not validated:
            return
        try:
            results = services.records_upsert(model=model, records=validated, existing=stored)
        except services.RecordErrors as exc:
            for index, fields in exc.errors.items():
                for target, messages in fields.items():
                    for message in messages:
                        self.error(lines[index], "" if target == "__all__" else target, message)
            return
        except ConcurrentWrite as exc:
            self.error(lines[0], "", f"{exc}; import the file again")
            return
        for outcome, _ in results:
            setattr(self.result, outcome, getattr(self.result, outcome) + 1)

    def _resolve(self, rows: list[dict[str, str]]) -> list[tuple[dict[str, Any], list[tuple[str, str]]]]:
        """Each row as API input, with its references looked up once per batch: (record, problems)."""
        wanted: dict[str, set[str]] = {"product": set(), "user": set(), "people": set()}
        for values in rows:
            for column in self.kind.columns:
                text = values.get(column.name, "")
                if not text or column.ref not in wanted:
                    continue
                if column.ref == "people":
                    wanted["people"].update(p.strip() for p in text.split(PEOPLE_SEPARATOR) if p.strip())
                else:
                    wanted[column.ref].add(text)
        products = (
            dict(Product.objects.filter(sku__in=wanted["product"]).values_list("sku", "pk"))
            if wanted["product"]
            else {}
        )
        users = (
            dict(User.objects.filter(username__in=wanted["user"], is_active=True).values_list("username", "pk"))
            if wanted["user"]
            else {}
        )
        if users and self.assignable is None:
            self.assignable = set(s.assignable_users(self.user).values_list("pk", flat=True))
        people = (
            dict(
                Person.objects.visible_to(self.user)
                .filter(external_id__in=wanted["people"])
                .values_list("external_id", "pk")
            )
            if wanted["people"]
            else {}
        )
        out = []
        for values in rows:
            record: dict[str, Any] = {}
            problems: list[tuple[str, str]] = []
            for column in self.kind.columns:
                if column.name not in values:
                    continue
                text = values[column.name]
                target = column.target
                if column.ref == "product":
                    if text:
                        if text not in products:
                            problems.append((target, f"No product with SKU {text!r}."))
                            continue
                        record[target] = products[text]
                        continue
                elif column.ref == "user":
                    # An empty cell leaves the user out: you, for a new record; as it was, for a stored one.
                    if text not in users:
                        if text:
                            problems.append((target, f"No active user with username {text!r}."))
                    elif users[text] not in self.assignable:
                        problems.append((target, f"{text!r} is not someone you may assign."))
                    else:
                        record[target] = users[text]
                    continue
                elif column.ref == "people":
                    names = [p.strip() for p in text.split(PEOPLE_SEPARATOR) if p.strip()]
                    unknown = [n for n in names if n not in people]
                    if unknown:
                        problems.append(
                            (target, f"No person with external_id {unknown[0]!r} (or not one you can see).")
                        )
                        continue
                    record[target] = [people[n] for n in names]
                    continue
                elif text:
                    record[target] = text
                    continue
                empty = _empty_value(self.serializer.fields.get(target))
                if empty is not _OMIT:
                    record[target] = empty
            out.append((record, problems))
        return out


_OMIT = object()


def _empty_value(serializer_field) -> Any:
    """What an empty cell means for a field: blank text, no value (null), or the default (omitted)."""
    if serializer_field is None:
        return _OMIT
    if isinstance(serializer_field, serializers.CharField | serializers.ChoiceField) and getattr(
        serializer_field, "allow_blank", False
    ):
        return ""
    if getattr(serializer_field, "allow_null", False):
        return None
    return _OMIT


# --- purchases: through the fast purchase import ---------------------------------------------


def _import_purchases(kind, reader, header, mapping, result, *, user, dry_run, preview_rows, batch_size, progress):
    """Purchase lines through crm.imports.import_purchases_csv (which stops at the first bad line),
    fed the file with its columns renamed by the mapping."""
    from crm.imports import ImportError_, import_purchases_csv

    columns = [(i, mapping[name]) for i, name in enumerate(header) if name in mapping]
    out_header = [target for _, target in columns]
    lines_of: list[int] = [1]  # the source line of each line given to the purchase import

    def renamed() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)

        def line(cells) -> str:
            buffer.seek(0)
            buffer.truncate()
            writer.writerow(cells)
            return buffer.getvalue()

        yield line(out_header)
        for source_line, row in _rows(reader):
            if len(row) != len(header):
                raise _BadRow(source_line, f"expected {len(header)} values, found {len(row)}")
            cells = [cell_text(row[i]) for i, _ in columns]
            if len(result.preview) < preview_rows:
                result.preview.append(PreviewRow(source_line, dict(zip(out_header, cells, strict=True))))
            lines_of.append(source_line)
            yield line(cells)

    try:
        with transaction.atomic():
            try:
                outcome = import_purchases_csv(renamed(), batch_size=batch_size, progress=progress, user=user)
            except ImportError_ as exc:
                line = getattr(exc, "line", None)
                source_line = lines_of[line - 1] if isinstance(line, int) and 0 < line <= len(lines_of) else 0
                result.add_error(source_line, "", getattr(exc, "problem", None) or str(exc))
                _fill_preview(reader, header, out_header, columns, result, preview_rows)
            except _BadRow as exc:
                result.add_error(exc.line, "", exc.message)
            else:
                result.rows = outcome.rows
                result.created, result.updated, result.unchanged = outcome.created, outcome.updated, outcome.unchanged
            if result.error_count or dry_run:
                raise _Undo
    except _Undo:
        pass
    if result.error_count:
        result.rows = max(result.rows, len(lines_of) - 1)
        raise ImportFailed(result)
    return result


def _fill_preview(reader, header, out_header, columns, result, preview_rows) -> None:
    """After the purchase import stopped at a bad line: the rest of the preview rows, read on."""
    if len(result.preview) >= preview_rows:
        return
    for source_line, row in _rows(reader):
        if len(row) == len(header):
            cells = [cell_text(row[i]) for i, _ in columns]
            result.preview.append(PreviewRow(source_line, dict(zip(out_header, cells, strict=True))))
        if len(result.preview) >= preview_rows:
            return


class _BadRow(Exception):
    def __init__(self, line: int, message: str):
        self.line = line
        self.message = message
        super().__init__(message)


def purchase_preview_errors(rows: list[PreviewRow], *, user: User) -> None:
    """Check each preview row of a purchase file on its own (the purchase import stops at the
    first bad line), so the preview shows every bad one among them; writes nothing."""
    from crm.imports import ImportError_, import_purchases_csv

    for row in rows:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(list(row.values))
        writer.writerow(list(row.values.values()))
        buffer.seek(0)
        try:
            with transaction.atomic():
                import_purchases_csv(buffer, user=user)
                raise _Undo
        except _Undo:
            pass
        except ImportError_ as exc:
            message = getattr(exc, "problem", None) or str(exc)
            if message not in row.errors:
                row.errors.append(message)
