"""Server-side render time of the account list, Account 360 and the dashboard with 100,000 customers.

Needs PostgreSQL (DATABASE_URL). Seeds the database when it holds fewer customers than asked:
with `seed_demo` when that command is installed, otherwise with a fast COPY seeder here
(customers, people, products, purchases, holdings, usage, contacts, events, opportunities,
and two CLV runs with their values and portfolio snapshots when the clv tables exist).
Then renders each page many times through Django's test Client (no network, no browser)
and prints median and p95 per page, with the number of SQL queries.

    DATABASE_URL=postgres://... python bench/bench_pages.py --customers 100000 --repeat 30
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.db.models import Count, Q, Sum  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from accounts.models import Team, User  # noqa: E402
from crm.models import Contact, Customer, Event, Holding, Opportunity, Person, Product, Purchase, Usage  # noqa: E402
from crm.selectors.pages import RISK_P_ALIVE  # noqa: E402
from crm.selectors.values import clv_model  # noqa: E402

TARGET_MS = 300
PASSWORD = "demo-pass-2026"
REPS = {"north": ["rep_north_1", "rep_north_2", "rep_north_3"], "south": ["rep_south_1", "rep_south_2", "rep_south_3"]}
AS_OF = date(2026, 11, 1)
STAGES = ["prospect", "acquired", "developing", "retained", "advocate", "lost"]
RELATIONSHIPS = ["transactional", "repeat", "partner", "strategic"]
CHANNELS = ["call", "email", "meeting", "visit", "chat"]
EVENT_KINDS = ["new_opportunity", "competitor_change", "merger", "leadership_change", "funding", "complaint",
               "referral", "budget_cut", "expansion"]


# -- seeding --------------------------------------------------------------------------------------


def ensure_users() -> dict[str, User]:
    users = {}
    admin, _ = User.objects.get_or_create(username="admin", defaults={"role": "admin", "is_staff": True,
                                                                       "is_superuser": True})
    users["admin"] = admin
    for team_name, reps in REPS.items():
        manager, _ = User.objects.get_or_create(username=f"manager_{team_name}", defaults={"role": "manager"})
        team, _ = Team.objects.get_or_create(name=team_name.title(), defaults={"manager": manager})
        manager.team = team
        manager.save(update_fields=["team"])
        users[manager.username] = manager
        for name in reps:
            rep, _ = User.objects.get_or_create(username=name, defaults={"role": "salesperson", "team": team})
            users[name] = rep
    for u in users.values():
        u.set_password(PASSWORD)
        u.save(update_fields=["password"])
    return users


def _copy(model, columns: list[str], rows) -> None:
    """COPY rows (tuples) into the model's table; None becomes NULL."""
    buf = io.StringIO()
    for row in rows:
        buf.write("\t".join("\\N" if v is None else str(v).replace("\t", " ").replace("\n", " ") for v in row))
        buf.write("\n")
    buf.seek(0)
    table = model._meta.db_table
    cols = ", ".join(model._meta.get_field(c).column for c in columns)
    with connection.cursor() as cur:
        cur.cursor.copy_expert(f"COPY {table} ({cols}) FROM STDIN", buf)


