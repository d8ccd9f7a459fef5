"""The contractual phase of a CLV run: subscription holdings as contracts, fitted and valued.

A holding of a product with a renewal period is a contract. Its renewal history, as of the
run's date: the periods it has begun since `since`, and whether it ended (status cancelled or
expired, or `until` before the as-of date) or is still active (right-censored). The histories
are fitted per segment, a product family and renewal period (monthly, quarterly and yearly
contracts are never mixed), with both sBG and BdW (clv.engine.contractual; BdW kept only when
the likelihood-ratio test prefers it). A segment with fewer than MIN_SEGMENT_CONTRACTS
contracts or MIN_SEGMENT_CANCELLED cancellations borrows the pooled fit of every contract with
the same renewal period; when even the pool is below MIN_POOL_CONTRACTS / MIN_POOL_CANCELLED its
holdings are not valued (the run says how many).

Every active contract gets a HoldingValue: probability of renewing at its next renewal,
expected further periods, and residual value = margin per period x DERL, discounted from the
next renewal date to the as-of date. The customer's contract_value is the sum of its
holdings' residual values, and add_contract_values adds it to the customer's CLV.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import numpy as np
from django.db import connection

from clv.engine import contractual as engine
from clv.models import ClvRun, CustomerValue, HoldingValue
from crm.models import Holding, Product

MIN_SEGMENT_CONTRACTS = 50
MIN_SEGMENT_CANCELLED = 5
MIN_POOL_CONTRACTS = 10
MIN_POOL_CANCELLED = 1
REMAINING_HORIZON_YEARS = 10  # expected_remaining_periods counts further periods within this many years
ENDED_STATUSES = (Holding.Status.CANCELLED, Holding.Status.EXPIRED)
WRITE_BATCH = 5000


@dataclass
class Contracts:
    """Subscription holdings as arrays, one element per holding."""

    holding_id: np.ndarray
    customer_id: np.ndarray
    family: np.ndarray  # object (str)
    period: np.ndarray  # object (str): month / quarter / year
    period_months: np.ndarray
    since: np.ndarray  # datetime64[D]
    end: np.ndarray  # datetime64[D]: the end of an ended contract, else the as-of date
    ended: np.ndarray  # bool
    period_margin: np.ndarray  # float: margin per period of the holding (quantity x unit margin)

    @property
    def size(self) -> int:
        return int(self.holding_id.size)


def read_contracts(*, as_of: date, default_margin: float) -> Contracts:
    """Every holding of a subscription product begun by the as-of date, with its renewal state."""
    rows = list(
        Holding.objects.filter(since__lte=as_of).exclude(product__renewal_period="")
        .values_list("id", "customer_id", "product__family", "product__renewal_period", "since", "until", "status",
                     "updated_at", "quantity", "product__period_price", "product__unit_cost")
        .order_by("id")
    )
    n = len(rows)
    if n == 0:
        empty = np.zeros(0)
        return Contracts(empty.astype(np.int64), empty.astype(np.int64), empty.astype(object), empty.astype(object),
                         empty.astype(np.int64), empty.astype("datetime64[D]"), empty.astype("datetime64[D]"),
                         empty.astype(bool), empty)
    cols = list(zip(*rows, strict=True))
    since = np.array(cols[4], dtype="datetime64[D]")
    as_of64 = np.datetime64(as_of, "D")
    until = np.array([u if u is not None else as_of for u in cols[5]], dtype="datetime64[D]")
    has_until = np.array([u is not None for u in cols[5]])
    status_ended = np.isin(np.array(cols[6], dtype=object), ENDED_STATUSES)
    ended = status_ended | (has_until & (until < as_of64))
    # An ended contract ends at `until`; one marked ended without an end date, when it was last changed.
    changed = np.array([ts.date() for ts in cols[7]], dtype="datetime64[D]")
    end = np.where(ended, np.where(has_until, until, np.minimum(changed, as_of64)), as_of64)
    end = np.maximum(end, since)
    quantity = np.array(cols[8], dtype=np.float64)
    price = np.array(cols[9], dtype=np.float64)
    cost = np.array(cols[10], dtype=np.float64)
    # A product's unit cost is its cost per period and unit; with no cost known, the default margin applies.
    unit_margin = np.where(cost > 0, price - cost, price * default_margin)
    period = np.array(cols[3], dtype=object)
    return Contracts(
        holding_id=np.array(cols[0], dtype=np.int64), customer_id=np.array(cols[1], dtype=np.int64),
        family=np.array(cols[2], dtype=object), period=period,
        period_months=np.array([Product.PERIOD_MONTHS[p] for p in period], dtype=np.int64),
        since=since, end=end, ended=ended, period_margin=quantity * unit_margin,
    )


# ---------------------------------------------------------------------------------------------
# Calendar arithmetic on arrays of dates


def _ymd(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    months = d.astype("datetime64[M]")
    return (months.astype(np.int64) // 12 + 1970, months.astype(np.int64) % 12 + 1,
            (d - months.astype("datetime64[D]")).astype(np.int64) + 1)


def _days_in_month(month_index: np.ndarray) -> np.ndarray:
    """month_index: months since 1970-01 (int)."""
    start = month_index.astype("datetime64[M]").astype("datetime64[D]")
    return ((month_index + 1).astype("datetime64[M]").astype("datetime64[D]") - start).astype(np.int64)


def add_months(d: np.ndarray, months: np.ndarray) -> np.ndarray:
    """d + months, the day clipped to the target month's length (31 Jan + 1 month = 28/29 Feb)."""
    month_index = d.astype("datetime64[M]").astype(np.int64) + months
    _, _, day = _ymd(d)
    day = np.minimum(day, _days_in_month(month_index))
    return month_index.astype("datetime64[M]").astype("datetime64[D]") + (day - 1)


