"""seed_demo: deterministic for a seed, and the ground truth it reports is really in the data."""

import hashlib
import json
from datetime import date, timedelta

import pytest
from django.core.management import call_command
from django.db.models import Max
from django.utils import timezone

from accounts.models import User
from crm.demo.seed import seed_demo
from crm.models import Contact, Customer, Event, Holding, Purchase, Usage

pytestmark = pytest.mark.django_db(transaction=True)

N = 400


def digest() -> str:
    """A fingerprint of the generated facts that ignores database ids and creation times."""
    h = hashlib.sha256()
    for row in Purchase.objects.order_by("customer__external_id", "purchased_at", "order_ref", "amount").values_list(
        "customer__external_id", "product__sku", "quantity", "amount", "purchased_at", "order_ref"
    ):
        h.update(repr(row).encode())
    for model, fields in (
        (Holding, ("customer__external_id", "product__sku", "quantity", "since", "status")),
        (Event, ("customer__external_id", "kind", "occurred_at")),
        (Customer, ("external_id", "name", "owner__username", "lifecycle_stage", "lost_on")),
    ):
        for row in model.objects.order_by(*fields).values_list(*fields):
            h.update(repr(row).encode())
    return h.hexdigest()


def wipe():
    Customer.objects.all().delete()


def test_same_seed_gives_the_same_data_and_another_seed_does_not():
    seed_demo(customers=N, seed=7)
    first = digest()
    wipe()
    seed_demo(customers=N, seed=7)
    assert digest() == first
    wipe()
    seed_demo(customers=N, seed=8)
    assert digest() != first


def test_users_and_volumes():
    truth = seed_demo(customers=N, seed=1)
    assert set(User.objects.values_list("username", flat=True)) >= {
        "admin", "manager_north", "manager_south", "rep_north_1", "rep_south_3"
    }
    assert User.objects.get(username="rep_north_2").team.manager.username == "manager_north"
    assert User.objects.get(username="admin").check_password("demo-pass-2026")
    assert Customer.objects.count() == N
    lines = Purchase.objects.count()
    assert lines == truth["purchase_lines"]
    assert 5 * N <= lines <= 20 * N  # about ten lines a customer


def test_planted_associations_hold_in_the_holdings():
    truth = seed_demo(customers=2000, seed=3)
    for assoc in truth["associations"]:
        holders = set(Holding.objects.filter(product__sku=assoc["antecedent"]).values_list("customer_id", flat=True))
        both = Holding.objects.filter(product__sku=assoc["consequent"], customer_id__in=holders).count()
        measured = both / len(holders)
        assert abs(measured - assoc["confidence"]) < 0.1, (assoc, measured)
        base = Holding.objects.filter(product__sku=assoc["consequent"]).exclude(customer_id__in=holders)
        assert base.count() / (2000 - len(holders)) < 0.2


def test_planted_near_capacity_holdings_run_near_capacity():
    truth = seed_demo(customers=1000, seed=4)
    assert truth["near_capacity"]
    for planted in truth["near_capacity"][:20]:
        recent = Usage.objects.filter(
            holding__customer__external_id=planted["customer"], holding__product__sku=planted["sku"]
        ).order_by("-period_start")[:3]
        assert len(recent) == 3
        assert all(u.used >= u.capacity * 9 / 10 for u in recent)


def test_loss_signals_are_enriched_before_losses():
    truth = seed_demo(customers=2000, seed=5)
    window = timedelta(days=truth["events_before_loss"]["window_days"])
    lost = list(Customer.objects.filter(lifecycle_stage="lost").values_list("pk", "lost_on"))
    assert len(lost) == truth["lost_customers"] > 0
    with_signal = sum(
        Event.objects.filter(
            customer_id=pk, kind__in=truth["events_before_loss"]["kinds"],
            occurred_at__date__gte=lost_on - window, occurred_at__date__lte=lost_on,
        ).exists()
        for pk, lost_on in lost
    )
    assert with_signal / len(lost) > 0.6


def test_contact_rhythm_differs_by_owner():
    seed_demo(customers=1000, seed=6)
    per_customer = {}
    for username in ("rep_north_1", "rep_south_3"):
        customers = Customer.objects.filter(owner__username=username).exclude(lifecycle_stage="lost").count()
        per_customer[username] = Contact.objects.filter(salesperson__username=username).count() / customers
    assert per_customer["rep_north_1"] > 3 * per_customer["rep_south_3"]


def test_command_writes_truth_and_if_empty_leaves_data_alone(tmp_path, capsys):
    truth_file = tmp_path / "truth.json"
    call_command("seed_demo", customers=50, seed=2, truth_file=str(truth_file), verbosity=0)
    truth = json.loads(truth_file.read_text())
    assert truth["customers"] == 50
    assert truth["bgnbd"]["r"] > 0
    assert truth["time_unit"] == "days"
    before = Purchase.objects.count()
    call_command("seed_demo", customers=50, seed=9, if_empty=True, truth_file=str(truth_file), verbosity=0)
    assert Purchase.objects.count() == before
    assert "demo-pass-2026" in capsys.readouterr().out


def test_histories_end_today_with_recent_events_and_follow_ups_due_this_week():
    today = timezone.localdate()
    truth = seed_demo(customers=N, seed=10)
    assert truth["as_of"] == today.isoformat()
    last_purchase = Purchase.objects.aggregate(last=Max("purchased_at"))["last"]
    assert (today - last_purchase.date()).days <= 7
    assert not Purchase.objects.filter(purchased_at__date__gt=today).exists()
    since = timezone.now() - timedelta(days=30)
    rep = User.objects.get(username="rep_north_1")
    # What My day shows a new user: events of the last 30 days and follow-ups due this week.
    assert Event.objects.filter(customer__owner=rep, occurred_at__gte=since).exists()
    open_follow_ups = Contact.objects.filter(salesperson=rep, follow_up_on__isnull=False, follow_up_done_at__isnull=True)
    assert open_follow_ups.filter(follow_up_on__gte=today - timedelta(days=7), follow_up_on__lte=today).exists()
    assert not open_follow_ups.filter(follow_up_on__lt=today - timedelta(days=7)).exists()  # old ones were done
    assert Contact.objects.filter(follow_up_done_at__isnull=False).exists()
    assert truth["open_follow_ups"] == Contact.objects.filter(
        follow_up_on__isnull=False, follow_up_done_at__isnull=True).count()


def test_as_of_moves_the_whole_history():
    seed_demo(customers=100, seed=12, as_of=date(2025, 3, 31))
    last = Purchase.objects.aggregate(last=Max("purchased_at"))["last"].date()
    assert date(2025, 3, 1) <= last <= date(2025, 3, 31)
    assert not Event.objects.filter(occurred_at__date__gt=date(2025, 3, 31)).exists()
