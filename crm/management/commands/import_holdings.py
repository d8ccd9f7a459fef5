"""import_holdings: load holdings from CSV (columns mapped with --map), all or nothing."""

from crm.management.commands._import_command import ImportCommand


class Command(ImportCommand):
    kind = "holdings"
