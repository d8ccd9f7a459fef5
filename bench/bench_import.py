"""Benchmark: import a generated CSV of N purchase lines (default 1,000,000); wall time and peak memory.

Usage: DATABASE_URL=postgres://... python bench/bench_import.py [--rows N] [--customers M]
Runs the import in a subprocess so its peak resident memory is measured on its own.
"""

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


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
        subprocess.run([sys.executable, "manage.py", "import_purchases", str(path), "-v0"], cwd=ROOT, check=True,
                       env=dict(os.environ))
        elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"rows={args.rows:,} file={size_mb:.0f} MB wall={elapsed:.1f} s rate={args.rows / elapsed:,.0f} rows/s "
          f"peak_rss={peak_mb:.0f} MB (target < 500 MB)")


if __name__ == "__main__":
    main()
