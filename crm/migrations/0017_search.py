# One trigram GIN index per table behind the global search, on one text joining every searched
# field (accounts: name, city, e-mail, web site, external id; people: first and last name,
# e-mail, phone digits). It replaces the nine per-field trigram indexes of migrations 0007 and
# 0013: one index to ask per table instead of six or four, and seven fewer to keep on every write.
# PostgreSQL only; SQLite searches with a plain LIKE.
#
# The expressions are copies, frozen here, of crm.selectors.workspace.account_search_text and
# person_search_text: the search's query must equal the index expression for the index to serve it.

from django.db import migrations

PHONE_PUNCTUATION = (" ", "-", ".", "(", ")", "+", "/", "\u00a0")


def _joined(*columns: str) -> str:
    return "(" + " || ' ' || ".join(f"COALESCE({column}, '')" for column in columns) + ")"


def _phone_digits(column: str) -> str:
    sql = column
    for char in PHONE_PUNCTUATION:
        sql = f"REPLACE({sql}, '{char}', '')"
    return sql


NEW_INDEXES = {
    "customer_search_trgm": ("crm_customer", _joined('"name"', '"city"', '"email"', '"website"', '"external_id"')),
    "person_search_trgm": ("crm_person", _joined('"first_name"', '"last_name"', '"email"', _phone_digits('"phone"'))),
}

# The indexes this one replaces (as 0007 and 0013 built them), to put back when it is reversed.
OLD_COLUMN_INDEXES = {
    "customer": [("customer_name_trgm", "name"), ("customer_city_trgm", "city"), ("customer_email_trgm", "email"),
                 ("customer_website_trgm", "website"), ("customer_extid_trgm", "external_id")],
    "person": [("person_email_trgm", "email"), ("person_phone_trgm", "phone")],
}
OLD_INDEX_NAMES = [name for pairs in OLD_COLUMN_INDEXES.values() for name, _ in pairs] + [
    "person_fullname_trgm", "person_phone_digits_trgm"]


def _old_indexes(apps):
    from django.contrib.postgres.indexes import GinIndex, OpClass
    from django.db.models import CharField, F, Value
    from django.db.models.functions import Concat, Replace

    for model_name, pairs in OLD_COLUMN_INDEXES.items():
        for name, column in pairs:
            yield apps.get_model("crm", model_name), GinIndex(OpClass(F(column), name="gin_trgm_ops"), name=name)
    person = apps.get_model("crm", "person")
    full_name = Concat("first_name", Value(" "), "last_name", output_field=CharField())
    yield person, GinIndex(OpClass(full_name, name="gin_trgm_ops"), name="person_fullname_trgm")
    digits = F("phone")
    for char in PHONE_PUNCTUATION:
        digits = Replace(digits, Value(char), Value(""))
    yield person, GinIndex(OpClass(digits, name="gin_trgm_ops"), name="person_phone_digits_trgm")


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, (table, expression) in NEW_INDEXES.items():
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} USING gin ({expression} gin_trgm_ops)")
        schema_editor.execute(f"ANALYZE {table}")
    for name in OLD_INDEX_NAMES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for model, index in _old_indexes(apps):
        schema_editor.add_index(model, index)
    for name in NEW_INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("crm", "0016_product_category")]

    operations = [migrations.RunPython(forwards, backwards)]
