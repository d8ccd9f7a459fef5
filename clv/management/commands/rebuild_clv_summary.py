"""rebuild_clv_summary: recompute the kept per-customer purchase summary from every purchase line."""

import json

from django.core.management.base import BaseCommand

from clv.summary import summary_rebuild


class Command(BaseCommand):
    help = (
        "Rebuild the CLV purchase summary (per customer and day, and per customer) from all purchase lines, "
        "in one transaction. Needed once after installing it on a database that has purchases, and after "
        "changing TIME_ZONE; purchase writes keep it current otherwise."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print counts and seconds as JSON on stdout")

    def handle(self, *args, **opts):
        result = summary_rebuild()
        if opts["json"]:
            self.stdout.write(json.dumps(result))
        else:
            self.stdout.write(
                f"CLV purchase summary rebuilt: {result['customers']:,} customers, {result['days']:,} purchase days, "
                f"{result['lines']:,} lines in {result['seconds']:.1f} s."
            )
