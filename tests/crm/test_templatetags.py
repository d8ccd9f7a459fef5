"""Display helpers: money and percentages, risk badges, the sparkline."""

from decimal import Decimal

from crm.templatetags import crm_ui


def test_money_and_pct_formats_and_dash_for_missing():
    assert crm_ui.money(Decimal("1234567.8")) == "€1,234,568"
    assert crm_ui.money(Decimal("-80.4")) == "−€80"
    assert crm_ui.signed_money(Decimal("120")) == "+€120"
    assert crm_ui.money(12.345, 2) == "€12.35"
    assert crm_ui.number(12345) == "12,345"
    assert crm_ui.signed_percent(0.12) == "+12%"
    assert crm_ui.money(None) == "–"
    assert crm_ui.pct(0.734) == "73%"
    assert crm_ui.pct(None) == "–"


def test_risk_badge_levels():
    assert "High risk" in crm_ui.risk_badge(0.1)
    assert "Watch" in crm_ui.risk_badge(0.6)
    assert "Low risk" in crm_ui.risk_badge(0.95)
    assert "No CLV yet" in crm_ui.risk_badge(None)


def test_sparkline_draws_points_with_text_alternative():
    svg = crm_ui.sparkline([100, 150, 120], label="CLV")
    assert svg.startswith('<svg class="sparkline"')
    assert svg.count(",") >= 3
    assert 'aria-label="CLV: from €100 to €120 over 3 runs"' in svg
    assert crm_ui.sparkline([100]) == ""


def test_sparkline_escapes_label():
    assert "<b>" not in crm_ui.sparkline([1, 2], label="<b>x</b>")


def test_money_follows_crm_currency(settings):
    settings.CRM_CURRENCY = "SEK"
    assert crm_ui.money(1500) == "SEK 1,500"
    settings.CRM_CURRENCY = "USD"
    assert crm_ui.money(1500) == "$1,500"


def test_day_uses_the_one_date_format():
    from datetime import date

    assert crm_ui.day(date(2026, 12, 2)) == "2 Dec 2026"
    assert crm_ui.day(None) == "–"
