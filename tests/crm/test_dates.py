"""The one date rule (crm/dates.py), as every write path sees it: services, bulk upserts, CSV imports."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from crm import dates, services
from crm.models import Contact, Event, Purchase
from tests.crm import factories as f

pytestmark = pytest.mark.django_db


def test_happened_accepts_1900_to_now_and_names_the_range_otherwise():
    assert dates.happened_error(date(1900, 1, 1), "The date") is None
    assert dates.happened_error(timezone.now(), "The time") is None
    assert dates.happened_error(date(1899, 12, 31), "The date") == "The date must be between 1 Jan 1900 and today."
    too_late = dates.happened_error(timezone.now() + timedelta(days=2), "The time")
    assert too_late == "The time cannot be in the future: give a date between 1 Jan 1900 and today."


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Kolkata"])
def test_times_around_1900_are_judged_by_the_local_day_in_every_time_zone(settings, zone):
    from zoneinfo import ZoneInfo

    from django.utils.timezone import override

    tz = ZoneInfo(zone)
    with override(tz):
        first = datetime(1900, 1, 1, tzinfo=tz)  # local midnight: the first moment allowed
        for moment in (first, first + timedelta(hours=13), first + timedelta(days=1, hours=2)):
            assert dates.happened_error(moment, "The time") is None, moment
            assert dates.happened_error(moment.astimezone(UTC), "The time") is None, moment
        before = first - timedelta(seconds=1)
        assert dates.happened_error(before, "The time") == "The time must be between 1 Jan 1900 and now."
        assert dates.happened_error(before.astimezone(UTC), "The time") == (
            "The time must be between 1 Jan 1900 and now.")
        assert dates.happened_error(timezone.now() + timedelta(hours=13), "The time") == (
            "The time cannot be in the future: give a date between 1 Jan 1900 and today.")


def test_planned_accepts_up_to_two_years_ahead():
    latest = timezone.localdate() + timedelta(days=dates.FOLLOW_UP_DAYS_AHEAD)
    assert dates.planned_error(latest, "The follow-up date") is None
    message = dates.planned_error(latest + timedelta(days=1), "The follow-up date")
    assert message == f"The follow-up date must be between 1 Jan 1900 and {latest.day} {latest:%b %Y}."


def test_check_planned_raises_a_field_error_for_other_callers():
    with pytest.raises(ValidationError) as excinfo:
        dates.check_planned(date(1000, 1, 1), field="due_on", what="The due date")
    assert list(excinfo.value.message_dict) == ["due_on"]


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: services.contact_log(customer=c, salesperson=None, channel="call", subject="x",
                                        occurred_at=datetime(1, 1, 1, tzinfo=UTC)), "occurred_at"),
        (lambda c: services.contact_log(customer=c, salesperson=None, channel="call", subject="x",
                                        follow_up_on=timezone.localdate() + timedelta(days=800)), "follow_up_on"),
        (lambda c: services.event_record(customer=c, kind="funding", occurred_at=datetime(1000, 1, 1, tzinfo=UTC)),
         "occurred_at"),
        (lambda c: services.event_record(customer=c, kind="funding", occurred_at=timezone.now() + timedelta(days=3)),
         "occurred_at"),
        (lambda c: services.purchase_record(customer=c, amount=Decimal(5),
                                            purchased_at=timezone.now() + timedelta(days=30)), "purchased_at"),
        (lambda c: services.holding_add(customer=c, product=f.product(), since=date(1850, 1, 1)), "since"),
        (lambda c: services.holding_add(customer=c, product=f.product(), since=date(2025, 1, 1),
                                        until=date(2200, 1, 1)), "until"),
        (lambda c: services.customer_mark_lost(customer=c, reason="price", lost_on=date(1800, 1, 1)), "lost_on"),
    ],
)
def test_services_refuse_dates_that_make_no_sense_with_a_field_message(call, field):
    customer = f.customer()
    with pytest.raises(ValidationError) as excinfo:
        call(customer)
    assert field in excinfo.value.message_dict
    assert "1 Jan 1900" in excinfo.value.message_dict[field][0]
    assert not Contact.objects.exists()
    assert not Event.objects.exists()
    assert not Purchase.objects.exists()


def test_usage_period_must_have_started_by_today():
    holding = f.holding(since=date(2025, 1, 1))
    start = timezone.localdate() + timedelta(days=40)
    with pytest.raises(ValidationError) as excinfo:
        services.usage_record(holding=holding, period_start=start, period_end=start + timedelta(days=10), used=1)
    assert "period_start" in excinfo.value.message_dict


def test_bulk_upsert_names_the_record_with_a_bad_date_and_writes_nothing():
    customer = f.customer()
    good = {"external_id": "E1", "customer": customer, "kind": "funding", "occurred_at": timezone.now()}
    bad = {**good, "external_id": "E2", "occurred_at": datetime(1000, 1, 1, tzinfo=UTC)}
    with pytest.raises(services.RecordErrors) as excinfo:
        services.records_upsert(model=Event, records=[good, bad], existing={})
    assert list(excinfo.value.errors) == [1]
    assert "occurred_at" in excinfo.value.errors[1]
    assert not Event.objects.exists()


def test_csv_import_names_the_line_with_a_date_before_1900(tmp_path):
    from crm.imports import ImportError_, import_purchases_csv

    f.customer(external_id="C1")
    path = tmp_path / "p.csv"
    path.write_text("customer_external_id,purchased_at,amount\nC1,2025-03-01,10\nC1,0001-01-01,12\n")
    with pytest.raises(ImportError_) as excinfo:
        import_purchases_csv(path)
    assert excinfo.value.line == 3
    assert "1 Jan 1900" in str(excinfo.value)
    assert not Purchase.objects.exists()
