"""The import commands' shared body: one kind each, the file's columns mapped with --map, all or nothing."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from accounts.models import User
from crm.history import history_context
from crm.importing import BATCH_SIZE, KINDS, ImportFailed, import_csv, parse_mapping

SHOWN_ERRORS = 50


class ImportCommand(BaseCommand):
    kind = ""

    @property
    def help(self):
        kind = KINDS[self.kind]
        required = ", ".join(kind.required)
        return (
            f"Import {kind.label.lower()} from a CSV file (fields: {', '.join(kind.fields)}; required: {required}). "
            "Rows are keyed by external_id: a stored one is updated, others are created. Every line is checked "
            "first; if any is bad, the errors are listed by line and nothing of the file is written."
        )

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument(
            "--map",
            action="append",
            default=[],
            metavar="FILE_COLUMN=FIELD",
            help="Read FIELD from the file's FILE_COLUMN (repeat per column). Without any --map, the header must "
            "name the fields.",
        )
        parser.add_argument("--user", help="Import as this user (visibility and role rules); default: the first admin.")
        parser.add_argument("--dry-run", action="store_true", help="Check every line and write nothing.")
        parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)

    def handle(self, *args, **opts):
        kind = KINDS[self.kind]
        try:
            mapping = parse_mapping(opts["map"]) if opts["map"] else None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        user = self._user(opts["user"])
        bar = tqdm(desc=f"import {kind.key}", unit=" rows", file=sys.stderr, disable=opts["verbosity"] == 0)
        seen = 0

        def progress(rows: int) -> None:
            nonlocal seen
            bar.update(rows - seen)
            seen = rows

        try:
            with (
                open(opts["file"], newline="", encoding="utf-8-sig") as handle,
                history_context(user=user.pk, via=f"import_{kind.key}", file=str(opts["file"])),
            ):
                result = import_csv(
                    kind,
                    handle,
                    user=user,
                    mapping=mapping,
                    dry_run=opts["dry_run"],
                    batch_size=opts["batch_size"],
                    progress=progress,
                )
        except ImportFailed as exc:
            errors = exc.result.errors[:SHOWN_ERRORS]
            more = exc.result.error_count - len(errors)
            lines = [f"{opts['file']}: {e}" for e in errors]
            if more > 0:
                lines.append(f"... and {more} more error(s)")
            raise CommandError(
                "\n".join(lines) + f"\n{exc.result.error_count} error(s); nothing was imported."
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"{opts['file']}: cannot read the file ({exc}); nothing was imported.") from None
        finally:
            bar.close()
        if opts["dry_run"]:
            self.stdout.write(f"Checked {result.rows:,} rows: no errors (dry run, nothing written).")
        else:
            self.stdout.write(
                f"Imported {result.rows:,} {kind.label.lower()} rows: {result.created:,} created, "
                f"{result.updated:,} updated, {result.unchanged:,} unchanged."
            )

    def _user(self, username: str | None) -> User:
        if username:
            user = User.objects.filter(username=username, is_active=True).first()
            if user is None:
                raise CommandError(f"--user {username!r}: no active user of that name.")
            return user
        from django.db.models import Q

        user = (
            User.objects.filter(Q(is_superuser=True) | Q(role=User.Role.ADMIN), is_active=True).order_by("pk").first()
        )
        if user is None:
            raise CommandError("No active admin to import as: give --user USERNAME.")
        return user
