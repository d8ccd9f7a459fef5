"""Writes of the next-best-action record: what was on each salesperson's list, once a day.

The list itself is computed on demand (crm/selectors/next_actions.py); this keeps the trace that
managers' "acted on" counts are read from. An item is recorded the first day it is on the list
and not again while an earlier record of it is within NBA_ACTED_WINDOW_DAYS, so an item listed
for a week counts once. Safe to call many times a day: the first call of the day writes, the
others find the day done (and the unique constraint settles a race between two).
"""

from __future__ import annotations

from datetime import date, timedelta

from django.conf import settings
from django.utils import timezone

from crm.models import NextActionShown


def next_actions_record_shown(*, lists: dict, on: date | None = None) -> int:
    """Record the items of each owner's list (owner id -> NextActionList) not yet recorded; returns rows written.

    Owners already recorded on `on` are skipped, so a list is written once a day per salesperson.
    One query to read what is recorded, one insert (a single statement) for what is new.
    """
    on = on or timezone.localdate()
    owner_ids = [pk for pk, nba in lists.items() if nba.items]
    if not owner_ids:
        return 0
    since = on - timedelta(days=settings.NBA_ACTED_WINDOW_DAYS)
    recorded = list(
        NextActionShown.objects.filter(user_id__in=owner_ids, shown_on__gte=since, shown_on__lte=on).values_list(
            "user_id", "key", "shown_on"
        )
    )
    done = {pk for pk, _key, day in recorded if day == on}
    todo = [pk for pk in owner_ids if pk not in done]
    if not todo:
        return 0
    seen = {(pk, key) for pk, key, _day in recorded}
    rows = [
        NextActionShown(
            user_id=pk, customer_id=item.customer_id, kind=item.kind, key=item.key, object_id=item.object_id,
            expected_value=item.expected_value, shown_on=on,
        )
        for pk in todo
        for item in lists[pk].items
        if (pk, item.key) not in seen
    ]
    if not rows:  # nothing new today: the earlier records stand
        return 0
    NextActionShown.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
    return len(rows)


def own_next_actions(user, **kwargs):
    """The user's own list, recorded the first time it is computed today (My day, the full page, the API)."""
    from crm.selectors.next_actions import next_actions

    result = next_actions(user, **kwargs)
    next_actions_record_shown(lists={user.pk: result})
    return result


OWNER_BATCH = 200  # salespeople whose lists are computed together (a fixed number of queries per batch)


def next_actions_record_all(*, on: date | None = None) -> int:
    """The nightly pass: compute and record the list of every active salesperson and manager; returns rows written.

    Each list is limited to the owner's own book (the selector never goes beyond it), so the
    lists are computed with the whole-book view, a batch of owners at a time.
    """
    from accounts.models import User
    from crm.selectors.next_actions import next_actions_for

    on = on or timezone.localdate()
    system = User(role=User.Role.ADMIN, is_active=True)  # reads every book; each list stays its owner's
    owners = list(
        User.objects.filter(is_active=True, role__in=[User.Role.SALESPERSON, User.Role.MANAGER]).order_by("pk")
    )
    written = 0
    for start in range(0, len(owners), OWNER_BATCH):
        lists = next_actions_for(system, owners[start : start + OWNER_BATCH], today=on)
        written += next_actions_record_shown(lists=lists, on=on)
    return written
