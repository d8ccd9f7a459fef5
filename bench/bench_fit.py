"""Benchmark the CLV engine on 1,000,000 simulated customers: summary, BG/NBD fit, Gamma-Gamma fit, scoring, peak memory."""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clv.engine import bgnbd, gammagamma, pipeline  # noqa: E402
from clv.engine.simulate import simulate_summaries, simulate_transactions  # noqa: E402
from clv.engine.summary import summarise_transactions  # noqa: E402

# CDNOW BG/NBD estimates with alpha converted from weeks to days, CDNOW Gamma-Gamma.
TRUE_PURCHASE = {"r": 0.243, "alpha": 4.414 * 7, "a": 0.793, "b": 2.426}
TRUE_SPEND = {"p": 6.25, "q": 3.74, "v": 15.44}
BGNBD_TARGET_SECONDS = 3.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--no-tracemalloc", action="store_true", help="time without tracemalloc's overhead")
    args = parser.parse_args()

    if not args.no_tracemalloc:
        tracemalloc.start()
    rng = np.random.default_rng(args.seed)
    timings: list[tuple[str, float, str]] = []

    t0 = time.perf_counter()
    tx = simulate_transactions(
        args.customers,
        tuple(TRUE_PURCHASE.values()),
        tuple(TRUE_SPEND.values()),
        start="2023-01-01",
        end="2024-12-31",
        rng=rng,
    )
    timings.append(("simulate transactions", time.perf_counter() - t0, f"{tx.customer_ids.size:,} rows"))

    t0 = time.perf_counter()
    s = summarise_transactions(tx.customer_ids, tx.dates, tx.amounts, "2024-12-31", costs=0.6 * tx.amounts)
    timings.append(("summary from arrays", time.perf_counter() - t0, f"{len(s):,} customers"))
    del tx

    t0 = time.perf_counter()
    bg = bgnbd.fit(s.frequency, s.recency, s.T)
    bg_seconds = time.perf_counter() - t0
    d = bg.diagnostics
    timings.append(
        ("fit BG/NBD", bg_seconds, f"{d.n_unique:,} unique triples, {d.iterations} iterations, converged={d.converged}")
    )

    t0 = time.perf_counter()
    gg = gammagamma.fit(s.frequency, s.monetary)
    timings.append(("fit Gamma-Gamma", time.perf_counter() - t0, f"{gg.diagnostics.n_customers:,} repeat buyers"))

    t0 = time.perf_counter()
    params, _ = pipeline.fit(s.frequency, s.recency, s.T, s.monetary)
    timings.append(("pipeline.fit (both + lifespan)", time.perf_counter() - t0, ""))

    t0 = time.perf_counter()
    scores = pipeline.score(
        params, s.frequency, s.recency, s.T, s.monetary, total_value=s.total_value, historical_margin=s.total_margin
    )
    timings.append(("score (12 monthly steps)", time.perf_counter() - t0, f"mean CLV {scores['clv'].mean():.2f}"))

    # Same parameters, exact continuous-time summaries (no same-day merging): isolates
    # estimator error from the day-occasion discretisation of the transaction path.
    exact = simulate_summaries(args.customers, *TRUE_PURCHASE.values(), s.T, rng=rng)
    t0 = time.perf_counter()
    bg_exact = bgnbd.fit(exact.frequency, exact.recency, exact.T)
    timings.append(
        ("fit BG/NBD, exact summaries", time.perf_counter() - t0, f"{bg_exact.diagnostics.n_unique:,} unique triples")
    )

    peak_traced = tracemalloc.get_traced_memory()[1] if tracemalloc.is_tracing() else float("nan")
    peak_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    print(f"customers: {args.customers:,}")
    print(f"{'step':<34}{'seconds':>9}  notes")
    for name, secs, note in timings:
        print(f"{name:<34}{secs:>9.3f}  {note}")
    print()
    print("recovery; 'day' = fitted on the summary of day-level transactions, 'exact' = on exact summaries")
    print(f"{'param':<8}{'true':>10}{'day':>12}{'rel.err':>9}{'SE':>10}{'exact':>12}{'rel.err':>9}")
    for k, v in TRUE_PURCHASE.items():
        est = bg.params.to_dict()[k]
        ex = bg_exact.params.to_dict()[k]
        print(
            f"{k:<8}{v:>10.4f}{est:>12.4f}{(est - v) / v:>9.2%}{d.standard_errors[k]:>10.4f}{ex:>12.4f}{(ex - v) / v:>9.2%}"
        )
    for k, v in TRUE_SPEND.items():
        est = gg.params.to_dict()[k]
        print(f"{k:<8}{v:>10.4f}{est:>12.4f}{(est - v) / v:>9.2%}{gg.diagnostics.standard_errors[k]:>10.4f}")
    print()
    print(f"peak traced Python memory: {peak_traced / 2**20:,.0f} MiB (tracemalloc)")
    print(f"peak RSS: {peak_rss_kib / 1024:,.0f} MiB")
    verdict = "OK" if bg_seconds <= BGNBD_TARGET_SECONDS else "OVER TARGET"
    print(f"BG/NBD fit {bg_seconds:.2f} s vs target {BGNBD_TARGET_SECONDS:.1f} s: {verdict}")


if __name__ == "__main__":
    main()
