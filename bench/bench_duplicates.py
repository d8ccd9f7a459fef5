"""Time of the duplicate check of the New account and Edit forms, on many customers.

Needs PostgreSQL (DATABASE_URL). Adds synthetic customers (names, e-mails, phones) with one SQL
statement when the database holds fewer than asked, split between one salesperson and the
rest of the company, then calls crm.selectors.accounts.possible_duplicates as an admin (who
sees every customer) and as the salesperson, and prints median and p95 per case.

    DATABASE_URL=postgres://... python bench/bench_duplicates.py --customers 100000 --repeat 50
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402

from accounts.models import User  # noqa: E402
from crm.models import Customer  # noqa: E402
from crm.selectors.accounts import possible_duplicates  # noqa: E402


def seed(n: int) -> tuple[User, User]:
    admin, _ = User.objects.get_or_create(username="bench_dup_admin", defaults={"role": "admin"})
    rep, _ = User.objects.get_or_create(username="bench_dup_rep", defaults={"role": "salesperson"})
    have = Customer.objects.count()
    if have < n:
        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO crm_customer (name, kind, owner_id, relationship_type, lifecycle_stage, industry, city,
                    country, email, phone, website, notes, created_at, updated_at, change_txid, change_seq)
                SELECT 'Company ' || g || ' ' || (ARRAY['Tools','Foods','Logistics','Labs','Systems'])[1 + g %% 5]
                       || ' Ltd', 'company', CASE WHEN g %% 20 = 0 THEN %s ELSE %s END, 'repeat', 'retained', '',
                       'City ' || (g %% 300), 'GB', 'info@company' || g || '.test',
                       '+44 20 ' || lpad((7000000 + g)::text, 8, '0'), '', '', now(), now(), 0, 0
                FROM generate_series(%s, %s) AS g
                """,
                [rep.pk, admin.pk, have + 1, n],
            )
            cursor.execute("ANALYZE crm_customer")
    return admin, rep


def timed(repeat: int, **kwargs) -> tuple[float, float, int]:
    times = []
    found = 0
    for _ in range(repeat):
        start = time.perf_counter()
        found = len(possible_duplicates(**kwargs))
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1], found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    admin, rep = seed(args.customers)
    print(f"{Customer.objects.count():,} customers; {Customer.objects.filter(owner=rep).count():,} the salesperson's")
    cases = {
        "name only": {"name": "Company 4200 Tools Limited"},
        "name, e-mail and phone": {"name": "Company 4200 Tools", "email": "sales@company4200.test",
                                   "phone": "020 0700 4200"},
        "no match": {"name": "Zyxwv Unseen", "email": "a@nowhere.test", "phone": "+1 555 0100 999"},
    }
    for who, user in (("admin", admin), ("salesperson", rep)):
        for label, kwargs in cases.items():
            median, p95, found = timed(args.repeat, user=user, **kwargs)
            print(f"{who:12s} {label:24s} median {median:6.1f} ms  p95 {p95:6.1f} ms  hints {found}")


if __name__ == "__main__":
    main()
