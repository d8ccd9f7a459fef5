"""Dates that make sense: the one rule for every date and time a person or a client system enters.

Nothing before 1900; what happened (a contact, an event, a purchase, a usage period's start,
a customer's acquisition or loss) not in the future; what is planned (a follow-up, a task)
at most two years ahead; holdings may start up to a year ahead and end or renew up to ten
years ahead. Model validation calls `validate_record_dates`, so the pages, the API, the
admin and imports (through the services) give the same answer; `check_happened` and
`check_planned` serve any other date (a task's due date, a snooze).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from django.core.exceptions import ValidationError
from django.utils import timezone

EARLIEST = date(1900, 1, 1)
# Something logged a little ahead of the clock (time zones, a meeting about to start) is still "now".
HAPPENED_GRACE = timedelta(hours=12)
FOLLOW_UP_DAYS_AHEAD = 730  # two years
HOLDING_START_DAYS_AHEAD = 366
HOLDING_END_DAYS_AHEAD = 3653  # ten years: long contracts and renewal dates
USAGE_END_DAYS_AHEAD = 366  # a period may end after today (this month, this quarter)

HAPPENED = "happened"

# model label -> [(field, what the date is, rule)]: HAPPENED, or how many days ahead it may be.
RECORD_DATES: dict[str, list[tuple[str, str, str | int]]] = {
    "crm.customer": [("acquired_on", "The acquisition date", HAPPENED), ("lost_on", "The lost date", HAPPENED)],
    "crm.purchase": [("purchased_at", "The purchase date", HAPPENED)],
    "crm.holding": [
        ("since", "The start date", HOLDING_START_DAYS_AHEAD),
        ("until", "The end or renewal date", HOLDING_END_DAYS_AHEAD),
    ],
    "crm.usage": [
        ("period_start", "The start of the period", HAPPENED),
        ("period_end", "The end of the period", USAGE_END_DAYS_AHEAD),
    ],
    "crm.contact": [
        ("occurred_at", "The contact time", HAPPENED),
        ("follow_up_on", "The follow-up date", FOLLOW_UP_DAYS_AHEAD),
        ("follow_up_done_at", "The follow-up completion time", HAPPENED),
    ],
    "crm.event": [("occurred_at", "The event date", HAPPENED)],
}


def _day(value: date | datetime) -> date:
    if isinstance(value, datetime):
        if timezone.is_naive(value):
            value = timezone.make_aware(value)
        return timezone.localdate(value)
    return value


def _format(day: date) -> str:
    return f"{day.day} {day:%b %Y}"


# A moment surely on or after 1 Jan 1900 in any time zone (their offsets are under a day): a
# time after it and before now needs no conversion to the local day (bulk writes check many).
_SURELY_FROM_EARLIEST = datetime(1900, 1, 2, tzinfo=UTC)


def happened_error(value: date | datetime | None, what: str) -> str | None:
    """The message for a date or time that should be in the past (from 1900), or None when it is."""
    if (type(value) is datetime and value.utcoffset() is not None
            and _SURELY_FROM_EARLIEST <= value <= timezone.now() + HAPPENED_GRACE):
        return None
    if not isinstance(value, date):
        return None
    if _day(value) < EARLIEST:
        return f"{what} must be between {_format(EARLIEST)} and {'now' if isinstance(value, datetime) else 'today'}."
    if isinstance(value, datetime):
        aware = timezone.make_aware(value) if timezone.is_naive(value) else value
        late = aware > timezone.now() + HAPPENED_GRACE
    else:
        late = value > timezone.localdate() + timedelta(days=1)  # one day of grace across time zones
    if late:
        return f"{what} cannot be in the future: give a date between {_format(EARLIEST)} and today."
    return None


def planned_error(value: date | datetime | None, what: str, *, days_ahead: int = FOLLOW_UP_DAYS_AHEAD) -> str | None:
    """The message for a date that may be ahead (at most `days_ahead` days from today), or None."""
    if not isinstance(value, date):
        return None
    latest = timezone.localdate() + timedelta(days=days_ahead)
    day = _day(value)
    if day < EARLIEST or day > latest:
        return f"{what} must be between {_format(EARLIEST)} and {_format(latest)}."
    return None


def check_happened(value, *, field: str, what: str) -> None:
    """Raise ValidationError({field: message}) unless `value` is from 1900 to now."""
    message = happened_error(value, what)
    if message:
        raise ValidationError({field: message})


def check_planned(value, *, field: str, what: str, days_ahead: int = FOLLOW_UP_DAYS_AHEAD) -> None:
    """Raise ValidationError({field: message}) unless `value` is from 1900 to `days_ahead` days from today."""
    message = planned_error(value, what, days_ahead=days_ahead)
    if message:
        raise ValidationError({field: message})


def date_error(model_label: str, field: str, value) -> str | None:
    """The message for `value` as the date `field` of a `model_label` record ("crm.contact"), or None."""
    for name, what, rule in RECORD_DATES.get(model_label, ()):
        if name == field:
            return happened_error(value, what) if rule == HAPPENED else planned_error(value, what, days_ahead=rule)
    return None


def record_date_errors(instance) -> dict[str, list[str]]:
    """{field: [message]} for the dates of a CRM record that do not make sense."""
    label = instance._meta.label_lower
    errors: dict[str, list[str]] = {}
    for field, _what, _rule in RECORD_DATES.get(label, ()):
        message = date_error(label, field, getattr(instance, field, None))
        if message:
            errors[field] = [message]
    return errors


def validate_record_dates(instance) -> None:
    errors = record_date_errors(instance)
    if errors:
        raise ValidationError(errors)
