"""Membership-inference metrics, each a small function on scores and labels."""

from ._forgetting import example_epsilon, forgetting_quality, forgetting_quality_from_scores
from ._metrics import (
    advantage,
    auc_with_ci,
    epsilon_lower_bound,
    epsilon_lower_bound_roc,
    roc,
    tpr_at_fpr,
)

__all__ = [
    "advantage",
    "auc_with_ci",
    "epsilon_lower_bound",
    "epsilon_lower_bound_roc",
    "example_epsilon",
    "forgetting_quality",
    "forgetting_quality_from_scores",
    "roc",
    "tpr_at_fpr",
]
