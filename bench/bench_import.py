"""Benchmark: import a generated CSV of N purchase lines (default 1,000,000); wall time and peak memory.

Usage: DATABASE_URL=postgres://... python bench/bench_import.py [--rows N] [--customers M]
Runs the import in a subprocess so its peak resident memory (VmHWM) is measured on its own.
"""

import argparse
import csv
import os
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "purchases.csv"
        customers = rng.integers(0, args.customers, size=args.rows)
        days = rng.integers(0, 1000, size=args.rows)
        amounts = np.round(rng.gamma(2.0, 50.0, size=args.rows), 2)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["customer_external_id", "purchased_at", "amount", "quantity", "order_ref"])
            base = np.datetime64("2023-01-01")
            for c, d, a in zip(customers, days, amounts, strict=True):
                writer.writerow([f"BENCH-{c:07d}", str(base + int(d)), f"{a:.2f}", 1, ""])
        size_mb = path.stat().st_size / 2**20
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=ROOT, check=True, env=dict(os.environ),
                              capture_output=True, text=True)
        elapsed = time.perf_counter() - started
    peak_mb = int(done.stdout.strip().splitlines()[-1]) / 1024
    print(f"rows={args.rows:,} file={size_mb:.0f} MB wall={elapsed:.1f} s rate={args.rows / elapsed:,.0f} rows/s "
          f"peak_rss={peak_mb:.0f} MB (target < 500 MB)")


if __name__ == "__main__":
    main()
