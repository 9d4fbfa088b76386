"""Membership-inference auditing: per-cell signals, attacks, calibrated metrics and reports."""

from . import metrics
from ._attacks import ATTACKS, SpectralMLP
from ._audit import audit
from ._forgetting import forgetting_quality
from ._report import AuditReport, plot_roc_models
from ._signals import signals

__all__ = [
    "ATTACKS",
    "AuditReport",
    "SpectralMLP",
    "audit",
    "forgetting_quality",
    "metrics",
    "plot_roc_models",
    "signals",
]
