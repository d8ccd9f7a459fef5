"""Pure numpy/scipy customer-lifetime-value engine (no Django): summaries, BG/NBD, MBG/NBD, Gamma-Gamma, CLV, holdout checks."""

from .pipeline import FitAndScore, ScoreSettings, fit, fit_and_score, score
from .summary import CustomerSummary, summarise_transactions

__all__ = [
    "CustomerSummary",
    "FitAndScore",
    "ScoreSettings",
    "fit",
    "fit_and_score",
    "score",
    "summarise_transactions",
]