def copy_seed(n: int, users: dict[str, User], seed: int = 7) -> None:
    rng = random.Random(seed)
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    reps = [users[name] for names in REPS.values() for name in names]
    stamp = now.isoformat()
    print(f"seeding {n:,} customers with COPY ...", flush=True)
    t0 = time.perf_counter()
    with transaction.atomic():
        base = Customer.objects.count()
        _copy(Customer, ["name", "kind", "owner", "relationship_type", "lifecycle_stage", "industry", "city",
                         "country", "email", "phone", "website", "notes", "external_id", "created_at", "updated_at"],
              ((f"Bench Customer {base + i:06d}", "company", reps[i % len(reps)].pk, rng.choice(RELATIONSHIPS),
                rng.choice(STAGES), "", rng.choice(["Leeds", "Lyon", "Porto", "Graz"]), "GB", "", "", "", "",
                f"BENCH-{base + i:06d}", stamp, stamp) for i in range(n)))
        ids = list(Customer.objects.filter(external_id__startswith="BENCH-").order_by("pk").values_list("pk", "owner_id"))
        ids = ids[-n:]
        products = list(Product.objects.all())
        if len(products) < 40:
            Product.objects.bulk_create([
                Product(sku=f"BENCH-SKU-{i:03d}", name=f"Bench Product {i}", family=f"Family {i // 4}", tier=i % 4 + 1,
                        list_price=Decimal(50 + 10 * i), unit_cost=Decimal(20 + 4 * i), capacity_unit="seats",
                        capacity_per_unit=Decimal(10))
                for i in range(40)
            ], ignore_conflicts=True)
            products = list(Product.objects.all())
        _copy(Person, ["customer", "first_name", "last_name", "dmu_role", "job_title", "email", "phone", "is_active",
                       "created_at", "updated_at"],
              ((cid, "Pat", f"Person{cid}", rng.choice(["decision_maker", "buyer", "user"]), "", "", "", "t",
                stamp, stamp) for cid, _ in ids))

        def purchases():
            for cid, _ in ids:
                for _ in range(rng.randint(0, 9)):
                    p = rng.choice(products)
                    q = rng.randint(1, 5)
                    when = now - timedelta(days=rng.randint(1, 900), minutes=rng.randint(0, 1440))
                    yield (cid, p.pk, q, p.list_price, p.list_price * q, None, when.isoformat(), "", stamp, stamp)

        _copy(Purchase, ["customer", "product", "quantity", "unit_price", "amount", "unit_cost", "purchased_at",
                         "order_ref", "created_at", "updated_at"], purchases())

        def contacts():
            for cid, owner in ids:
                for _ in range(rng.randint(0, 6)):
                    when = now - timedelta(days=rng.randint(0, 400), minutes=rng.randint(0, 1440))
                    follow = (when.date() + timedelta(days=rng.randint(1, 30))).isoformat() if rng.random() < 0.1 else None
                    yield (cid, rng.choice(CHANNELS), "outbound", owner, when.isoformat(), "Check-in call", "", "",
                           follow, None, stamp, stamp)

        _copy(Contact, ["customer", "channel", "direction", "salesperson", "occurred_at", "subject", "notes",
                        "outcome", "follow_up_on", "follow_up_done_at", "created_at", "updated_at"], contacts())
        _copy(Event, ["customer", "kind", "occurred_at", "impact", "description", "recorded_by", "created_at",
                      "updated_at"],
              ((cid, rng.choice(EVENT_KINDS), (now - timedelta(days=rng.randint(0, 500))).isoformat(),
                rng.choice(["positive", "neutral", "negative"]), "", None, stamp, stamp)
               for cid, _ in ids if rng.random() < 0.6))
        _copy(Holding, ["customer", "product", "quantity", "since", "until", "status", "created_at", "updated_at"],
              ((cid, rng.choice(products).pk, rng.randint(1, 5), "2025-01-01", None, "active", stamp, stamp)
               for cid, _ in ids if rng.random() < 0.5))
        holding_ids = list(Holding.objects.filter(customer_id__gte=ids[0][0]).values_list("pk", "quantity"))
        _copy(Usage, ["holding", "period_start", "period_end", "used", "capacity", "satisfaction", "nps", "note",
                      "created_at", "updated_at"],
              ((hid, f"2026-{m:02d}-01", f"2026-{m:02d}-28", rng.randint(0, int(q * 10)), q * 10,
                rng.randint(1, 5), rng.randint(0, 10), "", stamp, stamp)
               for hid, q in holding_ids for m in (8, 9, 10)))
        seen = set()

        def opportunities():
            for cid, _ in ids:
                if rng.random() < 0.5:
                    p = rng.choice(products)
                    kind = rng.choice(["cross_sell", "up_sell"])
                    if (cid, p.pk, kind) in seen:
                        continue
                    seen.add((cid, p.pk, kind))
                    yield (cid, p.pk, None, kind, round(rng.random(), 3), rng.randint(50, 5000),
                           "Customers like this one hold it.", "{}", rng.choice(["open", "open", "accepted", "won"]),
                           now.isoformat(), stamp, stamp, "", "", "")

        _copy(Opportunity, ["customer", "product", "from_product", "kind", "score", "expected_value", "evidence",
                            "evidence_data", "status", "generated_at", "created_at", "updated_at", "rule",
                            "dismiss_reason", "dismiss_note"], opportunities())
    print(f"  crm rows in {time.perf_counter() - t0:.1f} s", flush=True)
    seed_clv(rng)


