"""recompute_clv: run the CLV models now, with progress per phase, optionally printing JSON."""

import json
import sys
import time
from datetime import date

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from clv.models import ClvRun
from clv.services import ClvRunAlreadyRunning, run_clv, run_summary

POLL_SECONDS = 0.5


class Command(BaseCommand):
    help = "Recompute every customer's CLV now and make the result current."

    def add_arguments(self, parser):
        parser.add_argument("--as-of", type=date.fromisoformat, help="YYYY-MM-DD (default: today)")
        parser.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
        parser.add_argument("--shards", type=int, help="customer shards scored by Celery workers (default CLV_SHARDS)")

    def handle(self, *args, **opts):
        started = time.perf_counter()

        def note(text: str) -> None:
            if opts["verbosity"]:
                sys.stderr.write(f"[{time.perf_counter() - started:7.2f} s] {text}\n")

        def progress(phase: str) -> None:
            note(f"{phase} done")

        try:
            run = run_clv(as_of=opts["as_of"], shards=opts["shards"], progress=progress)
        except ClvRunAlreadyRunning as exc:
            raise CommandError(str(exc)) from None
        except ValueError as exc:
            raise CommandError(f"CLV run failed: {exc}") from None
        if run.status == ClvRun.Status.RUNNING:
            note(f"waiting for {len(run.diagnostics['shards']['ranges'])} shards on the Celery workers")
            run = self._wait(run)
            note(f"shards done: run {run.status}")
        if run.status == ClvRun.Status.FAILED:
            raise CommandError(f"CLV run failed: {run.error}")
        if opts["json"]:
            self.stdout.write(json.dumps(run_summary(run), indent=2))
        else:
            self.stdout.write(
                f"CLV run {run.pk} as of {run.as_of}: {run.counts.get('customers', 0):,} customers scored "
                f"in {time.perf_counter() - started:.1f} s; now current."
            )

    def _wait(self, run: ClvRun) -> ClvRun:
        deadline = time.monotonic() + settings.CLV_RUN_TIMEOUT_MINUTES * 60
        while run.status == ClvRun.Status.RUNNING:
            if time.monotonic() > deadline:
                raise CommandError(f"CLV run {run.pk} still running after {settings.CLV_RUN_TIMEOUT_MINUTES} min")
            time.sleep(POLL_SECONDS)
            run.refresh_from_db()
        return run
