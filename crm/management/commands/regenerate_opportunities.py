"""Regenerate cross-sell and up-sell opportunities now."""

from __future__ import annotations

from datetime import date

from django.core.management.base import BaseCommand, CommandError

from crm.opportunities.services import opportunities_regenerate


class Command(BaseCommand):
    help = "Regenerate cross-sell and up-sell opportunities for every active customer."

    def add_arguments(self, parser):
        parser.add_argument("--as-of", help="Reference date YYYY-MM-DD (default today).")
        parser.add_argument("--min-support", type=float)
        parser.add_argument("--top-k", type=int)

    def handle(self, *args, **opts):
        try:
            as_of = date.fromisoformat(opts["as_of"]) if opts["as_of"] else None
        except ValueError as exc:
            raise CommandError(f"--as-of: {exc}") from exc
        if opts["top_k"] is not None and opts["top_k"] < 1:
            raise CommandError("--top-k must be at least 1.")
        r = opportunities_regenerate(as_of=as_of, min_support=opts["min_support"], top_k=opts["top_k"])
        self.stdout.write(
            f"created {r.created}, updated {r.updated}, unchanged {r.unchanged}, reopened {r.reopened}, expired {r.expired}, "
            f"kept {r.kept} (cross-sell {r.cross_sell}, up-sell {r.up_sell}; value from {r.value_source}) "
            f"in {r.timings.get('total', 0):.1f} s"
        )
