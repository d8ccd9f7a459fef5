"""The import page: upload, map, preview with each row's errors, then import all or nothing with progress."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import TestCase
from django.urls import reverse

from crm.import_models import ImportFileChunk, ImportJob, ImportMapping
from crm.models import Customer, Person
from tests.crm import factories as f

pytestmark = pytest.mark.django_db

GOOD = "Number,Company,Mail\nK-1,Acme,sales@acme.example\nK-2,Beta,\n"
BAD = "Number,Company,Mail\nK-1,Acme,sales@acme.example\nK-2,Beta,not-an-address\nK-3,,\n"
MAPPING = {"map-0": "external_id", "map-1": "name", "map-2": "email"}


@pytest.fixture(autouse=True)
def _tasks_in_the_request(settings):
    settings.IMPORT_IN_BACKGROUND = False  # the task itself, in the request (as with a broker in tests)


def preview(client, job, data):
    """Post the mapping; the check it queues runs (after the commit) and the page shows its preview."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = client.post(reverse("crm:import_preview", args=[job.pk]), data)
    if response.status_code != 302:
        return response
    return client.get(response.url)


def upload(client, text: str, kind: str = "customers", name: str = "book.csv"):
    return client.post(
        reverse("crm:import_start"),
        {"kind": kind, "file": SimpleUploadedFile(name, text.encode(), content_type="text/csv")},
    )


def test_reps_get_403(client, sales_org):
    client.force_login(sales_org["north_rep1"])
    assert client.get(reverse("crm:import_start")).status_code == 403
    assert upload(client, GOOD).status_code == 403
    assert ImportJob.objects.count() == 0


def test_the_nav_links_the_import_page_for_managers_only(client, sales_org):
    client.force_login(sales_org["north_manager"])
    assert reverse("crm:import_start") in client.get(reverse("crm:my_day")).content.decode()
    client.force_login(sales_org["north_rep1"])
    assert reverse("crm:import_start") not in client.get(reverse("crm:my_day")).content.decode()


def test_a_bad_row_shows_in_the_preview_and_nothing_is_imported(client, sales_org):
    client.force_login(sales_org["north_manager"])
    response = upload(client, BAD)
    job = ImportJob.objects.get()
    assert response.url == reverse("crm:import_detail", args=[job.pk])
    assert job.header == ["Number", "Company", "Mail"]
    page = preview(client, job, MAPPING)
    html = page.content.decode()
    assert page.status_code == 200
    assert "2 errors in the whole file" in html
    assert "email (column &#x27;Mail&#x27;): Enter a valid email address." in html
    assert "line 4: name (column &#x27;Company&#x27;): This field is required." in html
    assert 'id="import-run"' not in html
    assert Customer.objects.count() == 0


def test_a_fixed_file_previews_clean_and_imports(client, sales_org, django_capture_on_commit_callbacks):
    manager = sales_org["north_manager"]
    client.force_login(manager)
    upload(client, BAD)
    job = ImportJob.objects.get()
    preview(client, job, MAPPING)
    fixed = SimpleUploadedFile("book-fixed.csv", GOOD.encode(), content_type="text/csv")
    client.post(reverse("crm:import_replace_file", args=[job.pk]), {"file": fixed})
    detail = client.get(reverse("crm:import_detail", args=[job.pk])).content.decode()
    assert '<option value="email" selected>' in detail  # the mapping stays with the corrected file
    shown = preview(client, job, MAPPING).content.decode()
    assert "All 2 rows are good: 2 to create" in shown
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("crm:import_run", args=[job.pk]), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    job.refresh_from_db()
    assert job.status == ImportJob.Status.SUCCEEDED
    assert (job.rows_done, job.created) == (2, 2)
    assert ImportFileChunk.objects.filter(job=job).count() == 0  # the stored file is gone once imported
    assert set(Customer.objects.values_list("external_id", "owner")) == {("K-1", manager.pk), ("K-2", manager.pk)}
    progress = client.get(reverse("crm:import_progress", args=[job.pk])).content.decode()
    assert "Imported 2 rows: 2 created" in progress


def test_an_import_that_fails_writes_nothing_and_says_why(client, sales_org, django_capture_on_commit_callbacks):
    client.force_login(sales_org["north_manager"])
    upload(client, GOOD)
    job = ImportJob.objects.get()
    preview(client, job, MAPPING)
    f.customer(external_id="K-2", owner=sales_org["south_rep1"])  # taken meanwhile, by someone they cannot see
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("crm:import_run", args=[job.pk]))
    job.refresh_from_db()
    assert job.status == ImportJob.Status.FAILED
    assert job.errors == [
        "line 3: external_id (column 'Number'): external_id 'K-2' is already in use; choose another one."
    ]
    assert Customer.objects.filter(external_id="K-1").count() == 0