def full_months(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Whole months from start to end: the largest m with add_months(start, m) <= end."""
    ys, ms, _ = _ymd(start)
    ye, me, _ = _ymd(end)
    m = (ye - ys) * 12 + (me - ms)
    return np.where(add_months(start, m) > end, m - 1, m)


def periods_begun(contracts: Contracts) -> np.ndarray:
    """Renewal periods begun: for an active contract those begun by the as-of date (the current one
    included); for an ended one those begun before its end (ending exactly on a renewal date means
    that renewal was not made). Always at least 1."""
    p = contracts.period_months
    m = full_months(contracts.since, contracts.end)
    on_renewal = (add_months(contracts.since, m) == contracts.end) & (m % p == 0)
    begun = np.where(contracts.ended & on_renewal, m // p, m // p + 1)
    return np.maximum(begun, 1)


# ---------------------------------------------------------------------------------------------
# The phase


def contract_phase(*, run: ClvRun, annual_discount_rate: float, default_margin: float) -> dict:
    """Fit, score and write HoldingValue rows for the run; add contract values to its customers.

    Call inside the transaction that makes the run current, after the run's customer values are
    written. Returns the diagnostics to record under the run's diagnostics["contracts"].
    """
    contracts = read_contracts(as_of=run.as_of, default_margin=default_margin)
    report: dict = {
        "rule": (f"one fit per product family and renewal period with at least {MIN_SEGMENT_CONTRACTS} contracts "
                 f"and {MIN_SEGMENT_CANCELLED} cancellations; smaller families share the pooled fit of their "
                 f"renewal period (at least {MIN_POOL_CONTRACTS} contracts and {MIN_POOL_CANCELLED} cancellation)"),
        "model_choice": engine.MODEL_CHOICE_RULE,
        "contracts": contracts.size, "cancelled": int(contracts.ended.sum()),
        "segments": [], "holdings_valued": 0, "holdings_not_valued": 0, "contract_value_total": 0.0,
    }
    if contracts.size == 0:
        return report
    periods = periods_begun(contracts)
    fits = _fit_segments(contracts, periods, report)
    values = _score(run, contracts, periods, fits, annual_discount_rate)
    report["holdings_valued"] = len(values)
    report["holdings_not_valued"] = int((~contracts.ended).sum()) - len(values)
    for start in range(0, len(values), WRITE_BATCH):
        HoldingValue.objects.bulk_create(values[start:start + WRITE_BATCH])
    report.update(add_contract_values(run=run))
    return report


def _segment_label(family: str, period: str) -> str:
    return f"{family}, {Product.RenewalPeriod(period).label.lower()}"


def _fit_segments(contracts: Contracts, periods: np.ndarray, report: dict) -> dict[tuple[str, str], dict]:
    """{(family, period): {"label", "model", "params"}} for every segment whose holdings can be valued."""
    keys = sorted({(f, p) for f, p in zip(contracts.family, contracts.period, strict=True)})
    pooled: dict[str, dict | None] = {}
    fits: dict[tuple[str, str], dict] = {}
    for family, period in keys:
        mask = (contracts.family == family) & (contracts.period == period)
        n, cancelled = int(mask.sum()), int(contracts.ended[mask].sum())
        entry = {"segment": _segment_label(family, period), "family": family, "renewal_period": period,
                 "contracts": n, "cancelled": cancelled, "active": n - cancelled}
        if n >= MIN_SEGMENT_CONTRACTS and cancelled >= MIN_SEGMENT_CANCELLED:
            choice = engine.choose_model(engine.renewal_histories(periods[mask], contracts.ended[mask]))
            entry.update(fitted_on="own", **choice)
            fits[(family, period)] = _chosen(entry["segment"], choice)
        else:
            if period not in pooled:
                pooled[period] = _pooled_fit(contracts, periods, period, report)
            pool = pooled[period]
            entry["fitted_on"] = "pooled" if pool else "none (too few contracts to fit)"
            if pool:
                entry.update(chosen=pool["model"], params=pool["params"])
                fits[(family, period)] = pool
        report["segments"].append(entry)
    return fits


def _pooled_fit(contracts: Contracts, periods: np.ndarray, period: str, report: dict) -> dict | None:
    mask = contracts.period == period
    n, cancelled = int(mask.sum()), int(contracts.ended[mask].sum())
    label = f"all {Product.RenewalPeriod(period).label.lower()} subscriptions"
    entry = {"segment": label, "renewal_period": period, "contracts": n, "cancelled": cancelled,
             "active": n - cancelled, "fitted_on": "pool"}
    if n < MIN_POOL_CONTRACTS or cancelled < MIN_POOL_CANCELLED:
        entry["skipped"] = "too few contracts or cancellations to fit"
        report.setdefault("pools", []).append(entry)
        return None
    choice = engine.choose_model(engine.renewal_histories(periods[mask], contracts.ended[mask]))
    entry.update(choice)
    report.setdefault("pools", []).append(entry)
    return _chosen(label, choice)


def _chosen(label: str, choice: dict) -> dict:
    model = choice["chosen"]
    return {"label": label, "model": model, "params": choice["fits"][model]["params"]}


def _score(run: ClvRun, contracts: Contracts, periods: np.ndarray, fits: dict, annual_discount_rate: float
           ) -> list[HoldingValue]:
    active = ~contracts.ended
    next_renewal = add_months(contracts.since, periods * contracts.period_months)
    as_of = np.datetime64(run.as_of, "D")
    values: list[HoldingValue] = []
    for (family, period), fit in fits.items():
        mask = active & (contracts.family == family) & (contracts.period == period)
        if not mask.any():
            continue
        months = Product.PERIOD_MONTHS[period]
        rate = engine.per_period_rate(annual_discount_rate, months)
        scores = engine.score_contracts(fit["params"], periods[mask], discount_rate=rate,
                                        remaining_horizon=max(1, REMAINING_HORIZON_YEARS * 12 // months))
        days_to_renewal = (next_renewal[mask] - as_of).astype(np.float64)
        to_today = (1.0 + rate) ** -(days_to_renewal / (months * 365.25 / 12))
        residual = contracts.period_margin[mask] * scores["derl"] * to_today
        stake = (1.0 - scores["p_renew"]) * residual
        for i, hid in enumerate(np.flatnonzero(mask)):
            values.append(HoldingValue(
                run=run, holding_id=int(contracts.holding_id[hid]), customer_id=int(contracts.customer_id[hid]),
                segment=fit["label"], model=fit["model"], periods=int(periods[hid]),
                next_renewal=next_renewal[hid].item(), p_renew=float(np.clip(scores["p_renew"][i], 0, 1)),
                expected_remaining_periods=float(scores["expected_remaining_periods"][i]),
                period_value=_money(contracts.period_margin[hid]), residual_value=_money(residual[i]),
                value_at_stake=_money(stake[i]),
            ))
    return values


def _money(x: float) -> Decimal:
    return Decimal(str(round(float(np.nan_to_num(x)), 2)))


def add_contract_values(*, run: ClvRun) -> dict:
    """The customer's CLV = transactional + contractual: the one place the two parts are added.

    Sets each customer's contract_value to the sum of its holdings' residual values in the run and
    adds it to clv; a customer with contracts and no purchases gets a value row of its own (nothing
    transactional, p_alive 1: an active contract is a customer visibly still there).
    """
    table, cv = HoldingValue._meta.db_table, CustomerValue._meta.db_table
    sums = f"SELECT customer_id, SUM(residual_value) AS total FROM {table} WHERE run_id = %s GROUP BY customer_id"
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {cv} SET contract_value = s.total, clv = {cv}.clv + s.total FROM ({sums}) s "
            f"WHERE {cv}.run_id = %s AND {cv}.customer_id = s.customer_id",
            [run.pk, run.pk],
        )
        with_purchases = cursor.rowcount
        cursor.execute(
            f'INSERT INTO {cv} (run_id, customer_id, clv, contract_value, p_alive, expected_purchases, '
            f'expected_avg_value, historical_value, classic_value, frequency, recency, "T") '
            f"SELECT %s, s.customer_id, s.total, s.total, 1.0, 0, 0, 0, 0, 0, 0, 0 FROM ({sums}) s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {cv} c WHERE c.run_id = %s AND c.customer_id = s.customer_id)",
            [run.pk, run.pk, run.pk],
        )
        contract_only = cursor.rowcount
        cursor.execute(f"SELECT COALESCE(SUM(residual_value), 0) FROM {table} WHERE run_id = %s", [run.pk])
        total = float(cursor.fetchone()[0])
    return {"customers_with_contracts": with_purchases + contract_only, "contract_only_customers": contract_only,
            "contract_value_total": round(total, 2)}
