"""person_data: a personal-data request from the command line (export or erase one person)."""

import json

from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError
from django.core.serializers.json import DjangoJSONEncoder

from accounts.models import User
from crm import privacy
from crm.history import history_context
from crm.models import Person


class Command(BaseCommand):
    help = (
        "Export everything held about a person as JSON, or erase their personal data (anonymised; the record "
        "and its contacts stay). PERSON is the person's id or ext:<external_id>; --by names the admin "
        "who handles the request."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["export", "erase"])
        parser.add_argument("person")
        parser.add_argument("--by", required=True, help="username of the admin handling the request")
        parser.add_argument("--output", "-o", help="write the export to this file (default: standard output)")

    def handle(self, *args, **opts):
        admin = User.objects.filter(username=opts["by"]).first()
        if admin is None or not privacy.may_handle_personal_data(admin):
            raise CommandError(f"--by {opts['by']!r}: not an admin; only admins handle personal-data requests.")
        key = opts["person"]
        lookup = {"external_id": key[4:]} if key.startswith("ext:") else {"pk": int(key) if key.isdigit() else 0}
        person = Person.objects.select_related("customer").filter(**lookup).first()
        if person is None:
            raise CommandError(f"No person {key!r} (give the id or ext:<external_id>).")
        try:
            if opts["action"] == "export":
                text = json.dumps(privacy.person_personal_data(person=person, requested_by=admin),
                                  cls=DjangoJSONEncoder, indent=2)
                if opts["output"]:
                    with open(opts["output"], "w", encoding="utf-8") as handle:
                        handle.write(text + "\n")
                    self.stdout.write(f"Wrote the personal data of person {person.pk} to {opts['output']}.")
                else:
                    self.stdout.write(text)
                return
            with history_context(via="person_data erase", user=admin.pk, username=admin.get_username()):
                result = privacy.person_erase(person=person, erased_by=admin)
        except PermissionDenied as exc:
            raise CommandError(str(exc)) from None
        if result["already_erased"]:
            self.stdout.write(f"Person {person.pk} was erased on {result['erased_at']:%Y-%m-%d %H:%M}; nothing more to do.")
        else:
            self.stdout.write(f"Erased the personal data of person {person.pk}; scrubbed copies: {result['scrubbed']}.")
