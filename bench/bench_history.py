"""Benchmark: the cost of the change history's triggers on bulk upsert and on the CSV import.

Usage: DATABASE_URL=postgres://... REDIS_URL=redis://... python bench/bench_history.py [--batches 10] [--rows 200000]

Side by side in one process, alternating rounds with the history triggers enabled and disabled
(ALTER TABLE ... DISABLE TRIGGER on the pghistory triggers only; the change feed's stay on):
- bulk upsert through the API's WSGI stack in-process (DRF validation, services, the insert),
  1,000 purchase lines per request, created then updated (every amount changed);
- the CSV import command on a generated file of --rows purchase lines.
Each round writes to fresh customers (one purchase line each per batch, as bench_api does), so
the kept CLV summary costs the same in every round. PostgreSQL only. Writes into the configured
database (customers HBC-*, purchases HB-*).
"""

import argparse
import csv
import io
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("API_RATE", "1000000/min")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import override_settings  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from accounts.models import User  # noqa: E402
from accounts.tokens import token_issue  # noqa: E402
from crm.history_models import EVENT_MODELS  # noqa: E402
from crm.models import Customer  # noqa: E402

BATCH = 1000


def history_triggers(enabled: bool) -> None:
    tables = [model._meta.db_table for model in EVENT_MODELS]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE c.relname = ANY(%s) AND t.tgname LIKE 'pgtrigger_%%' AND NOT t.tgisinternal",
            [tables],
        )
        for table, name in cursor.fetchall():
            cursor.execute(f'ALTER TABLE "{table}" {"ENABLE" if enabled else "DISABLE"} TRIGGER "{name}"')


def customers_for_round(tag: str, count: int, owner) -> None:
    """Fresh customers per round (one purchase each per batch, as in bench_api), so the kept CLV
    summary costs the same in every round."""
    Customer.objects.bulk_create(
        [Customer(external_id=f"HBC-{tag}-{j}", name=f"Bench {tag} {j}", owner=owner) for j in range(count)],
        batch_size=5000,
    )


def bulk_round(client, tag: str, batches: int) -> tuple[float, float]:
    def records(amount: str, b: int):
        return [{"external_id": f"HB-{tag}-{b}-{i}", "customer": f"HBC-{tag}-{b * BATCH + i}", "amount": amount,
                 "purchased_at": f"2026-03-{1 + i % 28:02d}T12:00:00Z"} for i in range(BATCH)]

    rates = []
    for amount in ("10.00", "12.50"):
        started = time.perf_counter()
        for b in range(batches):
            response = client.post("/api/v1/purchases/bulk/", {"records": records(amount, b)}, format="json")
            assert response.status_code == 200, response.content[:300]
        rates.append(batches * BATCH / (time.perf_counter() - started))
    return rates[0], rates[1]


def import_round(rows: int, tag: str, customers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "purchases.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["customer_external_id", "purchased_at", "amount", "order_ref"])
            for i in range(rows):
                writer.writerow([f"HBC-{tag}-{i % customers}", f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}", "9.99",
                                 f"{tag}-{i}"])
        started = time.perf_counter()
        call_command("import_purchases", str(path), verbosity=0, stdout=io.StringIO())
        return rows / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=10, help="requests of 1,000 records per round")
    parser.add_argument("--rows", type=int, default=200_000, help="CSV lines per import round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per setting (alternating)")
    args = parser.parse_args()
    assert connection.vendor == "postgresql", "history is recorded on PostgreSQL only"
    user, _ = User.objects.get_or_create(username="history_bench", defaults={"role": User.Role.ADMIN})
    _, key = token_issue(user=user, name="bench")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    run = int(time.time())
    results: dict[bool, list] = {True: [], False: []}
    with override_settings(DEBUG=False, ALLOWED_HOSTS=["*"]):
        for r in range(args.rounds):
            for enabled in (True, False):
                history_triggers(enabled)
                tag = f"{run}-{r}-{int(enabled)}"
                customers_for_round(tag, args.batches * BATCH, user)
                create, update = bulk_round(client, tag, args.batches)
                imported = import_round(args.rows, tag, args.batches * BATCH) if args.rows else 0.0
                results[enabled].append((create, update, imported))
                print(f"round {r} history {'on ' if enabled else 'off'}: bulk create {create:,.0f}/s, "
                      f"bulk update {update:,.0f}/s, CSV import {imported:,.0f} rows/s", flush=True)
    history_triggers(True)
    print("best of each (records/s):")
    for enabled in (True, False):
        best = [max(values) for values in zip(*results[enabled], strict=True)]
        print(f"  history {'on ' if enabled else 'off'}: bulk create {best[0]:,.0f}, bulk update {best[1]:,.0f}, "
              f"CSV import {best[2]:,.0f}")


if __name__ == "__main__":
    main()
