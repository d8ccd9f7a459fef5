"""Benchmark: the nightly CLV run on N customers in PostgreSQL, against the bare aggregate beside it.

Usage:
    DATABASE_URL=postgres://.../crm_clvbench python bench/bench_clv_run.py [--customers 1000000]
        [--lines 10] [--repeat 2] [--summary-out summary.npz] [--json results.json]

1. Seeds the database (once; reused while --customers, --lines and --seed are the same):
   customers, and purchase lines simulated from a BG/NBD purchase process and Gamma-Gamma
   spend over three years (one purchase occasion = one day, split into several lines, about
   --lines lines per customer), loaded with binary COPY; then `VACUUM ANALYZE` and
   `rebuild_clv_summary`, the one-off step that fills the kept per-customer summary (timed).
   The database must be empty or seeded by this script before: it refuses any other.
2. Per repetition, each in its own process so its peak memory is its own:
   - the bare aggregate: clv.services.summarise, the one SQL aggregate over every purchase
     line that builds the per-customer summary, read into arrays (the floor);
   - a full run: clv.services.run_clv, with its phases as the run stores them.
3. Prints both, the ratio, and the fitted parameters against the simulated ones.

--summary-out writes the run's summary arrays (frequency, recency, T, monetary) to an .npz
that bench/compare_pymc.py --summary fits with pymc-marketing: the same data, both libraries.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

AS_OF = date(2026, 11, 1)
START = "2023-11-01"
# The purchase process and spend the lines are simulated from (alpha in days).
TRUE_PURCHASE = {"r": 0.5, "alpha": 42.0, "a": 0.8, "b": 4.0}
TRUE_SPEND = {"p": 6.15, "q": 3.73, "v": 157.7}
PHASES = ["summary_check", "summary", "fit_score", "holdout", "write", "aggregate", "switch"]
REPS = 40
PRODUCTS = 40


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db import connection

    if connection.vendor != "postgresql":
        sys.exit("bench_clv_run needs PostgreSQL: set DATABASE_URL")


def _peak_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it does not carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------
# Seeding


def _seeded(cursor) -> dict | None:
    cursor.execute("SELECT to_regclass('bench_clv_meta') IS NOT NULL")
    if not cursor.fetchone()[0]:
        return None
    cursor.execute("SELECT meta FROM bench_clv_meta")
    row = cursor.fetchone()
    return json.loads(row[0]) if row else None


def seed(customers: int, lines: float, seed_value: int) -> dict:
    from django.core.management import call_command
    from django.db import connection

    from clv.engine.simulate import simulate_transactions
    from clv.summary import summary_rebuild
    from crm.bulk import copy_arrays_to_table

    call_command("migrate", verbosity=0)
    wanted = {"customers": customers, "lines_per_customer": lines, "seed": seed_value}
    with connection.cursor() as cursor:
        meta = _seeded(cursor)
        if meta and {k: meta.get(k) for k in wanted} == wanted:
            print(f"reusing the seeded database: {meta['customers']:,} customers, {meta['lines']:,} lines")
            return meta
        cursor.execute("SELECT (SELECT COUNT(*) FROM crm_customer), (SELECT COUNT(*) FROM crm_purchase)")
        existing = cursor.fetchone()
        if meta is None and any(existing):
            sys.exit("this database holds customers or purchases not seeded by bench_clv_run: use an empty one")

    print(f"seeding {customers:,} customers ...", flush=True)
    started = time.perf_counter()
    rng = np.random.default_rng(seed_value)
    sim = simulate_transactions(
        customers, tuple(TRUE_PURCHASE.values()), tuple(TRUE_SPEND.values()),
        start=START, end=str(AS_OF), rng=rng,
    )
    # One occasion per customer and day (same-day simulated purchases merge), split into lines.
    day = (sim.dates - np.datetime64("1970-01-01", "D")).astype(np.int64)
    key = sim.customer_ids * 100_000 + day
    occasion_key, first_row, inverse = np.unique(key, return_index=True, return_inverse=True)
    occasion_value = np.bincount(inverse, weights=sim.amounts)
    occasion_customer = sim.customer_ids[first_row]
    occasion_day = day[first_row]
    del sim, key, inverse
    per_occasion = customers * lines / occasion_key.size
    line_count = 1 + rng.poisson(max(per_occasion - 1.0, 0.0), size=occasion_key.size)
    line_customer = np.repeat(occasion_customer, line_count)
    line_day = np.repeat(occasion_day, line_count)
    # Split each occasion's value over its lines in cents, the last line taking the rest.
    cents = np.rint(occasion_value * 100).astype(np.int64)
    share = np.repeat(cents // line_count, line_count)
    last = np.cumsum(line_count) - 1
    share[last] += cents - (cents // line_count) * line_count
    line_amount = share / 100.0
    # A product on 90% of the lines (cost from the product), none on the rest (default margin).
    line_product = rng.integers(0, PRODUCTS + PRODUCTS // 9, size=line_count.sum())
    simulate_seconds = time.perf_counter() - started

    from accounts.models import User
    from crm.models import Product

    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_clv_meta")
        cursor.execute(
            "TRUNCATE crm_purchase, crm_customer, crm_product, clv_purchaseday, clv_purchasesummary, "
            "clv_customervalue, clv_portfoliosnapshot, clv_clvrun CASCADE"
        )
    User.objects.filter(username__startswith="bench_rep_").delete()
    reps = User.objects.bulk_create(
        User(username=f"bench_rep_{i:02d}", role=User.Role.SALESPERSON) for i in range(REPS)
    )
    products = Product.objects.bulk_create(
        Product(sku=f"BENCH-{i:03d}", name=f"Bench product {i}", family=f"family-{i // 4}", tier=1 + i % 4,
                list_price=100 + 10 * i, unit_cost=60 + 6 * i)
        for i in range(PRODUCTS)
    )
    rep_ids = "{" + ",".join(str(u.pk) for u in reps) + "}"
    product_ids = np.array([p.pk for p in products] + [0] * (PRODUCTS // 9), dtype=np.int64)
    with connection.cursor() as cursor:
        # Bulk load without the change-feed trigger and deferred foreign-key checks (a benchmark
        # database; the ids are known to exist). Nothing here is a path the product writes through.
        cursor.execute("SET session_replication_role = replica")
        cursor.execute(
            """
            INSERT INTO crm_customer (external_id, created_at, updated_at, name, kind, relationship_type,
                lifecycle_stage, acquired_on, industry, city, country, email, phone, website, notes, owner_id,
                change_txid, change_seq)
            SELECT 'BENCH-' || g, now(), now(), 'Bench customer ' || g, 'company', 'repeat', 'retained',
                   NULL, '', '', '', '', '', '', '', (%s::bigint[])[1 + g %% %s], 0, 0
            FROM generate_series(0, %s - 1) g ORDER BY g
            """,
            [rep_ids, REPS, customers],
        )
        cursor.execute("SELECT MIN(id), MAX(id) FROM crm_customer")
        first_id, last_id = cursor.fetchone()
        assert last_id - first_id + 1 == customers
        cursor.execute("DROP TABLE IF EXISTS bench_clv_lines")
        cursor.execute("CREATE UNLOGGED TABLE bench_clv_lines (customer bigint, day bigint, amount numeric(14,2), "
                       "product bigint)")
        copy_arrays_to_table("bench_clv_lines", {
            "customer": ("int8", line_customer + first_id),
            "day": ("int8", line_day),
            "amount": ("money", line_amount),
            "product": ("int8", product_ids[line_product]),
        })
        n_lines = int(line_customer.size)
        del line_customer, line_day, line_amount, line_product
        cursor.execute(
            """
            INSERT INTO crm_purchase (external_id, created_at, updated_at, quantity, unit_price, amount, unit_cost,
                purchased_at, order_ref, customer_id, product_id, change_txid, change_seq)
            SELECT NULL, now(), now(), 1, amount, amount, NULL,
                   ((DATE '1970-01-01' + day::int) + TIME '12:00') AT TIME ZONE %s, '', customer,
                   NULLIF(product, 0), 0, 0
            FROM bench_clv_lines
            """,
            [_time_zone()],
        )
        cursor.execute("DROP TABLE bench_clv_lines")
        cursor.execute(
            "UPDATE crm_customer c SET acquired_on = f.first FROM (SELECT customer_id, "
            "MIN(purchased_at)::date AS first FROM crm_purchase GROUP BY customer_id) f WHERE f.customer_id = c.id"
        )
        cursor.execute("SET session_replication_role = DEFAULT")
    load_seconds = time.perf_counter() - started - simulate_seconds
    connection.close()  # VACUUM cannot run inside the transaction block Django may hold
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE crm_customer")
        cursor.execute("VACUUM ANALYZE crm_purchase")
    vacuum_seconds = time.perf_counter() - started - simulate_seconds - load_seconds
    rebuild = summary_rebuild()
    meta = dict(wanted, lines=n_lines, occasions=int(occasion_key.size), simulate_seconds=round(simulate_seconds, 1),
                load_seconds=round(load_seconds, 1), vacuum_seconds=round(vacuum_seconds, 1),
                rebuild_summary=rebuild)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE bench_clv_meta (meta text)")
        cursor.execute("INSERT INTO bench_clv_meta VALUES (%s)", [json.dumps(meta)])
    print(f"seeded {customers:,} customers, {n_lines:,} lines ({occasion_key.size:,} occasions): simulate "
          f"{simulate_seconds:.1f} s, load {load_seconds:.1f} s, vacuum {vacuum_seconds:.1f} s, "
          f"rebuild_clv_summary {rebuild['seconds']:.1f} s; peak RSS {_peak_mb():,.0f} MB", flush=True)
    return meta


def _time_zone() -> str:
    from django.conf import settings

    return settings.TIME_ZONE


# ---------------------------------------------------------------------------------------------
# The measured steps, each run in a child process (--child ...)


def child_aggregate() -> dict:
    from django.conf import settings

    from clv.services import summarise

    started = time.perf_counter()
    summary = summarise(as_of=AS_OF, default_margin=settings.CLV_DEFAULT_MARGIN)
    return {"seconds": round(time.perf_counter() - started, 3), "customers": int(summary.customer_ids.size),
            "peak_rss_mb": round(_peak_mb())}


def child_run(summary_out: str | None) -> dict:
    from clv.services import run_clv

    started = time.perf_counter()
    run = run_clv(as_of=AS_OF, shards=1)
    wall = time.perf_counter() - started
    if run.status != "succeeded":
        raise SystemExit(f"the run failed: {run.error}")
    result = {
        "run": run.pk, "wall_seconds": round(wall, 3), "timings": run.timings,
        "phase_detail": run.diagnostics.get("phase_detail", {}), "params": run.params,
        "fit": run.diagnostics.get("purchase"),
        "summary_source": run.diagnostics.get("summary_source"), "counts": run.counts,
        "holdout": {k: run.diagnostics.get("holdout", {}).get(k)
                    for k in ("model", "total_predicted", "total_actual", "mae", "naive_mae", "mae_ratio_to_naive",
                              "interval_coverage")},
        "peak_rss_mb": round(_peak_mb()),
    }
    result["fit_threads"] = _fit_threads()
    if summary_out:
        from django.conf import settings

        from clv.summary import read_summary

        s = read_summary(source="kept", as_of=AS_OF, default_margin=settings.CLV_DEFAULT_MARGIN)
        np.savez(summary_out, frequency=s.frequency, recency=s.recency, T=s.T, monetary=s.monetary)
    return result


def _fit_threads() -> dict:
    """The chosen model's fit on the run's summary, with BLAS pinned to one thread and with the library default."""
    from django.conf import settings
    from threadpoolctl import threadpool_limits

    from clv import engine
    from clv.models import ClvRun
    from clv.summary import read_summary

    run = ClvRun.objects.filter(status="succeeded").order_by("-pk").first()
    s = read_summary(source="kept", as_of=AS_OF, default_margin=settings.CLV_DEFAULT_MARGIN)
    model = run.params["purchase_model"]
    k = run.params["purchase"].get("k")
    out = {"model": model}
    for label, limit in (("pinned_1_thread", 1), ("default_threads", None)):
        started = time.perf_counter()
        with threadpool_limits(limits=limit):
            engine.fit(s.frequency, s.recency, s.T, s.monetary, model=model, k=k)
        out[f"{label}_seconds"] = round(time.perf_counter() - started, 3)
    return out


def _child(kind: str, summary_out: str | None = None) -> dict:
    args = [sys.executable, __file__, "--child", kind] + (["--summary-out", summary_out] if summary_out else [])
    done = subprocess.run(args, cwd=ROOT, env=dict(os.environ), check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--lines", type=float, default=10.0, help="purchase lines per customer, on average")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--summary-out", help="write the run's summary arrays to this .npz")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--child", choices=["aggregate", "run"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    _django()
    if args.child:
        result = child_aggregate() if args.child == "aggregate" else child_run(args.summary_out)
        print(json.dumps(result, default=str))
        return

    meta = seed(args.customers, args.lines, args.seed)
    rounds = []
    for i in range(args.repeat):
        aggregate = _child("aggregate")
        run = _child("run", args.summary_out if i == args.repeat - 1 else None)
        run_seconds = sum(v for k, v in run["timings"].items() if k.endswith("_seconds"))
        rounds.append({"aggregate": aggregate, "run": run, "run_seconds": round(run_seconds, 3),
                       "ratio": round(run_seconds / aggregate["seconds"], 2)})
        print(f"round {i + 1}: bare aggregate {aggregate['seconds']:.2f} s (peak {aggregate['peak_rss_mb']} MB); "
              f"run {run_seconds:.2f} s in its phases, {run['wall_seconds']:.2f} s wall "
              f"(peak {run['peak_rss_mb']} MB); ratio {run_seconds / aggregate['seconds']:.2f}", flush=True)
    _report(meta, rounds)
    if args.json:
        Path(args.json).write_text(json.dumps({"seed": meta, "rounds": rounds}, indent=2, default=str))


def _report(meta: dict, rounds: list[dict]) -> None:
    last = rounds[-1]
    run = last["run"]
    print(f"\n{meta['customers']:,} customers, {meta['lines']:,} purchase lines, {meta['occasions']:,} occasions; "
          f"rebuild_clv_summary {meta['rebuild_summary']['seconds']:.1f} s (one-off)\n")
    print("| phase | seconds |\n|---|---|")
    detail = run["phase_detail"]
    timings = run["timings"]
    for name in [p for p in PHASES if f"{p}_seconds" in timings] + sorted(
            k.removesuffix("_seconds") for k in timings if k.removesuffix("_seconds") not in PHASES):
        value = timings[f"{name}_seconds"]
        extra = ""
        if name == "fit_score":
            extra = f" (fit {detail.get('fit_seconds', 0):.2f}, score {detail.get('score_seconds', 0):.2f})"
        print(f"| {name}{extra} | {value:.2f} |")
    print(f"| **run, sum of phases** | **{last['run_seconds']:.2f}** ({run['wall_seconds']:.2f} wall) |")
    print(f"| bare aggregate over every purchase line | {last['aggregate']['seconds']:.2f} |")
    print(f"| ratio run / aggregate | {last['ratio']:.2f} |")
    print(f"| peak RSS of the run | {run['peak_rss_mb']:,} MB |")
    params = run["params"]
    truth = {**TRUE_PURCHASE, **TRUE_SPEND}
    fitted = {**params.get("purchase", {}), **params.get("spend", {})}
    print("\nparameters, fitted (simulated): " + ", ".join(
        f"{k} {fitted.get(k, float('nan')):.4g} ({v})" for k, v in truth.items()))
    print(f"holdout: {run['holdout']}")
    print(f"fit with BLAS threads pinned vs default: {run.get('fit_threads')}")


if __name__ == "__main__":
    main()
