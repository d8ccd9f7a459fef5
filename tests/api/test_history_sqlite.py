"""On SQLite (the embedded default) no history is recorded, and the API and pages say so."""

import pytest
from django.conf import settings
from django.urls import reverse

pytestmark = pytest.mark.django_db


@pytest.mark.skipif(settings.IS_POSTGRES, reason="the SQLite behaviour")
@pytest.mark.django_db
def test_on_sqlite_history_says_it_needs_postgresql(api, book, sales_org, client):
    rep = sales_org["north_rep1"]
    body = api(rep).get(f"/api/v1/customers/{book['a1']['customer'].pk}/history/").json()
    assert body["recorded"] is False
    assert body["results"] == []
    client.force_login(rep)
    page = client.get(reverse("crm:account_detail", args=[book["a1"]["customer"].pk]), {"tab": "history"})
    assert "History is recorded on PostgreSQL only" in page.content.decode()
