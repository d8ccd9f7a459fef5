"""Global search: server time on 100,000 customers and their people, on PostgreSQL.

Needs a database seeded first (it takes a few minutes), e.g.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crm_bench python manage.py seed_demo --customers 100000
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crm_bench python bench/bench_search.py --repeat 200

Queries are drawn from the stored rows (seeded, so the same every run): account names (whole,
a word, with a typo), external ids, people's full names (whole, with a typo), first and last
names (the common words: each matches thousands of rows), e-mail or phone fragments where the
rows have them, and words that match nothing. Each is run for an admin (sees every
customer), a manager (a team) and a salesperson (their own book). Two timings per query:
the selector alone (`crm.selectors.workspace.search`, the SQL and building the rows) and the
whole suggestions request through Django's test Client (view, template, session and auth).
Prints median and p95 per role and in total, and the plan of one query.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from accounts.models import User  # noqa: E402
from crm.models import Customer, Person  # noqa: E402
from crm.selectors.workspace import search  # noqa: E402

TARGET_MEDIAN_MS = 50
SEED = 20261202


def typo(text: str, rng: random.Random) -> str:
    """Swap two neighbouring letters inside the longest word (a common slip)."""
    words = text.split()
    i = max(range(len(words)), key=lambda k: len(words[k]))
    w = words[i]
    if len(w) >= 4:
        j = rng.randrange(1, len(w) - 2)
        w = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    words[i] = w
    return " ".join(words)


def draw(model, count: int, rng: random.Random, *fields: str) -> list[tuple]:
    """`count` rows of `model` drawn by `rng` from its ids in order: the same rows every run on the same data."""
    ids = list(model.objects.order_by("pk").values_list("pk", flat=True))
    chosen = rng.sample(ids, min(count, len(ids)))
    rows = {row[0]: row[1:] for row in model.objects.filter(pk__in=chosen).values_list("pk", *fields)}
    return [rows[pk] for pk in chosen]


def queries(count: int, rng: random.Random) -> list[tuple[str, str]]:
    """(kind, query) pairs drawn from stored rows."""
    customers = draw(Customer, count, rng, "name", "external_id", "city", "email")
    people = draw(Person, count, rng, "first_name", "last_name", "email", "phone")
    out: list[tuple[str, str]] = []
    for (name, ext, city, email), (first, last, p_email, phone) in zip(customers, people, strict=False):
        base = name.split(" #")[0]
        out.append(("account name", name))
        out.append(("account word", base.split()[0]))
        out.append(("account typo", typo(base, rng)))
        if ext:
            out.append(("external id", ext))
        if city:
            out.append(("city", city))
        if email:
            out.append(("e-mail", email.split("@")[0]))
        full = f"{first} {last}".strip()
        out.append(("person name", full))
        out.append(("person typo", typo(full, rng)))
        out.append(("last name", last))
        out.append(("first name", first))
        out.append(("no match", "q" + "".join(rng.choice("xzjkvw") for _ in range(5))))
        if p_email:
            out.append(("person e-mail", p_email.split("@")[0]))
        if phone:
            digits = "".join(ch for ch in phone if ch.isdigit())
            out.append(("phone", digits[-6:]))
    return out


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=150, help="queries per role (default 150)")
    parser.add_argument("--customers", type=int, default=100_000, help="customers the database must hold")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("bench_search needs PostgreSQL: set DATABASE_URL=postgres://...")
    held = Customer.objects.count()
    if held < args.customers:
        sys.exit(f"The database holds {held:,} customers; seed it first: "
                 f"python manage.py seed_demo --customers {args.customers}")
    settings.ALLOWED_HOSTS = ["*"]
    rng = random.Random(SEED)
    pool = queries(args.repeat, rng)
    roles = {
        "admin": User.objects.filter(role="admin").first() or User.objects.filter(is_superuser=True).first(),
        "manager": User.objects.filter(role="manager", managed_teams__isnull=False).first(),
        "salesperson": User.objects.filter(role="salesperson", customers__isnull=False).distinct().first(),
    }
    print(f"{held:,} customers, {Person.objects.count():,} people; load {os.getloadavg()[0]:.2f}")
    for role, user in roles.items():
        visible = Customer.objects.visible_to(user).count()
        print(f"  {role:<12} {user.username:<16} sees {visible:,} customers")
    for user in roles.values():  # warm the caches and the plan
        for _, q in pool[:20]:
            search(user, q)

    all_selector: list[float] = []
    all_request: list[float] = []
    by_kind: dict[str, list[float]] = {}
    print(f"\n{'role':<12} {'queries':>7} {'selector median':>16} {'p95':>8} {'request median':>15} {'p95':>8}"
          f" {'SQL':>4}")
    for role, user in roles.items():
        client = Client()
        client.force_login(user)
        selector_ms, request_ms = [], []
        sample = rng.sample(pool, min(args.repeat, len(pool)))
        sql = 0
        for kind, q in sample:
            start = time.perf_counter()
            search(user, q)
            elapsed = (time.perf_counter() - start) * 1000
            selector_ms.append(elapsed)
            by_kind.setdefault(kind, []).append(elapsed)
            with CaptureQueriesContext(connection) as captured:
                start = time.perf_counter()
                response = client.get("/search/", {"q": q}, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="search-suggest")
                request_ms.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200, response.status_code
            sql = max(sql, len(captured))
        all_selector += selector_ms
        all_request += request_ms
        print(f"{role:<12} {len(sample):>7} {statistics.median(selector_ms):>13.1f} ms {pct(selector_ms, 95):>5.1f} ms"
              f" {statistics.median(request_ms):>12.1f} ms {pct(request_ms, 95):>5.1f} ms {sql:>4}")
    print(f"{'all':<12} {len(all_selector):>7} {statistics.median(all_selector):>13.1f} ms "
          f"{pct(all_selector, 95):>5.1f} ms {statistics.median(all_request):>12.1f} ms {pct(all_request, 95):>5.1f} ms")
    print("\nselector time by kind of query (all roles):")
    for kind, values in sorted(by_kind.items()):
        print(f"  {kind:<14} n={len(values):<4} median {statistics.median(values):6.1f} ms  p95 {pct(values, 95):6.1f} ms")
    median = statistics.median(all_request)
    verdict = "met" if median <= TARGET_MEDIAN_MS else "MISSED"
    print(f"\nTarget: median request <= {TARGET_MEDIAN_MS} ms: {verdict} ({median:.1f} ms)")

    # The plans of one search (a person's name with a typo, as the manager): each SQL query the
    # selector issued, explained in the same transaction (so with the settings it made).
    from django.db import transaction

    example = next(q for kind, q in pool if kind == "person typo")
    with transaction.atomic():
        with CaptureQueriesContext(connection) as captured:
            search(roles["manager"], example)
        print(f"\nPlans for {example!r} (manager):")
        with connection.cursor() as cursor:
            for query in captured.captured_queries:
                if query["sql"].startswith("SELECT") and "crm_" in query["sql"]:
                    cursor.execute("EXPLAIN (ANALYZE, COSTS OFF) " + query["sql"])
                    print("\n".join(row[0] for row in cursor.fetchall()), end="\n\n")
        transaction.set_rollback(True)

if __name__ == "__main__":
    main()
