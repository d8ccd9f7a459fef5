"""Drop old tombstones and idempotency records; cursors from before the cut get 410 Gone."""

from django.conf import settings
from django.core.management.base import BaseCommand

from crm.sync import sync_log_prune


class Command(BaseCommand):
    help = "Prune the deletion log (tombstones) and stored Idempotency-Key responses past their retention."

    def add_arguments(self, parser):
        parser.add_argument(
            "--days", type=int, default=settings.SYNC_TOMBSTONE_RETENTION_DAYS,
            help="Keep tombstones this many days (default: SYNC_TOMBSTONE_RETENTION_DAYS).",
        )

    def handle(self, *args, days, **options):
        if days < 1:
            self.stderr.write("--days must be at least 1")
            raise SystemExit(2)
        pruned = sync_log_prune(tombstone_days=days)
        self.stdout.write(
            f"Pruned {pruned['tombstones']} tombstone(s) older than {days} days and "
            f"{pruned['idempotency_records']} idempotency record(s)."
        )
