"""Benchmark: the shared CSV import (crm.importing) of N customers with mapped columns, then N
people of those customers; rows per second for a first import (all created) and a replay (all
unchanged), and the peak memory of the import's own process.

Usage: DATABASE_URL=postgres://... python bench/bench_import_kinds.py [--rows N] [--repeat R]
Each import runs in a subprocess (its peak resident memory, VmHWM, measured on its own) through
the import commands, as an admin; the benchmark's records are deleted at the end.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUP = """
import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
"""
CHILD = SETUP + """
import sys
from pathlib import Path
from django.core.management import call_command
kind, path, user, *maps = sys.argv[1:]
call_command(f"import_{kind}", path, "--user", user, *[a for m in maps for a in ("--map", m)], verbosity=0)
print(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:")))
"""
ADMIN = SETUP + """
from accounts.models import User
User.objects.filter(username="bench-importer").exists() or User.objects.create_user(
    "bench-importer", password=None, role="admin")
"""
CLEAN = SETUP + """
from crm.models import Customer
Customer.objects.filter(external_id__startswith="BENCH-IMP-").delete()
"""


def python(code: str, *args: str) -> str:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=os.environ, check=True,
                          capture_output=True, text=True).stdout.strip()


def timed(kind: str, path: Path, maps: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    peak = python(CHILD, kind, str(path), "bench-importer", *maps)
    return time.perf_counter() - start, int(peak.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    python(ADMIN)
    with tempfile.TemporaryDirectory() as tmp:
        customers = Path(tmp) / "customers.csv"
        people = Path(tmp) / "people.csv"
        with customers.open("w") as handle:
            handle.write("Number,Company,City,Mail\n")
            for i in range(args.rows):
                handle.write(f"BENCH-IMP-{i},Bench customer {i},City {i % 97},c{i}@bench.example\n")
        with people.open("w") as handle:
            handle.write("external_id,customer_external_id,first_name,last_name,email\n")
            for i in range(args.rows):
                handle.write(f"BENCH-IMP-P{i},BENCH-IMP-{i},Ann,Person {i},p{i}@bench.example\n")
        maps = ["Number=external_id", "Company=name", "City=city", "Mail=email"]
        for label, kind, path, kind_maps in (("customers", "customers", customers, maps),
                                             ("people", "people", people, [])):
            created, replayed, peaks = [], [], []
            for _ in range(args.repeat):
                python(CLEAN)
                if kind == "people":
                    timed("customers", customers, maps)
                seconds, peak = timed(kind, path, kind_maps)
                created.append(seconds)
                peaks.append(peak)
                seconds, peak = timed(kind, path, kind_maps)
                replayed.append(seconds)
                peaks.append(peak)
            print(f"{label}: {args.rows:,} rows; created median {statistics.median(created):.1f} s "
                  f"({args.rows / statistics.median(created):,.0f} rows/s); unchanged replay median "
                  f"{statistics.median(replayed):.1f} s ({args.rows / statistics.median(replayed):,.0f} rows/s); "
                  f"peak RSS {max(peaks) / 1024:.0f} MB (times include process start)")
    python(CLEAN)


if __name__ == "__main__":
    main()