def test_the_last_mapping_is_remembered_for_the_next_file_of_that_kind(client, sales_org):
    manager = sales_org["north_manager"]
    client.force_login(manager)
    upload(client, GOOD)
    first = ImportJob.objects.get()
    preview(client, first, MAPPING)
    assert ImportMapping.objects.get(user=manager, kind="customers").mapping == {
        "Number": "external_id",
        "Company": "name",
        "Mail": "email",
    }
    upload(client, GOOD, name="next.csv")
    second = ImportJob.objects.exclude(pk=first.pk).get()
    html = client.get(reverse("crm:import_detail", args=[second.pk])).content.decode()
    assert '<option value="external_id" selected>' in html
    assert '<option value="name" selected>' in html
    assert '<option value="email" selected>' in html


def test_the_check_shows_its_progress_then_asks_for_the_preview(client, sales_org):
    client.force_login(sales_org["north_manager"])
    upload(client, GOOD)
    job = ImportJob.objects.get()
    client.post(reverse("crm:import_preview", args=[job.pk]), MAPPING)  # queued: runs once this commits
    job.refresh_from_db()
    assert job.status == ImportJob.Status.CHECKING
    polled = client.get(reverse("crm:import_progress", args=[job.pk]), {"step": "check"})
    assert "Checking every line, writing nothing" in polled.content.decode()
    from crm.import_jobs import import_job_check

    import_job_check(job_id=job.pk)
    done = client.get(reverse("crm:import_progress", args=[job.pk]), {"step": "check"})
    assert done["HX-Refresh"] == "true"
    assert "All 2 rows are good" in client.get(reverse("crm:import_detail", args=[job.pk])).content.decode()


def test_a_mapping_missing_a_required_field_is_refused(client, sales_org):
    client.force_login(sales_org["north_manager"])
    upload(client, GOOD)
    job = ImportJob.objects.get()
    response = preview(client, job, {"map-0": "external_id"})
    assert response.status_code == 422
    assert "no column for the required field(s) name" in response.content.decode()


def test_someone_elses_import_is_not_there(client, sales_org):
    client.force_login(sales_org["north_manager"])
    upload(client, GOOD)
    job = ImportJob.objects.get()
    client.force_login(sales_org["south_manager"])
    assert client.get(reverse("crm:import_detail", args=[job.pk])).status_code == 404
    assert client.post(reverse("crm:import_run", args=[job.pk])).status_code == 404


def test_managers_cannot_import_the_catalogue(client, sales_org):
    client.force_login(sales_org["north_manager"])
    response = upload(client, "external_id,sku,name,family,list_price\nX,S,N,F,1\n", kind="products")
    assert response.status_code == 422
    assert ImportJob.objects.count() == 0


def test_an_empty_file_is_refused(client, sales_org):
    client.force_login(sales_org["north_manager"])
    response = upload(client, "")
    assert response.status_code == 422
    assert "The file is empty." in response.content.decode()


def test_people_import_refers_to_customers_by_external_id(client, sales_org, django_capture_on_commit_callbacks):
    manager = sales_org["north_manager"]
    f.customer(external_id="C1", owner=sales_org["north_rep1"])
    client.force_login(manager)
    upload(client, "external_id,customer_external_id,last_name\nP1,C1,Doe\n", kind="people")
    job = ImportJob.objects.get()
    detail = client.get(reverse("crm:import_detail", args=[job.pk])).content.decode()
    assert '<option value="customer_external_id" selected>' in detail  # columns named as fields map themselves
    preview(client, job, {"map-0": "external_id", "map-1": "customer_external_id", "map-2": "last_name"})
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("crm:import_run", args=[job.pk]))
    assert Person.objects.get(external_id="P1").customer.external_id == "C1"


