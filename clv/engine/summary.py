"""Per-customer RFM summary from transaction arrays: the pure-array twin of the nightly SQL aggregate.

Definitions (as in the BTYD literature and lifetimes' summary_data_from_transaction_data):
- an occasion is one distinct calendar day per customer (several purchases that day = one);
- frequency x = number of occasions - 1 (repeat occasions);
- recency t_x = last occasion - first occasion; T = as_of - first occasion;
- monetary = mean value of the repeat occasions (occasion value = sum of that day's
  amounts; the first occasion is excluded), 0 when x = 0;
- total_value = sum of all amounts; total_margin = sum of (amount - cost) when costs given.
Time unit: days by default; time_unit="weeks" divides day counts by 7 (occasions stay days).
Transactions dated after as_of are ignored. Timestamps should already be local dates
(datetime64 or date objects); anything finer than a day is truncated to the day.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TIME_UNIT_DAYS = {"days": 1.0, "weeks": 7.0}


@dataclass
class CustomerSummary:
    """One row per customer, in ascending order of customer id."""

    customer_ids: np.ndarray
    frequency: np.ndarray
    recency: np.ndarray
    T: np.ndarray
    monetary: np.ndarray
    total_value: np.ndarray
    total_margin: np.ndarray | None
    first_purchase: np.ndarray  # datetime64[D]
    last_purchase: np.ndarray  # datetime64[D]
    time_unit: str
    # Sum of ln(inter-purchase time) over the x gaps between occasions, in the time unit: what
    # the regularity (Erlang k) of MBG/CNBD-k is chosen from. None where the source lacks it.
    litt: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.customer_ids.size)


def to_days(values: np.ndarray | list) -> np.ndarray:
    """Dates/datetimes (datetime64, date, datetime, ISO strings) -> datetime64[D]."""
    arr = np.asarray(values)
    if arr.dtype.kind == "M":
        return arr.astype("datetime64[D]")
    return np.array(values, dtype="datetime64[D]")


def summarise_transactions(
    customer_ids: np.ndarray,
    timestamps: np.ndarray,
    amounts: np.ndarray,
    as_of: object,
    *,
    costs: np.ndarray | None = None,
    time_unit: str = "days",
) -> CustomerSummary:
    """Aggregate transactions into (frequency, recency, T, monetary, total value[, margin]) per customer."""
    if time_unit not in TIME_UNIT_DAYS:
        raise ValueError(f"time_unit must be one of {sorted(TIME_UNIT_DAYS)}")
    unit = TIME_UNIT_DAYS[time_unit]
    ids = np.asarray(customer_ids)
    days = to_days(timestamps)
    amt = np.asarray(amounts, dtype=np.float64)
    cost = None if costs is None else np.asarray(costs, dtype=np.float64)
    as_of_day = np.datetime64(as_of, "D") if not isinstance(as_of, np.datetime64) else as_of.astype("datetime64[D]")
    if not (ids.shape == days.shape == amt.shape) or (cost is not None and cost.shape != amt.shape):
        raise ValueError("customer_ids, timestamps, amounts (and costs) must have the same length")

    keep = days <= as_of_day
    ids, days, amt = ids[keep], days[keep], amt[keep]
    if cost is not None:
        cost = cost[keep]
    uniq_ids, cust = np.unique(ids, return_inverse=True)
    n_cust = uniq_ids.size
    day_num = days.astype(np.int64)

    # Occasions: distinct (customer, day); sort once and reduce runs.
    order = np.lexsort((day_num, cust))
    c_sorted, d_sorted, a_sorted = cust[order], day_num[order], amt[order]
    new_occ = np.ones(c_sorted.size, dtype=bool)
    new_occ[1:] = (c_sorted[1:] != c_sorted[:-1]) | (d_sorted[1:] != d_sorted[:-1])
    occ_start = np.flatnonzero(new_occ)
    occ_cust = c_sorted[occ_start]
    occ_day = d_sorted[occ_start]
    occ_value = np.add.reduceat(a_sorted, occ_start) if occ_start.size else np.zeros(0)

    n_occ = np.bincount(occ_cust, minlength=n_cust)
    # Occasions are sorted by (customer, day): each customer's first/last occasion is at the run edges.
    first_idx = np.cumsum(n_occ) - n_occ
    last_idx = first_idx + n_occ - 1
    first_day = occ_day[first_idx]
    last_day = occ_day[last_idx]
    total_value = np.bincount(occ_cust, weights=occ_value, minlength=n_cust)
    first_value = occ_value[first_idx]

    frequency = (n_occ - 1).astype(np.float64)
    recency = (last_day - first_day).astype(np.float64) / unit
    T = (as_of_day.astype(np.int64) - first_day).astype(np.float64) / unit
    with np.errstate(invalid="ignore", divide="ignore"):
        monetary = np.where(frequency > 0, (total_value - first_value) / np.maximum(frequency, 1), 0.0)
    gaps = np.diff(occ_day).astype(np.float64) / unit
    same = occ_cust[1:] == occ_cust[:-1]
    litt = np.bincount(occ_cust[1:][same], weights=np.log(gaps[same]), minlength=n_cust)
    total_margin = None
    if cost is not None:
        total_margin = np.bincount(cust, weights=amt - cost, minlength=n_cust)
    return CustomerSummary(
        customer_ids=uniq_ids,
        frequency=frequency,
        recency=recency,
        T=T,
        monetary=monetary,
        total_value=total_value,
        total_margin=total_margin,
        first_purchase=first_day.astype("datetime64[D]"),
        last_purchase=last_day.astype("datetime64[D]"),
        time_unit=time_unit,
        litt=litt,
    )
