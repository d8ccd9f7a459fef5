"""import_purchases: load a purchase history from CSV, all or nothing."""

import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from crm.history import history_context
from crm.imports import DEFAULT_BATCH_SIZE, ImportError_, import_purchases_csv


class Command(BaseCommand):
    help = (
        "Import purchases from a CSV file with header columns customer_external_id,purchased_at,amount and "
        "optionally product_sku,quantity,unit_cost,order_ref and the keys external_id and id (the CRM's own, as "
        "exported): a line whose key is stored updates that line. Unknown customers are created. The first bad "
        "line stops the import with a message naming it, and nothing of the file is written."
    )

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--date-format", help="strptime format for purchased_at, e.g. %%d/%%m/%%Y (default ISO 8601)")
        parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)

    def handle(self, *args, **opts):
        bar = tqdm(desc="import", unit=" rows", file=sys.stderr, disable=opts["verbosity"] == 0)
        seen = 0

        def progress(rows: int) -> None:
            nonlocal seen
            bar.update(rows - seen)
            seen = rows

        try:
            with history_context(via="import_purchases", file=str(opts["file"])):
                result = import_purchases_csv(
                    opts["file"], date_format=opts["date_format"], batch_size=opts["batch_size"], progress=progress
                )
        except ImportError_ as exc:
            raise CommandError(f"{opts['file']}: {exc}; nothing was imported.") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"{opts['file']}: cannot read the file ({exc}); nothing was imported.") from None
        finally:
            bar.close()
        counts = "" if result.created == result.rows else (
            f" ({result.created:,} added, {result.updated:,} updated, {result.unchanged:,} unchanged)"
        )
        self.stdout.write(f"Imported {result.rows:,} purchase lines{counts}; "
                          f"created {result.customers_created:,} customers.")