def seed_clv(rng: random.Random) -> None:
    """Two succeeded runs with values for every customer, and their per-owner portfolio snapshots."""
    ClvRun, CustomerValue, PortfolioSnapshot = (clv_model(n) for n in ("ClvRun", "CustomerValue", "PortfolioSnapshot"))
    if ClvRun is None or CustomerValue is None:
        print("  clv tables not installed: pages show their no-CLV states", flush=True)
        return
    if ClvRun.objects.filter(is_current=True).exists():
        return
    t0 = time.perf_counter()
    concrete = {f.name for f in ClvRun._meta.get_fields()}
    customer_ids = list(Customer.objects.values_list("pk", flat=True))
    for k, as_of in enumerate((AS_OF - timedelta(days=30), AS_OF)):
        now = datetime.combine(as_of, datetime.min.time(), tzinfo=UTC)
        fields = {"status": "succeeded", "is_current": k == 1, "as_of": as_of, "started_at": now,
                  "finished_at": now + timedelta(seconds=90), "model": "bgnbd", "params": {}, "diagnostics": {},
                  "timings": {"fit": 10.0}, "counts": {"customers": len(customer_ids)}}
        with transaction.atomic():
            run = ClvRun.objects.create(**{f: v for f, v in fields.items() if f in concrete})
            batch = []
            for cid in customer_ids:
                p = rng.random()
                clv = Decimal(int(rng.lognormvariate(7, 1.2)))
                batch.append(CustomerValue(
                    run=run, customer_id=cid, clv=clv * Decimal(p), p_alive=p, expected_purchases=rng.random() * 4,
                    expected_avg_value=Decimal(120), historical_value=clv, classic_value=clv * 2, frequency=3,
                    recency=100.0, T=400.0,
                ))
                if len(batch) >= 5000:
                    CustomerValue.objects.bulk_create(batch)
                    batch = []
            CustomerValue.objects.bulk_create(batch)
            if PortfolioSnapshot is not None:
                rows = (CustomerValue.objects.filter(run=run).values("customer__owner_id").annotate(
                    customers=Count("pk"), total_clv=Sum("clv"), total_historical=Sum("historical_value"),
                    at_risk_customers=Count("pk", filter=Q(p_alive__lt=RISK_P_ALIVE)),
                    value_at_risk=Sum("clv", filter=Q(p_alive__lt=RISK_P_ALIVE))))
                PortfolioSnapshot.objects.bulk_create([
                    PortfolioSnapshot(run=run, owner_id=r["customer__owner_id"], customers=r["customers"],
                                      total_clv=r["total_clv"], total_historical=r["total_historical"],
                                      at_risk_customers=r["at_risk_customers"], value_at_risk=r["value_at_risk"] or 0)
                    for r in rows
                ])
    with connection.cursor() as cur:
        cur.execute("ANALYZE")
    print(f"  clv values in {time.perf_counter() - t0:.1f} s", flush=True)


def seed(n: int, seeder: str) -> None:
    have = Customer.objects.count()
    if have >= n:
        print(f"database already holds {have:,} customers", flush=True)
        ensure_users()
        seed_clv(random.Random(7))
        return
    if seeder == "demo":
        call_command("seed_demo", customers=n, seed=42, if_empty=True)
        ensure_users()
        return
    copy_seed(n - have, ensure_users())
    with connection.cursor() as cur:
        cur.execute("ANALYZE")


