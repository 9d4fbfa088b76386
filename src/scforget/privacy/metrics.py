"""Membership-inference metrics, each a small function on scores and labels."""

from ._metrics import (
    advantage,
    auc_with_ci,
    epsilon_lower_bound,
    epsilon_lower_bound_roc,
    forgetting_quality,
    forgetting_quality_from_scores,
    per_example_epsilon,
    roc,
    tpr_at_fpr,
)

__all__ = [
    "advantage",
    "auc_with_ci",
    "epsilon_lower_bound",
    "epsilon_lower_bound_roc",
    "forgetting_quality",
    "forgetting_quality_from_scores",
    "per_example_epsilon",
    "roc",
    "tpr_at_fpr",
]
