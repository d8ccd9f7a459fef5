"""Benchmark: opportunity regeneration for 100,000 customers, 2,000 products and 2,000,000 purchase lines on PostgreSQL.

Usage: DATABASE_URL=postgres://... python bench/bench_opportunities.py [--customers N] [--products P] [--purchases L]
       [--fresh]
Loads synthetic customers/products/holdings/usage/purchase lines once (rows tagged external_id
'BENCH-...', generated in set-based SQL with generate_series) and times a first regeneration (all
inserts when the table is empty: --fresh empties it, with the opportunities' history, first), a
second (the same data again: every suggestion confirmed as it is) and a third after every bench
product's unit cost went up by 1 (every margin, so every suggestion's value and score, changes:
all are rewritten; the cost is put back afterwards).
Migrate the database first.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402


def ensure_base(customers: int, products: int) -> None:
    """Bench customers, products (10 families x 20 tiers... 4 tiers per family) and active holdings with usage."""
    with connection.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM crm_customer WHERE external_id LIKE 'BENCH-%%'", [])
        if cur.fetchone()[0] >= customers:
            return
        print(f"loading {customers} customers, {products} products ...", flush=True)
        t = time.perf_counter()
        cur.execute("SELECT setseed(0.42)")
        cur.execute(
            """
            INSERT INTO crm_product (external_id, created_at, updated_at, sku, name, family, tier, list_price,
                                     unit_cost, capacity_unit, capacity_per_unit, is_active, description,
                                     renewal_period, category)
            SELECT 'BENCH-P' || i, now(), now(), 'BENCH-' || lpad(i::text, 4, '0'), 'Bench product ' || i,
                   'bfam' || (i / 4), 1 + i %% 4, 100 + (i %% 37) * 20, 40 + (i %% 11) * 5,
                   CASE WHEN i %% 4 = 0 THEN 'seats' ELSE '' END, CASE WHEN i %% 4 = 0 THEN 50 END, true, '', '', 'bcat' || (i / 40)
            FROM generate_series(0, %s - 1) i
            """,
            [products],
        )
        cur.execute(
            """
            INSERT INTO crm_customer (external_id, created_at, updated_at, name, kind, relationship_type,
                                      lifecycle_stage, industry, city, country, email, phone, website, notes)
            SELECT 'BENCH-' || lpad(i::text, 7, '0'), now(), now(), 'Bench customer ' || i, 'company',
                   (ARRAY['transactional','repeat','partner','strategic'])[1 + i %% 4],
                   (ARRAY['acquired','developing','retained','advocate','lost'])[1 + i %% 5], '', '', '', '', '', '', ''
            FROM generate_series(1, %s) i
            """,
            [customers],
        )
        # Each customer holds ~4 products drawn with skewed popularity, plus planted pairs (p, p+1).
        cur.execute(
            """
            WITH c AS (SELECT id FROM crm_customer WHERE external_id LIKE 'BENCH-%%'),
            p AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM crm_product WHERE external_id LIKE 'BENCH-P%%'),
            picks AS (
                SELECT DISTINCT c.id AS cid, floor(power(random(), 2) * %s)::int AS k
                FROM c, generate_series(1, 4)
            ),
            pairs AS (
                SELECT cid, k FROM picks UNION SELECT cid, k + 1 FROM picks WHERE k %% 8 = 2 AND random() < 0.7
            )
            INSERT INTO crm_holding (created_at, updated_at, customer_id, product_id, quantity, since, status)
            SELECT now(), now(), pairs.cid, p.id, 1, DATE '2025-01-01', 'active'
            FROM pairs JOIN p ON p.k = pairs.k
            """,
            [products],
        )
        cur.execute(
            """
            INSERT INTO crm_usage (created_at, updated_at, holding_id, period_start, period_end, used, note)
            SELECT now(), now(), h.id, d::date, (d + interval '27 days')::date,
                   CASE WHEN h.id %% 5 = 0 THEN 47 + random() * 3 ELSE random() * 40 END, ''
            FROM crm_holding h JOIN crm_product p ON p.id = h.product_id
            CROSS JOIN generate_series(DATE '2026-04-01', DATE '2026-06-01', interval '1 month') d
            WHERE p.capacity_per_unit IS NOT NULL AND p.external_id LIKE 'BENCH-P%%'
            """,
            [],
        )
        cur.execute("ANALYZE", [])
        print(f"loaded in {time.perf_counter() - t:.1f} s", flush=True)


def ensure_purchases(customers: int, products: int, lines: int) -> None:
    """Purchase lines over the last 700 days: skewed popularity, and buyers of product k (k % 8 == 5) buy k + 1."""
    with connection.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM crm_purchase WHERE order_ref = 'BENCH'", [])
        have = cur.fetchone()[0]
        if have >= lines * 0.95:
            return
        print(f"loading about {lines:,} purchase lines ...", flush=True)
        t = time.perf_counter()
        cur.execute("SELECT setseed(0.17)")
        per_customer = max(1, round(lines / customers / 1.0875))  # the planted pairs add about 8.75%
        cur.execute(
            """
            WITH c AS (SELECT id FROM crm_customer WHERE external_id LIKE 'BENCH-%%'),
            p AS (SELECT id, list_price, row_number() OVER (ORDER BY id) - 1 AS k
                  FROM crm_product WHERE external_id LIKE 'BENCH-P%%'),
            l AS (SELECT c.id AS cid, floor(power(random(), 2) * %s)::int AS k, random() AS r
                  FROM c, generate_series(1, %s)),
            lines AS (SELECT cid, k, r FROM l UNION ALL
                      SELECT cid, k + 1, r / 2 FROM l WHERE k %% 8 = 5 AND random() < 0.7)
            INSERT INTO crm_purchase (created_at, updated_at, customer_id, product_id, quantity, unit_price,
                                      amount, purchased_at, order_ref)
            SELECT now(), now(), lines.cid, p.id, 1, p.list_price, p.list_price,
                   TIMESTAMPTZ '2026-06-30 12:00+00' - lines.r * interval '700 days', 'BENCH'
            FROM lines JOIN p ON p.k = lines.k
            """,
            [products, per_customer],
        )
        cur.execute("ANALYZE crm_purchase", [])
        print(f"loaded purchases in {time.perf_counter() - t:.1f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--products", type=int, default=2_000)
    ap.add_argument("--purchases", type=int, default=2_000_000)
    ap.add_argument("--fresh", action="store_true", help="delete every opportunity (and its history) first")
    args = ap.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("Run against PostgreSQL (DATABASE_URL=postgres://...).")
    from datetime import date

    from crm.opportunities.services import opportunities_regenerate

    ensure_base(args.customers, args.products)
    if args.purchases:
        ensure_purchases(args.customers, args.products, args.purchases)
    with connection.cursor() as cur:
        cur.execute("SELECT (SELECT COUNT(*) FROM crm_customer), (SELECT COUNT(*) FROM crm_product), "
                    "(SELECT COUNT(*) FROM crm_holding), (SELECT COUNT(*) FROM crm_usage), "
                    "(SELECT COUNT(*) FROM crm_purchase)")
        print("customers, products, holdings, usage rows, purchase lines:", cur.fetchone())
    if args.fresh:
        with connection.cursor() as cur:
            cur.execute("TRUNCATE crm_opportunityoutcome, crm_opportunityhistory, crm_opportunity")
            cur.execute("VACUUM ANALYZE crm_opportunity")
    runs = ("first run (inserts on an empty table)", "second run (nothing changed)",
            "third run (every product's cost 1 up: every suggestion's value changes)")
    for label in runs:
        if label == runs[2]:
            with connection.cursor() as cur:  # untimed; undone below
                cur.execute("UPDATE crm_product SET unit_cost = unit_cost + 1 WHERE external_id LIKE 'BENCH-P%%'", [])
        t = time.perf_counter()
        r = opportunities_regenerate(as_of=date(2026, 6, 30))
        total = time.perf_counter() - t
        print(f"{label}: {total:.1f} s  created={r.created} updated={r.updated} unchanged={r.unchanged} "
              f"expired={r.expired} "
              f"cross_sell={r.cross_sell} (from purchases {r.purchase_cross_sell}) up_sell={r.up_sell}")
        print("  timings:", {k: round(v, 2) for k, v in r.timings.items()})
    with connection.cursor() as cur:
        cur.execute("UPDATE crm_product SET unit_cost = unit_cost - 1 WHERE external_id LIKE 'BENCH-P%%'", [])


if __name__ == "__main__":
    main()
