"""Membership-inference metrics, each a small function on scores and labels."""

from ._forgetting import example_epsilon, forgetting_quality, forgetting_quality_from_scores
from ._metrics import (
    advantage,
    auc_p_value,
    auc_with_ci,
    epsilon_lower_bound,
    epsilon_lower_bound_roc,
    roc,
    roc_band,
    tpr_at_fpr,
    tpr_curve,
)

__all__ = [
    "advantage",
    "auc_p_value",
    "auc_with_ci",
    "epsilon_lower_bound",
    "epsilon_lower_bound_roc",
    "example_epsilon",
    "forgetting_quality",
    "forgetting_quality_from_scores",
    "roc",
    "roc_band",
    "tpr_at_fpr",
    "tpr_curve",
]
