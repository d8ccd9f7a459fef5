"""LIKE patterns for the global search's `ILIKE '%...%'`, which pg_trgm's GIN indexes serve (crm migration 0007)."""

from __future__ import annotations


def like_pattern(value: str) -> str:
    """'%value%' with LIKE's own characters escaped (backslash is PostgreSQL's default escape)."""
    return "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