def seed_overdue_tasks() -> None:
    """Open tasks on one account in seven (none when the book already has tasks), a third of them overdue."""
    from crm.models import Task

    if Task.objects.exists():
        return
    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO crm_task (customer_id, assigned_to_id, title, notes, due_on, outcome, created_at, updated_at,"
            " change_txid, change_seq) SELECT id, owner_id, 'Follow up', '', CURRENT_DATE + (id % 30)::int - 10, '',"
            " now(), now(), 0, 0 FROM crm_customer WHERE id % 7 = 0 AND owner_id IS NOT NULL"
        )
        cur.execute("ANALYZE crm_task")


# -- timing ---------------------------------------------------------------------------------------


def time_page(client: Client, url: str, repeat: int) -> dict:
    client.get(url)  # warm caches and the connection
    times = []
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    queries = len(ctx.captured_queries)
    for _ in range(repeat):
        t0 = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    return {"median": statistics.median(times), "p95": p95, "queries": queries, "bytes": len(response.content)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--seeder", choices=["auto", "copy", "demo"], default="auto")
    parser.add_argument("--only", default="", help="time only the pages whose label contains this text (e.g. dashboard)")
    args = parser.parse_args()
    if not settings.IS_POSTGRES:
        sys.exit("bench_pages needs PostgreSQL: set DATABASE_URL=postgres://...")
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    call_command("migrate", verbosity=0)
    seeder = args.seeder
    if seeder == "auto":
        from django.core.management import get_commands

        seeder = "demo" if "seed_demo" in get_commands() else "copy"
    seed(args.customers, seeder)

    seed_overdue_tasks()
    total = Customer.objects.count()
    rep = User.objects.get(username="rep_north_1")
    rep_customers = Customer.objects.filter(owner=rep).count()
    busiest = (Customer.objects.filter(owner=rep).annotate(n=Count("contacts")).order_by("-n", "pk")
               .values_list("pk", flat=True).first())
    pages = [
        ("rep_north_1", "account list (rep, sort CLV)", "/customers/"),
        ("rep_north_1", "account list (rep, sort last contact)", "/customers/?sort=-last_contact"),
        ("rep_north_1", "account list (rep, search + risk)", "/customers/?q=Customer+01&risk=high"),
        ("manager_north", "account list (manager, sort CLV)", "/customers/"),
        ("admin", "account list (admin, all, sort CLV)", "/customers/"),
        ("admin", "account list (admin, sort last contact)", "/customers/?sort=-last_contact"),
        ("rep_north_1", "account 360", f"/customers/{busiest}/"),
        ("rep_north_1", "my day", "/my-day/"),
        ("rep_north_1", "next best actions (rep, full list)", "/next-actions/"),
        ("manager_north", "next best actions (manager, team page)", "/dashboard/next-actions/"),
        ("manager_north", "dashboard (manager)", "/dashboard/"),
        ("admin", "dashboard (admin, whole book)", "/dashboard/"),
    ]
    print(f"\n{total:,} customers ({rep_customers:,} owned by rep_north_1); {args.repeat} renders per page\n")
    print("| page | median ms | p95 ms | queries | target |\n|---|---:|---:|---:|---|")
    clients: dict[str, Client] = {}
    for username, label, url in pages:
        if args.only and args.only not in label:
            continue
        if username not in clients:
            clients[username] = Client()
            clients[username].force_login(User.objects.get(username=username))
        r = time_page(clients[username], url, args.repeat)
        ok = "ok" if r["p95"] <= TARGET_MS else f"over {TARGET_MS} ms"
        print(f"| {label} | {r['median']:.1f} | {r['p95']:.1f} | {r['queries']} | {ok} |", flush=True)


if __name__ == "__main__":
    main()
