"""SISA unlearning: retrain the affected shards of a sharded ensemble from their last clean checkpoint."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ._context import UnlearnContext
from ._registry import register


def sisa(model: Any, ctx: UnlearnContext) -> None:
    """Remove the forget cells from their shards' slices and retrain each affected shard from its checkpoint.

    For every shard holding a forget cell, training resumes from the checkpoint taken before the first
    stage that saw one (the stage of its slice) and repeats the remaining stages without the forget
    cells, with the seeds of the original training; untouched shards are not retrained. The result is
    the ensemble that training without the forget cells would have produced: exact unlearning. The
    cost is the retrained stages' epochs over the whole ensemble's (recorded as ``cost_fraction``).

    Parameters
    ----------
    model
        A trained :class:`scforget.model.ShardedSCVI` (edited in place; a copy unless ``inplace=True``).
    ctx
        The resolved unlearning context.
    """
    forget = np.asarray(ctx.forget, dtype=np.int64)
    first_stage: dict[int, int] = {}
    for s, slices in enumerate(model.slices_):
        for r, part in enumerate(slices):
            hit = np.isin(part, forget)
            if hit.any():
                slices[r] = part[~hit]
                first_stage.setdefault(s, r)
    start = time.perf_counter()
    for s, r in sorted(first_stage.items()):
        model.retrain_shard(s, r)
    epochs = model.stage_epochs_
    total = len(model.slices_) * sum(epochs)
    redone = sum(sum(epochs[r:]) for r in first_stage.values())
    ctx.info.update(
        {
            "retrained_shards": sorted(first_stage),
            "retrained_from_slice": {str(s): int(r) for s, r in sorted(first_stage.items())},
            "retrained_epochs": int(redone),
            "cost_fraction": redone / total if total else 0.0,
            "retrain_seconds": round(time.perf_counter() - start, 4),
            "epochs_run": int(redone),
        }
    )


def _check_sisa(model: Any, params: dict, forget: np.ndarray) -> None:
    if not getattr(model, "is_trained_", False) or not getattr(model, "checkpoints_", None):
        raise RuntimeError("The sharded model is not trained yet; call `model.train()` first.")


register(
    "sisa",
    function=sisa,
    kind="exact",
    guarantee="exact",
    designs=("sharded",),
    description="SISA: retrain only the shards (and slices) that saw a forget cell, from their checkpoints.",
    reference="Bourtoule et al. 2021 (IEEE S&P), Machine Unlearning",
    default_epochs=lambda e: 0,
    accepts_epochs=False,
    check=_check_sisa,
)
