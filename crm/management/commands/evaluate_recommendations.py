"""Measure the cross-sell recommender offline on the CRM's own history, against two baselines."""

from __future__ import annotations

from datetime import date

from django.core.management.base import BaseCommand, CommandError

from crm.opportunities import engine
from crm.opportunities.offline import LEVELS, evaluate_history


class Command(BaseCommand):
    help = (
        "Train on everything up to --as-of, and check each customer's top-k suggestions against what they first "
        "bought in the next --horizon-days days: precision@k, recall@10 and coverage for the product's recommender, "
        "popularity and plain co-occurrence."
    )

    def add_arguments(self, parser):
        parser.add_argument("--as-of", required=True, help="Split date YYYY-MM-DD: train before, measure from it.")
        parser.add_argument("--horizon-days", type=int, required=True, help="Days after the split to measure on.")
        parser.add_argument("--k", type=int, default=3, help="Suggestions per customer for precision (default 3).")
        parser.add_argument("--level", default="product", help=f"One of {', '.join(LEVELS)} (default product).")
        parser.add_argument(
            "--also", default="", help=f"Extra engine models to measure, comma-separated ({', '.join(engine.MODELS)})."
        )

    def handle(self, *args, **opts):
        try:
            as_of = date.fromisoformat(opts["as_of"])
        except ValueError as exc:
            raise CommandError(f"--as-of: {exc} (expected YYYY-MM-DD)") from exc
        horizon, k, level = opts["horizon_days"], opts["k"], opts["level"]
        if horizon < 1:
            raise CommandError("--horizon-days must be at least 1.")
        if k < 1:
            raise CommandError("--k must be at least 1.")
        if level not in LEVELS:
            raise CommandError(f"--level must be one of {', '.join(LEVELS)}, not {level!r}.")
        also = tuple(m for m in opts["also"].split(",") if m)
        unknown = [m for m in also if m not in engine.MODELS]
        if unknown:
            raise CommandError(f"--also: unknown model {', '.join(unknown)}.")
        report = evaluate_history(as_of=as_of, horizon_days=horizon, k=k, level=level, models=also)
        base = report.row("popularity")
        if base.customers == 0:
            raise CommandError(
                f"No customer bought before {as_of} and bought something new within {horizon} days after: "
                "nothing to measure. Try another date or a longer horizon."
            )
        self.stdout.write(
            f"split {as_of}, horizon {horizon} days, level {level} ({report.items} items), "
            f"{base.customers} customers measured"
        )
        self.stdout.write(f"{'recommender':<28}{f'precision@{k}':>14}{'recall@10':>12}{'coverage':>10}")
        for r in report.rows:
            name = f"product ({report.model})" if r.model == "product" else r.model
            self.stdout.write(f"{name:<28}{r.precision_at_3:>14.4f}{r.recall_at_10:>12.4f}{r.coverage:>10.1%}")
        ratio = report.row("product").precision_at_3 / base.precision_at_3 if base.precision_at_3 else float("inf")
        self.stdout.write(f"product vs popularity at precision@{k}: {ratio:.2f}x")
