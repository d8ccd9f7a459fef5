"""A case-insensitive contains lookup that PostgreSQL's trigram (gin_trgm_ops) indexes can serve.

Django's `icontains` on PostgreSQL compiles to `UPPER(col::text) LIKE UPPER(...)`, which no
index on the plain column can answer; `ilike_contains` compiles to `col ILIKE '%...%'`, which
pg_trgm's GIN indexes do (crm migration 0005). PostgreSQL only: elsewhere use `icontains`.
"""

from __future__ import annotations

from django.db.models import CharField, Lookup


def like_pattern(value: str) -> str:
    """'%value%' with LIKE's own characters escaped (backslash is PostgreSQL's default escape)."""
    return "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@CharField.register_lookup
class ILikeContains(Lookup):
    lookup_name = "ilike_contains"

    def get_db_prep_lookup(self, value, connection):
        return "%s", [like_pattern(str(value))]

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        return f"{lhs} ILIKE {rhs}", [*lhs_params, *rhs_params]
