"""seed_demo: deterministic demo users, catalogue and customers with planted ground truth."""

import json
import time
from datetime import date
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from crm.demo.seed import DEMO_PASSWORD, seed_demo
from crm.models import Customer

STEPS = ["users", "products", "customers", "people", "holdings", "usage", "purchases", "events", "contacts"]


class Command(BaseCommand):
    help = "Fill the CRM with deterministic demo data and write the ground truth it planted as JSON."

    def add_arguments(self, parser):
        parser.add_argument("--customers", type=int, default=2000)
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument("--products", type=int, default=20, help="catalogue size (at least 20 for the planted facts)")
        parser.add_argument("--as-of", type=date.fromisoformat, default=None,
                            help="YYYY-MM-DD; history ends here (default: today)")
        parser.add_argument("--if-empty", action="store_true", help="do nothing when customers already exist")
        parser.add_argument("--values-if-missing", action="store_true",
                            help="then compute CLV and opportunities, unless a current CLV run exists already")
        parser.add_argument("--no-subscriptions", action="store_true",
                            help="leave every product bought ad hoc (no renewal periods, no renewal histories)")
        parser.add_argument("--truth-file", default=str(Path(settings.BASE_DIR) / "var" / "demo_ground_truth.json"))

    def handle(self, *args, **opts):
        if opts["customers"] < 1:
            raise CommandError("--customers must be at least 1")
        if opts["products"] < 20:
            raise CommandError("--products must be at least 20 (the planted associations need the base catalogue)")
        if opts["if_empty"] and Customer.objects.exists():
            self.stdout.write("Customers exist already; demo data left as it is.")
            self._values_if_missing(opts)
            self._print_logins()
            return
        if Customer.objects.filter(external_id__startswith="DEMO-").exists():
            raise CommandError("Demo customers exist already: use a fresh database (or --if-empty).")
        bar = tqdm(total=len(STEPS), desc="seed_demo", unit="step", disable=opts["verbosity"] == 0)

        def progress(label: str, count: int) -> None:
            bar.set_postfix_str(f"{label}: {count:,}")
            bar.update(1)

        started = time.perf_counter()
        truth = seed_demo(
            customers=opts["customers"], seed=opts["seed"], products=opts["products"], as_of=opts["as_of"],
            progress=progress, subscriptions=not opts["no_subscriptions"],
        )
        bar.close()
        elapsed = time.perf_counter() - started
        truth_path = Path(opts["truth_file"])
        truth_path.parent.mkdir(parents=True, exist_ok=True)
        truth_path.write_text(json.dumps(truth, indent=2))
        self.stdout.write(
            f"Seeded {opts['customers']:,} customers and {truth['purchase_lines']:,} purchase lines "
            f"in {elapsed:.1f} s; ground truth in {truth_path}"
        )
        self._values_if_missing(opts)
        self._print_logins()

    def _values_if_missing(self, opts):
        """CLV and opportunities for the demo, only when there is no current run (a restart adds no trend point)."""
        if not opts["values_if_missing"]:
            return
        from clv.models import ClvRun
        from clv.services import run_clv
        from crm.opportunities.services import opportunities_regenerate

        current = ClvRun.objects.filter(is_current=True).first()
        if current is not None:
            self.stdout.write(f"CLV run {current.pk} of {current.as_of} is current; values left as they are.")
            return
        started = time.perf_counter()
        run = run_clv(as_of=opts["as_of"])
        result = opportunities_regenerate(as_of=run.as_of)
        self.stdout.write(
            f"CLV run {run.pk} as of {run.as_of} ({run.status}) and {result.created + result.updated:,} "
            f"opportunities in {time.perf_counter() - started:.1f} s"
        )

    def _print_logins(self):
        self.stdout.write(
            "Demo logins (password " + DEMO_PASSWORD + "): admin, manager_north, manager_south, "
            "rep_north_1..3, rep_south_1..3"
        )
