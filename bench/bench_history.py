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

Besides records per second of wall time it reports records per CPU second: this process's CPU
time plus that of its PostgreSQL backend (read from /proc when the server runs on this machine),
which a machine shared with other jobs inflates much less than the wall time. Prints the
median of the rounds for each setting.
"""

import argparse
import csv
import io
import os
import statistics
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
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> float:
    """CPU time of this process and of its PostgreSQL backend (if that runs on this machine)."""
    total = time.process_time()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
    except (OSError, IndexError, ValueError):
        pass
    return total


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
        started, cpu = time.perf_counter(), cpu_seconds()
        for b in range(batches):
            response = client.post("/api/v1/purchases/bulk/", {"records": records(amount, b)}, format="json")
            assert response.status_code == 200, response.content[:300]
        rates.append(batches * BATCH / (time.perf_counter() - started))
        rates.append(batches * BATCH / (cpu_seconds() - cpu))
    return tuple(rates)


def import_round(rows: int, tag: str, customers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "purchases.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["customer_external_id", "purchased_at", "amount", "order_ref"])
            for i in range(rows):
                writer.writerow([f"HBC-{tag}-{i % customers}", f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}", "9.99",
                                 f"{tag}-{i}"])
        started, cpu = time.perf_counter(), cpu_seconds()
        call_command("import_purchases", str(path), verbosity=0, stdout=io.StringIO())
        return rows / (time.perf_counter() - started), rows / (cpu_seconds() - cpu)


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
                create, create_cpu, update, update_cpu = bulk_round(client, tag, args.batches)
                imported, imported_cpu = import_round(args.rows, tag, args.batches * BATCH) if args.rows else (0, 0)
                row = (create, create_cpu, update, update_cpu, imported, imported_cpu)
                results[enabled].append(row)
                print(f"round {r} history {'on ' if enabled else 'off'}: " + report(row), flush=True)
    history_triggers(True)
    print(f"median of {args.rounds} rounds (load average {os.getloadavg()[0]:.1f}):")
    medians = {}
    for enabled in (True, False):
        medians[enabled] = [statistics.median(values) for values in zip(*results[enabled], strict=True)]
        print(f"  history {'on ' if enabled else 'off'}: " + report(medians[enabled]))
    ratios = [on / off if off else 0 for on, off in zip(medians[True], medians[False], strict=True)]
    print("  on / off: " + ", ".join(f"{r:.2f}" for r in ratios))


def report(row) -> str:
    create, create_cpu, update, update_cpu, imported, imported_cpu = row
    return (f"bulk create {create:,.0f}/s ({create_cpu:,.0f} per CPU s), bulk update {update:,.0f}/s "
            f"({update_cpu:,.0f} per CPU s), CSV import {imported:,.0f} rows/s ({imported_cpu:,.0f} per CPU s)")


if __name__ == "__main__":
    main()