def test_purchase_lines_keyed_by_a_mapped_column_preview_and_import_as_updates(
    client, sales_org, django_capture_on_commit_callbacks
):
    from decimal import Decimal

    from crm.models import Purchase

    acme = f.customer(external_id="C1", owner=sales_org["north_rep1"])
    keyless = f.purchase(customer=acme, amount=Decimal("7.00"), unit_price=Decimal("7.00"))
    f.purchase(customer=acme, external_id="ERP-1", amount=Decimal("10.00"))
    client.force_login(sales_org["north_manager"])
    text = (f"id,Line,Client,Date,Total\n,ERP-1,C1,2026-01-15T10:00:00+00:00,12.00\n,ERP-2,C1,2026-01-16,5\n"
            f"{keyless.pk},,C1,2026-01-15T10:00:00+00:00,7.00\n,ERP-2,C1,2026-01-17,5\n")
    upload(client, text, kind="purchases")
    job = ImportJob.objects.get()
    detail = client.get(reverse("crm:import_detail", args=[job.pk])).content.decode()
    assert '<option value="id" selected>' in detail
    mapping = {"map-0": "id", "map-1": "external_id", "map-2": "customer_external_id", "map-3": "purchased_at",
               "map-4": "amount"}
    shown = preview(client, job, mapping).content.decode()
    assert "line 5: external_id &#x27;ERP-2&#x27; is also on line 3; each purchase line once per file" in shown
    fixed = SimpleUploadedFile("fixed.csv", text.rsplit("\n", 2)[0].encode() + b"\n", content_type="text/csv")
    client.post(reverse("crm:import_replace_file", args=[job.pk]), {"file": fixed})
    shown = preview(client, job, mapping).content.decode()
    assert "All 3 rows are good: 1 to create, 1 to update, 1 unchanged" in shown
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("crm:import_run", args=[job.pk]))
    job.refresh_from_db()
    assert job.status == ImportJob.Status.SUCCEEDED
    assert (job.created, job.updated, job.unchanged) == (1, 1, 1)
    assert sorted(Purchase.objects.values_list("external_id", "amount"), key=str) == [
        ("ERP-1", Decimal("12.00")), ("ERP-2", Decimal("5.00")), (None, Decimal("7.00"))
    ]


def test_a_large_file_is_read_in_chunks(client, sales_org, django_capture_on_commit_callbacks, settings):
    from crm import import_jobs

    settings.IMPORT_MAX_BYTES = 10 * 1024 * 1024
    rows = "".join(f"K-{i},Customer {i} {'x' * 90},\n" for i in range(12_000))  # over a megabyte
    client.force_login(sales_org["admin"])
    upload(client, "Number,Company,Mail\n" + rows)
    job = ImportJob.objects.get()
    assert job.chunks.count() > 1
    assert job.rows_estimate == 12_000
    assert import_jobs.CHUNK_BYTES < job.file_size
    preview(client, job, MAPPING)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("crm:import_run", args=[job.pk]))
    job.refresh_from_db()
    assert job.created == 12_000


@pytest.mark.postgres
def test_the_history_says_who_imported_and_how(client, sales_org, django_capture_on_commit_callbacks):
    from crm import history

    manager = sales_org["north_manager"]
    client.force_login(manager)
    upload(client, GOOD)
    job = ImportJob.objects.get()
    preview(client, job, MAPPING)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("crm:import_run", args=[job.pk]))
    customer = Customer.objects.get(external_id="K-1")
    entry = history.account_history(customer.pk, manager)[0]
    assert entry.op == "created"
    assert (entry.actor.get("via"), entry.actor.get("username")) == ("import_page", "north_manager")


def test_a_second_copy_of_the_import_task_does_nothing(client, sales_org, django_capture_on_commit_callbacks):
    from crm.import_jobs import import_job_run

    client.force_login(sales_org["north_manager"])
    upload(client, GOOD)
    job = ImportJob.objects.get()
    preview(client, job, MAPPING)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("crm:import_run", args=[job.pk]))
    again = import_job_run(job_id=job.pk)
    assert again.status == ImportJob.Status.SUCCEEDED
    assert Customer.objects.filter(external_id__in=["K-1", "K-2"]).count() == 2


def test_the_lists_link_their_exports(client, sales_org):
    client.force_login(sales_org["north_rep1"])
    accounts = client.get(reverse("crm:account_list")).content.decode()
    for kind in ("customers", "people", "products", "holdings", "usage", "contacts", "events", "purchases"):
        assert reverse("crm:records_csv", args=[kind]) in accounts
    tasks = client.get(reverse("crm:task_list"), {"status": "done"}).content.decode()
    assert f'href="{reverse("crm:tasks_csv")}?status=done"' in tasks


def test_uploads_never_imported_are_pruned(client, sales_org):
    from datetime import timedelta

    from django.utils import timezone

    from crm.import_jobs import import_files_prune

    client.force_login(sales_org["north_manager"])
    upload(client, GOOD)
    upload(client, GOOD, name="fresh.csv")
    old = ImportJob.objects.get(file_name="book.csv")
    ImportJob.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=8))
    assert import_files_prune(days=7) == 1
    old.refresh_from_db()
    assert old.status == ImportJob.Status.FAILED
    assert ImportFileChunk.objects.filter(job=old).count() == 0
    assert ImportFileChunk.objects.filter(job__file_name="fresh.csv").count() == 1


def test_the_nightly_prune_is_scheduled(settings):
    from config.celery import app as celery_app

    task = settings.CELERY_BEAT_SCHEDULE["import-files-prune"]["task"]
    assert task in celery_app.tasks
