"""crm.privacy: erasure scrubs every copy of a person's personal values and tells sync clients."""

import json

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied

from crm import privacy, services
from crm.history import history_context
from crm.models import IdempotencyRecord, Person, WebhookDelivery, WebhookSubscription
from tests.crm import factories as f

pytestmark = pytest.mark.django_db

PERSONAL = ("Anna", "Berg", "anna@example.com", "+44 20 7946 0001", "CFO")


@pytest.fixture
def admin(make_user):
    from accounts.models import User

    return make_user("privacy_admin", role=User.Role.ADMIN)


@pytest.fixture
def anna():
    return services.person_add(customer=f.customer(), first_name="Anna", last_name="Berg", email="anna@example.com",
                               phone="+44 20 7946 0001", job_title="CFO")


def delivery_about(person, subscription, event_type="person.created"):
    return WebhookDelivery.objects.create(
        subscription=subscription, event_type=event_type, object_id=person.pk,
        payload={"type": event_type, "object_id": person.pk, "data": {
            "id": person.pk, "first_name": person.first_name, "last_name": person.last_name, "email": person.email,
            "phone": person.phone, "job_title": person.job_title, "dmu_role": person.dmu_role}},
    )


@pytest.mark.postgres
def test_erasure_is_one_change_in_the_history_and_earlier_rows_are_scrubbed(anna, admin):
    from crm.history_models import PersonHistory

    services.person_update(person=anna, data={"job_title": "Finance director"})
    privacy.person_erase(person=anna, erased_by=admin)
    rows = list(PersonHistory.objects.filter(pgh_obj_id=anna.pk).order_by("pgh_id").select_related("pgh_context"))
    assert [r.pgh_label for r in rows] == ["insert", "update", "update"]
    text = json.dumps([[r.first_name, r.last_name, r.email, r.phone, r.job_title] for r in rows])
    for value in (*PERSONAL, "Finance director"):
        assert value not in text
    assert rows[-1].erased_at is not None
    assert rows[-1].pgh_context.metadata["via"] == "person_erase"
    assert rows[-1].pgh_context.metadata["user"] == admin.pk


def test_erasure_scrubs_queued_and_logged_webhook_payloads_about_the_person_only(anna, admin):
    subscription = WebhookSubscription.objects.create(owner=admin, name="ERP", url="https://erp.example.com/hook",
                                                      event_types=["person.created", "person.updated"])
    queued = delivery_about(anna, subscription)
    delivered = delivery_about(anna, subscription, "person.updated")
    delivered.status = WebhookDelivery.Status.SUCCEEDED
    delivered.save(update_fields=["status"])
    other = delivery_about(services.person_add(customer=anna.customer, last_name="Other", email="o@example.com"),
                           subscription)
    result = privacy.person_erase(person=anna, erased_by=admin)
    assert result["scrubbed"]["webhook_deliveries"] == 2
    for delivery in (queued, delivered):
        delivery.refresh_from_db()
        text = json.dumps(delivery.payload)
        for value in PERSONAL:
            assert value not in text
        assert delivery.payload["data"]["last_name"] == privacy.ERASED_LAST_NAME
        assert delivery.payload["data"]["dmu_role"] == anna.dmu_role
    other.refresh_from_db()
    assert other.payload["data"]["email"] == "o@example.com"


def test_erasure_moves_the_person_in_the_change_feed_as_an_update(anna, admin):
    before = Person.objects.get(pk=anna.pk)
    privacy.person_erase(person=anna, erased_by=admin)
    after = Person.objects.get(pk=anna.pk)
    assert (after.change_txid, after.change_seq) > (before.change_txid, before.change_seq)
    assert after.change_seq % 2 == 1  # an update: clients replace what they held


def test_erasure_scrubs_stored_api_replies_and_the_admin_log(anna, admin):
    record = IdempotencyRecord.objects.create(
        user=admin, key="k1", method="POST", path="/api/v1/people/", request_hash="x" * 64, status_code=201,
        response_body={"id": anna.pk, "first_name": "Anna", "last_name": "Berg", "email": "anna@example.com"},
    )
    entry = LogEntry.objects.create(user=admin, content_type=ContentType.objects.get_for_model(Person),
                                    object_id=str(anna.pk), object_repr="Anna Berg", action_flag=CHANGE)
    privacy.person_erase(person=anna, erased_by=admin)
    record.refresh_from_db()
    entry.refresh_from_db()
    assert record.response_body["email"] == ""
    assert record.response_body["last_name"] == privacy.ERASED_LAST_NAME
    assert entry.object_repr == privacy.ERASED_LAST_NAME


def test_erasure_keeps_the_relationship_fields(anna, admin):
    contact = f.contact(customer=anna.customer)
    contact.people.set([anna])
    with history_context(via="test"):
        privacy.person_erase(person=anna, erased_by=admin)
    anna.refresh_from_db()
    assert anna.customer_id == contact.customer_id
    assert list(contact.people.all()) == [anna]
    assert str(anna) == privacy.ERASED_LAST_NAME


def test_only_admins_may_erase_or_export(anna, make_user):
    rep = make_user("privacy_rep")
    with pytest.raises(PermissionDenied):
        privacy.person_erase(person=anna, erased_by=rep)
    with pytest.raises(PermissionDenied):
        privacy.person_personal_data(person=anna, requested_by=rep)
    anna.refresh_from_db()
    assert anna.erased_at is None


def test_person_data_command_exports_and_erases(anna, admin, tmp_path):
    from django.core.management import CommandError, call_command

    out = tmp_path / "anna.json"
    call_command("person_data", "export", str(anna.pk), "--by", admin.username, "--output", str(out))
    assert json.loads(out.read_text())["person"]["email"] == "anna@example.com"
    with pytest.raises(CommandError, match="not an admin"):
        call_command("person_data", "erase", str(anna.pk), "--by", "nobody")
    call_command("person_data", "erase", str(anna.pk), "--by", admin.username)
    anna.refresh_from_db()
    assert anna.email == ""
