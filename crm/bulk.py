"""Fast bulk inserts: COPY on PostgreSQL, batched bulk_create elsewhere.

Used by the demo generator, the CSV import and other bulk paths. Rows are tuples in the
order of `columns` (database column names of the model's concrete fields); values are
written as given, so callers fill `created_at` / `updated_at` themselves.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

from django.db import connection, models

COPY_CHUNK_ROWS = 50_000
BULK_CREATE_BATCH = 2_000


def bulk_insert(model: type[models.Model], columns: Sequence[str], rows: Iterable[Sequence]) -> int:
    """Insert `rows` into `model`'s table; returns how many were written."""
    if connection.vendor == "postgresql":
        return _copy(model._meta.db_table, columns, rows)
    field_names = {f.column: f.attname for f in model._meta.concrete_fields}
    attnames = [field_names[c] for c in columns]
    written = 0
    batch: list[models.Model] = []
    for row in rows:
        batch.append(model(**dict(zip(attnames, row, strict=True))))
        if len(batch) >= BULK_CREATE_BATCH:
            model.objects.bulk_create(batch)
            written += len(batch)
            batch = []
    if batch:
        model.objects.bulk_create(batch)
        written += len(batch)
    return written


def _copy(table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> int:
    sql = f"COPY {table} ({', '.join(connection.ops.quote_name(c) for c in columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
    written = 0
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    cursor = connection.cursor()
    raw = cursor.cursor  # the psycopg2 cursor under Django's wrapper
    for row in rows:
        writer.writerow(["\\N" if v is None else v for v in row])
        written += 1
        if written % COPY_CHUNK_ROWS == 0:
            buffer.seek(0)
            raw.copy_expert(sql, buffer)
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        buffer.seek(0)
        raw.copy_expert(sql, buffer)
    return written


def refresh_statistics(*models_: type[models.Model]) -> None:
    """ANALYZE tables after a bulk load, so the planner does not plan for the empty tables it saw before."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for model in models_:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")
