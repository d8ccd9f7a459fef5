"""Writes that lost a race with a concurrent transaction: recognise them and run them again.

Two requests that write the same rows at the same time can meet in three ways, none of which
says anything about the records themselves: PostgreSQL breaks a deadlock (40P01) or a
serialization failure (40001) by failing one of them, or one request inserts an external_id
that another request created after this one looked it up (`ConcurrentWrite`). Sent again,
the write sees the other request's rows and succeeds. `retrying` does that inside the
server a few times; if the race persists the API answers 409 with Retry-After
(crm.api.problems), so a client knows to send the same request again, never that its
records are invalid.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import DatabaseError, connection

RETRYABLE_PGCODES = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure
WRITE_ATTEMPTS = 4  # the first try and three more
RETRY_PAUSE_SECONDS = (0.02, 0.1)  # a random pause in this range, times the attempt number
RETRY_AFTER_SECONDS = 1  # what a client is told to wait when the server gave up

T = TypeVar("T")


class ConcurrentWrite(Exception):
    """A record of the batch was created by a concurrent request after this one looked it up."""

    def __init__(self, external_ids: list[str] | None = None):
        self.external_ids = list(external_ids or [])
        super().__init__(
            "records were written by a concurrent request" + (f": {', '.join(self.external_ids[:5])}"
                                                              if self.external_ids else "")
        )


def lost_a_race(exc: BaseException) -> bool:
    """Did this write fail only because a concurrent transaction won (so that running it again can succeed)?"""
    if isinstance(exc, ConcurrentWrite):
        return True
    if isinstance(exc, DatabaseError):
        return getattr(exc.__cause__, "pgcode", None) in RETRYABLE_PGCODES or (
            getattr(exc, "pgcode", None) in RETRYABLE_PGCODES
        )
    return False


def retrying(write: Callable[[], T], *, attempts: int | None = None) -> T:
    """Run `write()` (which holds its own transaction.atomic block); run it again when it lost a race.

    Only when its transaction (or savepoint) has been rolled back and the connection is usable:
    the error of the last attempt, or of a write that failed for another reason, propagates.
    """
    attempts = attempts or WRITE_ATTEMPTS
    for attempt in range(1, attempts + 1):
        try:
            return write()
        except Exception as exc:
            if attempt == attempts or not lost_a_race(exc) or connection.needs_rollback:
                raise
            time.sleep(random.uniform(*RETRY_PAUSE_SECONDS) * attempt)
    raise AssertionError("unreachable")
