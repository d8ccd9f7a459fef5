"""Benchmark: import a generated CSV of N purchase lines (default 1,000,000); wall time, CPU time and peak memory.

Usage:
    python bench/bench_import.py --on sqlite [--rows N] [--customers M] [--repeat R] [--keys] [--again]
    DATABASE_URL=postgres://... python bench/bench_import.py --on postgres [--rows N] [--customers M] [--repeat R]

--on sqlite migrates a fresh SQLite database in a temporary folder once (the embedded default's
engine) and imports into a fresh copy of it each round; --on postgres imports into the database
of DATABASE_URL with the change history's triggers on (as deployed), each round with its own
new customers (BENCH-<round>-...). Each import runs `manage.py import_purchases` in its own
process, so its peak resident memory (VmHWM) and CPU time are its own; the wall time includes
that process's start (about 1.5 s). Prints each round and the median.

--keys gives every line an external_id (a new key each, so the stored keys of each batch are
looked up and none is found); --again imports each round's file a second time into the same
database and times that import instead (every line found by its key and unchanged; with --keys).
"""

import argparse
import csv
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# The import in its own process; prints its peak resident memory in kB (VmHWM: ru_maxrss would
# carry over the parent's peak, CSV generation included, across exec).
CHILD = """
import os, sys
from pathlib import Path
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
from django.core.management import call_command
call_command("import_purchases", sys.argv[1], verbosity=0)
print(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:")))
"""


def write_csv(path: Path, rows: int, customers: int, prefix: str, keys: bool = False) -> None:
    rng = np.random.default_rng(1)
    ids = rng.integers(0, customers, size=rows)
    days = rng.integers(0, 1000, size=rows)
    amounts = np.round(rng.gamma(2.0, 50.0, size=rows), 2)
    base = np.datetime64("2023-01-01")
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        header = ["customer_external_id", "purchased_at", "amount", "quantity", "order_ref"]
        writer.writerow(["external_id", *header] if keys else header)
        for n, (c, d, a) in enumerate(zip(ids, days, amounts, strict=True)):
            row = [f"{prefix}{c:07d}", str(base + int(d)), f"{a:.2f}", 1, ""]
            writer.writerow([f"{prefix}L{n:08d}", *row] if keys else row)


def run_import(path: Path, env: dict) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak MB) of one import process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=ROOT, check=True, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, int(done.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--on", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--keys", action="store_true", help="an external_id column, a new key per line")
    parser.add_argument("--again", action="store_true", help="time a second import of the same file")
    args = parser.parse_args()
    if args.again and not args.keys:
        parser.error("--again needs --keys (without keys a second import adds the lines again)")
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        template = tmp / "template.sqlite3"
        if args.on == "sqlite":
            env["DATABASE_URL"] = f"sqlite:///{template}"
            subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True, env=env)
        elif not env.get("DATABASE_URL", "").startswith("postgres"):
            parser.error("--on postgres needs DATABASE_URL=postgres://...")
        results = []
        for r in range(args.repeat):
            path = tmp / f"purchases-{r}.csv"
            write_csv(path, args.rows, args.customers, f"BENCH-{int(time.time())}-{r}-", keys=args.keys)
            if args.on == "sqlite":
                database = tmp / f"round-{r}.sqlite3"
                shutil.copy(template, database)
                env["DATABASE_URL"] = f"sqlite:///{database}"
            size_mb = path.stat().st_size / 2**20
            if args.again:
                run_import(path, env)
            wall, cpu, peak = run_import(path, env)
            path.unlink()
            if args.on == "sqlite":
                database.unlink()
            results.append((wall, cpu, peak))
            print(f"{args.on} round {r}: rows={args.rows:,} file={size_mb:.0f} MB wall={wall:.1f} s "
                  f"rate={args.rows / wall:,.0f} rows/s cpu={cpu:.1f} s ({args.rows / cpu:,.0f} rows per CPU s) "
                  f"peak_rss={peak:.0f} MB", flush=True)
    wall = statistics.median(w for w, _, _ in results)
    cpu = statistics.median(c for _, c, _ in results)
    peak = max(p for _, _, p in results)
    what = ("keys, imported again" if args.again else "keys") if args.keys else "no keys"
    print(f"{args.on} ({what}) median of {len(results)}: wall={wall:.1f} s rate={args.rows / wall:,.0f} rows/s "
          f"cpu={cpu:.1f} s ({args.rows / cpu:,.0f} rows per CPU s) peak_rss={peak:.0f} MB (target < 500 MB); "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
