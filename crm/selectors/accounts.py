"""Reads for keeping accounts: possible duplicates of an account being created or edited.

Only accounts the user may see are ever looked at, so a hint never reveals an account
hidden from them (another team's customer with the same name stays invisible).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from django.db.models import Q, Value
from django.db.models.functions import Replace

from crm.models import Customer

# Words that do not tell two companies apart ("Acme Ltd" is "ACME Limited").
LEGAL_WORDS = {
    "the", "ltd", "limited", "inc", "incorporated", "llc", "llp", "plc", "gmbh", "ag", "sa", "sas", "sarl", "srl",
    "spa", "bv", "nv", "oy", "ab", "as", "aps", "kg", "co", "corp", "corporation", "company", "group", "and",
}
# Domains of free mail providers: sharing one says nothing about being the same customer.
FREE_MAIL = {
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "yahoo.com", "icloud.com", "me.com",
    "aol.com", "gmx.de", "gmx.net", "web.de", "proton.me", "protonmail.com", "mail.com", "yandex.ru", "msn.com",
}
PHONE_TAIL = 8  # compare the last digits: "+44 113 496 0000" and "0113 4960000" are the same line
MAX_HINTS = 5
NAME_CANDIDATES = 200


def normalised_name(name: str) -> str:
    """Lower case, accents and punctuation removed, legal-form words dropped: "Acme Tools, Ltd." -> "acme tools"."""
    text = unicodedata.normalize("NFKD", name or "").encode("ascii", "ignore").decode().lower()
    words = [w for w in re.split(r"[^a-z0-9]+", text.replace("&", " and ")) if w and w not in LEGAL_WORDS]
    return " ".join(words)


def email_domain(email: str) -> str:
    return email.rsplit("@", 1)[1].strip().lower() if email and "@" in email else ""


def phone_digits(phone: str) -> str:
    return re.sub(r"\D", "", phone or "")


def _digits_expr(field: str):
    expr = field
    for ch in (" ", "-", "(", ")", ".", "/", "+"):
        expr = Replace(expr, Value(ch), Value(""))
    return expr


@dataclass
class DuplicateHint:
    customer: Customer
    reasons: list[str]


def possible_duplicates(
    user, *, name: str = "", email: str = "", phone: str = "", exclude_pk: int | None = None, limit: int = MAX_HINTS
) -> list[DuplicateHint]:
    """Accounts `user` can see with the same normalised name, e-mail domain or phone (at most two queries)."""
    visible = Customer.objects.visible_to(user).select_related("owner")
    if exclude_pk is not None:
        visible = visible.exclude(pk=exclude_pk)
    found: dict[int, DuplicateHint] = {}

    def note(customer: Customer, reason: str) -> None:
        found.setdefault(customer.pk, DuplicateHint(customer, [])).reasons.append(reason)

    wanted = normalised_name(name)
    if wanted:
        # Every word of the normalised name appears in a matching name: narrow by all of them.
        candidates = visible
        for word in sorted(set(wanted.split()), key=len, reverse=True)[:4]:
            candidates = candidates.filter(name__icontains=word)
        for customer in candidates.order_by("name", "id")[:NAME_CANDIDATES]:
            if normalised_name(customer.name) == wanted:
                note(customer, "same name")
    domain = email_domain(email)
    digits = phone_digits(phone)
    contact_q = Q()
    if domain and domain not in FREE_MAIL:
        contact_q |= Q(email__iendswith=f"@{domain}") | Q(website__icontains=f"//{domain}") | Q(
            website__icontains=f".{domain}")
    elif email:
        contact_q |= Q(email__iexact=email.strip())
    if len(digits) >= 6:
        contact_q |= Q(phone_digits__endswith=digits[-PHONE_TAIL:])
    if contact_q:
        rows = visible.annotate(phone_digits=_digits_expr("phone")).filter(contact_q).order_by("name", "id")[:limit * 4]
        for customer in rows:
            if domain and (email_domain(customer.email) == domain or domain in (customer.website or "").lower()):
                note(customer, "same e-mail domain" if domain not in FREE_MAIL else "same e-mail")
            if len(digits) >= 6 and phone_digits(customer.phone).endswith(digits[-PHONE_TAIL:]):
                note(customer, "same phone")
    return list(found.values())[:limit]
