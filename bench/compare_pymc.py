"""Fit the same simulated customers with clv.engine and pymc-marketing (BetaGeoModel, GammaGammaModel, MAP with flat priors = MLE) and compare.

Run in a separate virtualenv with bench/requirements-pymc.txt installed; clv.engine only
needs numpy and scipy, so both fits run in the same process on the same arrays.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clv.engine import bgnbd, gammagamma  # noqa: E402
from clv.engine.simulate import simulate_transactions  # noqa: E402
from clv.engine.summary import summarise_transactions  # noqa: E402

TRUE_PURCHASE = (0.243, 4.414 * 7, 0.793, 2.426)  # CDNOW, alpha in days
TRUE_SPEND = (6.25, 3.74, 15.44)


class _Summary:
    """The four summary columns both libraries fit, read from an .npz."""

    def __init__(self, frequency, recency, T, monetary):
        self.frequency, self.recency, self.T, self.monetary = frequency, recency, T, monetary

    def __len__(self) -> int:
        return int(self.frequency.size)


def _pymc_fit(model_cls, data, config: dict) -> tuple[dict, float]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = model_cls(data=data, model_config=config)
        start = time.perf_counter()
        model.fit(method="map", progressbar=False)
        seconds = time.perf_counter() - start
    post = model.idata.posterior
    return {k: float(post[k].values.ravel()[0]) for k in config}, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument(
        "--summary",
        help="fit these summary arrays instead of simulating: the .npz bench/bench_clv_run.py --summary-out wrote "
        "from the CRM's database (frequency, recency, T, monetary)",
    )
    args = parser.parse_args()

    import pandas as pd
    from pymc_extras.prior import Prior
    from pymc_marketing.clv import BetaGeoModel, GammaGammaModel

    if args.summary:
        s = _Summary(**{k: v.astype(np.float64) for k, v in np.load(args.summary).items()})
    else:
        rng = np.random.default_rng(args.seed)
        tx = simulate_transactions(
            args.customers, TRUE_PURCHASE, TRUE_SPEND, start="2023-01-01", end="2024-12-31", rng=rng
        )
        s = summarise_transactions(tx.customer_ids, tx.dates, tx.amounts, "2024-12-31")

    start = time.perf_counter()
    ours_bg = bgnbd.fit(s.frequency, s.recency, s.T, with_standard_errors=False)
    ours_bg_s = time.perf_counter() - start
    start = time.perf_counter()
    ours_gg = gammagamma.fit(s.frequency, s.monetary)
    ours_gg_s = time.perf_counter() - start

    flat = {k: Prior("HalfFlat") for k in ("r", "alpha", "a", "b")}
    bg_data = pd.DataFrame({"customer_id": np.arange(len(s)), "frequency": s.frequency, "recency": s.recency, "T": s.T})
    theirs_bg, theirs_bg_s = _pymc_fit(BetaGeoModel, bg_data, flat)

    repeat = (s.frequency > 0) & (s.monetary > 0)
    gg_data = pd.DataFrame(
        {
            "customer_id": np.arange(int(repeat.sum())),
            "frequency": s.frequency[repeat],
            "monetary_value": s.monetary[repeat],
        }
    )
    theirs_gg, theirs_gg_s = _pymc_fit(GammaGammaModel, gg_data, {k: Prior("HalfFlat") for k in ("p", "q", "v")})

    print(f"customers: {len(s):,} (Gamma-Gamma on {int(repeat.sum()):,} repeat buyers)")
    print(f"{'param':<7}{'clv.engine':>14}{'pymc-marketing':>16}{'rel.diff':>11}")
    rows = list(ours_bg.params.to_dict().items()) + list(ours_gg.params.to_dict().items())
    theirs = {**theirs_bg, **theirs_gg}
    worst = 0.0
    for name, ours in rows:
        rel = (ours - theirs[name]) / theirs[name]
        worst = max(worst, abs(rel))
        print(f"{name:<7}{ours:>14.5f}{theirs[name]:>16.5f}{rel:>11.2e}")
    print()
    print(f"{'fit':<14}{'clv.engine s':>14}{'pymc-marketing s':>18}")
    print(f"{'BG/NBD':<14}{ours_bg_s:>14.2f}{theirs_bg_s:>18.2f}")
    print(f"{'Gamma-Gamma':<14}{ours_gg_s:>14.2f}{theirs_gg_s:>18.2f}")
    print(f"largest relative difference: {worst:.2e} ({'within' if worst <= 0.01 else 'OUTSIDE'} 1%)")
    print('(pymc-marketing times are model.fit(method="map"), graph compilation included)')


if __name__ == "__main__":
    main()
