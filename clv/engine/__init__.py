"""Pure numpy/scipy customer-lifetime-value engine (no Django): summaries, BG/NBD, MBG/NBD, Pareto/NBD, Gamma-Gamma, CLV, holdout checks."""

from .pipeline import PURCHASE_MODELS, FitAndScore, ScoreSettings, fit, fit_and_score, score
from .summary import CustomerSummary, summarise_transactions

__all__ = [
    "PURCHASE_MODELS",
    "CustomerSummary",
    "FitAndScore",
    "ScoreSettings",
    "fit",
    "fit_and_score",
    "score",
    "summarise_transactions",
]
