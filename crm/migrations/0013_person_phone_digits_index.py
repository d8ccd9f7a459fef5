# A trigram GIN index on people's phone numbers with the punctuation removed, so the global
# search finds "+33 6 12 34 56 78" from "0612345678" or "612 345" without a table scan.
# PostgreSQL only; SQLite searches with a plain LIKE on the same expression.

from django.db import migrations

INDEX_NAME = "person_phone_digits_trgm"
# A copy, frozen here, of the punctuation crm.selectors.workspace strips from phones when this
# index was made: a migration must not change when the application code does.
PHONE_PUNCTUATION = (" ", "-", ".", "(", ")", "+", "/", "\u00a0")


def phone_digits_expression():
    from django.db.models import F, Value
    from django.db.models.functions import Replace

    expression = F("phone")
    for char in PHONE_PUNCTUATION:
        expression = Replace(expression, Value(char), Value(""))
    return expression


def add_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    from django.contrib.postgres.indexes import GinIndex, OpClass

    schema_editor.add_index(apps.get_model("crm", "person"),
                            GinIndex(OpClass(phone_digits_expression(), name="gin_trgm_ops"), name=INDEX_NAME))


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX_NAME}")


class Migration(migrations.Migration):
    dependencies = [("crm", "0012_opportunity_rule")]

    operations = [migrations.RunPython(add_index, drop_index)]
