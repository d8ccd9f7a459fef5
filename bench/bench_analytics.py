"""Benchmark: each analytics question on ~1,000,000 purchase lines in PostgreSQL, with EXPLAIN ANALYZE summaries.

Usage: DATABASE_URL=postgres://... python bench/bench_analytics.py [--lines 1000000] [--plans]
Reuses the bench customers/products of bench_opportunities.py (loads them if missing), adds purchase
lines, contacts and events generated in SQL, gives the customers 10 bench salespeople as owners,
then times every question as an admin (all customers) and as one salesperson (a tenth).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_opportunities  # noqa: E402  (sets up Django)
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402


def ensure_facts(lines: int) -> None:
    from accounts.models import User

    bench_opportunities.ensure_base(100_000, 200)
    reps = []
    for i in range(10):
        u, _ = User.objects.get_or_create(username=f"bench_rep_{i}", defaults={"role": "salesperson"})
        reps.append(u.pk)
    with connection.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM crm_purchase", [])
        if cur.fetchone()[0] >= lines:
            return
        print(f"loading {lines} purchase lines, contacts, events ...", flush=True)
        t = time.perf_counter()
        cur.execute("SELECT setseed(0.7)", [])
        cur.execute(
            "UPDATE crm_customer SET owner_id = (%s::bigint[])[1 + id %% 10], "
            "lost_on = CASE WHEN lifecycle_stage = 'lost' THEN DATE '2026-01-01' + (id %% 150)::int END "
            "WHERE external_id LIKE 'BENCH-%%'",
            [reps],
        )
        cur.execute(
            """
            WITH arr AS (SELECT array_agg(id ORDER BY id) AS ids, array_agg(list_price ORDER BY id) AS prices,
                                count(*) AS n FROM crm_product WHERE external_id LIKE 'BENCH-P%%'),
            lines AS (SELECT c.id AS cid, 1 + floor(power(random(), 2) * arr.n)::int AS k
                      FROM crm_customer c CROSS JOIN generate_series(1, %s) g CROSS JOIN arr
                      WHERE c.external_id LIKE 'BENCH-%%')
            INSERT INTO crm_purchase (created_at, updated_at, customer_id, product_id, quantity, unit_price, amount,
                                      purchased_at, order_ref)
            SELECT now(), now(), lines.cid, arr.ids[lines.k], 1, arr.prices[lines.k], arr.prices[lines.k],
                   TIMESTAMPTZ '2023-01-01' + random() * interval '1250 days', ''
            FROM lines CROSS JOIN arr
            """,
            [max(1, lines // 100_000)],
        )
        cur.execute(
            """
            INSERT INTO crm_contact (created_at, updated_at, customer_id, channel, direction, occurred_at, subject,
                                     notes, outcome)
            SELECT now(), now(), c.id, 'call', 'outbound', TIMESTAMPTZ '2024-01-01' + random() * interval '900 days',
                   'bench', '', ''
            FROM crm_customer c CROSS JOIN generate_series(1, 3) WHERE c.external_id LIKE 'BENCH-%%'
            """,
            [],
        )
        cur.execute(
            """
            INSERT INTO crm_event (created_at, updated_at, customer_id, kind, occurred_at, impact, description)
            SELECT now(), now(), c.id,
                   (ARRAY['new_opportunity','competitor_change','merger','leadership_change','funding',
                          'relocation','complaint','referral','expansion','other'])[1 + floor(random() * 10)::int],
                   TIMESTAMPTZ '2023-01-01' + random() * interval '1250 days', 'neutral', ''
            FROM crm_customer c CROSS JOIN generate_series(1, 3) WHERE c.external_id LIKE 'BENCH-%%'
            """,
            [],
        )
        cur.execute("ANALYZE", [])
        print(f"loaded in {time.perf_counter() - t:.1f} s", flush=True)


def questions(user, sku):
    from crm import analytics as a

    return {
        "1 product buyers": lambda: a.product_buyers(user, product=sku),
        "2 contact frequency": lambda: a.contact_frequency(user, limit=100),
        "2b valuable not contacted": lambda: a.valuable_not_contacted(user, days=90, as_of=date(2026, 6, 30)),
        "3 most profitable (margin)": lambda: a.most_profitable(user, by="margin"),
        "4 events before loss": lambda: a.events_before_loss(user, window_days=90, as_of=date(2026, 6, 30)),
        "5 customer x product": lambda: a.customer_products(user, limit=500),
        "5 product -> customers": lambda: a.customer_products(user, product=sku, limit=500),
        "6 events before purchase": lambda: a.events_before_purchase(user, window_days=60),
        "7 loyalty patterns": lambda: a.loyalty_patterns(user, as_of=date(2026, 6, 30)),
    }


def plan_summary(sql: str, params) -> str:
    with connection.cursor() as cur:
        cur.execute("EXPLAIN (ANALYZE, FORMAT TEXT) " + sql, params)
        lines = [r[0] for r in cur.fetchall()]
    scans = sorted({" ".join(m) .strip() for ln in lines for m in re.findall(r"((?:Parallel )?(?:Seq|Index|Index Only|Bitmap Heap|Bitmap Index) Scan)(?: using (\S+))? on (\S+)", ln)})
    exec_line = next((ln for ln in lines if ln.startswith("Execution Time")), "")
    return f"{exec_line}; scans: {', '.join(scans)}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--plans", action="store_true", help="Print EXPLAIN ANALYZE summaries of every query.")
    args = ap.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("Run against PostgreSQL (DATABASE_URL=postgres://...).")
    from accounts.models import User

    ensure_facts(args.lines)
    with connection.cursor() as cur:
        cur.execute("SELECT (SELECT COUNT(*) FROM crm_purchase), (SELECT COUNT(*) FROM crm_contact), "
                    "(SELECT COUNT(*) FROM crm_event), (SELECT COUNT(*) FROM crm_customer)", [])
        print("purchases, contacts, events, customers:", cur.fetchone())
    admin = User(username="bench-admin", role="admin", is_active=True, is_superuser=True)
    rep = User.objects.get(username="bench_rep_0")
    sku = "BENCH-0003"
    for who, user in (("admin", admin), ("salesperson", rep)):
        print(f"\n== as {who}")
        for name, fn in questions(user, sku).items():
            fn()  # warm
            with CaptureQueriesContext(connection) as ctx:
                t = time.perf_counter()
                fn()
                dt = time.perf_counter() - t
            print(f"{name:30s} {dt * 1000:8.0f} ms  ({len(ctx.captured_queries)} queries)")
            if args.plans:
                for q in ctx.captured_queries:
                    if q["sql"].lstrip().upper().startswith(("SELECT", "WITH")):
                        print("    ", plan_summary(q["sql"], None))


if __name__ == "__main__":
    main()
