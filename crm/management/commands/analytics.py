"""Print the answer to one of the seven analytics questions as a table or JSON."""

from __future__ import annotations

import json
from datetime import date

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.core.serializers.json import DjangoJSONEncoder

from crm import analytics

QUESTIONS = {
    "1": "product-buyers",
    "2": "contact-frequency",
    "2b": "not-contacted",
    "3": "most-profitable",
    "4": "events-before-loss",
    "5": "customer-products",
    "6": "events-before-purchase",
    "7": "loyalty",
}


def _date(value: str | None, flag: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"{flag}: {exc}") from exc


class Command(BaseCommand):
    help = (
        "Answer an analytics question: "
        + ", ".join(f"{k}={v}" for k, v in QUESTIONS.items())
        + ". Bounded by what --user may see (default: every customer, as an admin)."
    )

    def add_arguments(self, parser):
        parser.add_argument("question", help="Number or name: " + ", ".join(f"{k}/{v}" for k, v in QUESTIONS.items()))
        parser.add_argument("--product", help="Product SKU (questions 1, 5, 6).")
        parser.add_argument("--since")
        parser.add_argument("--until")
        parser.add_argument("--window-days", type=int, help="Window (4, 6) or days without contact (2b).")
        parser.add_argument("--by", choices=["margin", "clv"], default="margin", help="Question 3 ranking.")
        parser.add_argument("--limit", type=int, default=20)
        parser.add_argument("--user", help="Username whose visibility bounds the answer.")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **o):
        q = o["question"]
        names = {v: k for k, v in QUESTIONS.items()}
        q = names.get(q, q)
        if q not in QUESTIONS:
            raise CommandError(f"Unknown question {o['question']!r}; choose one of {', '.join(QUESTIONS.values())}.")
        user = self._user(o["user"])
        since, until = _date(o["since"], "--since"), _date(o["until"], "--until")
        w = o["window_days"]
        try:
            if q == "1":
                if not o["product"]:
                    raise CommandError("Question 1 needs --product SKU.")
                answer = analytics.product_buyers(user, product=o["product"], since=since, until=until)
                rows = [answer]
            elif q == "2":
                rows = analytics.contact_frequency(user, since=since, until=until, limit=o["limit"])
            elif q == "2b":
                rows = analytics.valuable_not_contacted(user, days=w or 60, limit=o["limit"])
            elif q == "3":
                rows = analytics.most_profitable(user, by=o["by"], since=since, until=until, limit=o["limit"])
            elif q == "4":
                answer = analytics.events_before_loss(user, window_days=w or 90, since=since, until=until)
                rows = answer["kinds"]
            elif q == "5":
                rows = analytics.customer_products(
                    user, product=o["product"], since=since, until=until, limit=o["limit"]
                )
            elif q == "6":
                answer = analytics.events_before_purchase(
                    user, window_days=w or 60, product=o["product"], since=since, until=until
                )
                rows = answer["kinds"]
            else:
                rows = analytics.loyalty_patterns(user)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if o["json"]:
            self.stdout.write(json.dumps(rows, cls=DjangoJSONEncoder, indent=2))
            return
        self._table(rows)

    def _user(self, username):
        User = get_user_model()
        if not username:
            return User(username="(command)", role="admin", is_active=True, is_superuser=True)
        try:
            return User.objects.get(username=username)
        except User.DoesNotExist:
            raise CommandError(f"No user {username!r}.") from None

    def _table(self, rows: list[dict]) -> None:
        if not rows:
            self.stdout.write("(no rows)")
            return
        cols = list(rows[0])
        cells = [[("" if r[c] is None else str(r[c])) for c in cols] for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        self.stdout.write("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
        self.stdout.write("  ".join("-" * w for w in widths))
        for row in cells:
            self.stdout.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
