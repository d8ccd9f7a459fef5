"""evaluate_recommendations: bad arguments give a clear CommandError; a history with nothing to measure says so."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from tests.crm.test_opportunities_purchases import AS_OF, plant_purchases


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--as-of", "2026-13-01", "--horizon-days", "30"], "--as-of"),
        (["--as-of", "2026-06-01", "--horizon-days", "0"], "--horizon-days must be at least 1"),
        (["--as-of", "2026-06-01", "--horizon-days", "30", "--k", "0"], "--k must be at least 1"),
        (["--as-of", "2026-06-01", "--horizon-days", "30", "--level", "shelf"], "--level must be one of"),
        (["--as-of", "2026-06-01", "--horizon-days", "30", "--also", "magic"], "unknown model magic"),
    ],
)
def test_bad_arguments_are_refused(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("evaluate_recommendations", *args)


@pytest.mark.django_db
def test_nothing_to_measure_is_a_clear_error():
    with pytest.raises(CommandError, match="nothing to measure"):
        call_command("evaluate_recommendations", "--as-of", "2026-06-01", "--horizon-days", "30")


@pytest.mark.django_db
def test_category_level_on_an_imported_history(capsys):
    plant_purchases()
    call_command("evaluate_recommendations", "--as-of", str(AS_OF.replace(month=3)), "--horizon-days", "120",
                 "--level", "category", "--also", "association,lift")
    out = capsys.readouterr().out
    assert "level category (4 items)" in out
    assert "association" in out
    assert "lift" in out
