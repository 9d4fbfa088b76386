"""Forget whole donors of an adapter model by dropping their columns; remap a donor without some of its cells."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ._context import UnlearnContext
from ._registry import register


def _hit_donors(model: Any, forget: np.ndarray) -> dict[str, np.ndarray]:
    """The mapped donors holding forget cells, with those cells."""
    return {
        d: np.intersect1d(cells, forget)
        for d, cells in model.mapped_cells_.items()
        if np.intersect1d(cells, forget).size
    }


def _check_not_core(model: Any, forget: np.ndarray) -> None:
    if getattr(model, "core_donors_", None) is None or not getattr(model, "is_trained_", False):
        raise RuntimeError("The adapter model has no trained core; call `model.train()` first.")
    mapped = np.concatenate([np.zeros(0, dtype=np.int64), *model.mapped_cells_.values()])
    core = np.setdiff1d(np.asarray(model.train_indices), mapped)
    n = np.intersect1d(core, forget).size
    if n:
        raise ValueError(
            f"{n} of the forget cells are core cells (of `core_donors`), which every donor's adapter builds on, "
            "so no adapter can be dropped to forget them. Train a new AdapterSCVI whose core leaves them out and "
            "map the donors again, or use a plain scforget.model.SCVI with method='retrain'."
        )


def _check_drop(model: Any, params: dict, forget: np.ndarray) -> None:
    _check_not_core(model, forget)
    for d, hit in _hit_donors(model, forget).items():
        total = model.mapped_cells_[d].size
        if hit.size < total:
            raise ValueError(
                f"`forget` holds {hit.size} of the {total} mapped cells of donor {d!r}; 'adapter_drop' removes whole "
                "donors. Forget all of its cells, or use method='adapter_remap' to map the donor again without "
                "these cells (also exact, at the cost of one mapping run)."
            )


def adapter_drop(model: Any, ctx: UnlearnContext) -> None:
    """Reset the columns of every donor whose cells are forgotten to their value before mapping.

    The donor's parameters depended on nothing but the frozen core and the donor's cells, so the
    result is bit for bit the model that never mapped the donor: exact unlearning at no training
    cost. The core certificate is checked before and after; a change raises.

    Parameters
    ----------
    model
        A trained :class:`scforget.model.AdapterSCVI` (a copy unless ``inplace=True``).
    ctx
        The resolved unlearning context (its ``forget`` cells cover whole mapped donors).
    """
    before = model.certificate()
    donors = sorted(_hit_donors(model, ctx.forget))
    start = time.perf_counter()
    n = model.drop_donors(donors)
    seconds = time.perf_counter() - start
    after = model.certificate()
    if after["core"] != before["core"]:
        raise RuntimeError("Dropping the donors changed the core; the adapter guarantee does not hold.")
    ctx.info.update(
        {
            "n_donors_dropped": len(donors),
            "parameters_reset": int(n),
            "core_certificate": after["core"],
            "core_unchanged": True,
            "retrained_epochs": 0,
            "cost_fraction": 0.0,
            "drop_seconds": round(seconds, 6),
            "epochs_run": 0,
        }
    )


def _check_remap(model: Any, params: dict, forget: np.ndarray) -> None:
    _check_not_core(model, forget)


def adapter_remap(model: Any, ctx: UnlearnContext) -> None:
    """Map every donor holding forget cells again, from scratch, on its remaining cells only.

    The mapping run repeats the donor's original one (same epochs, learning rate, seed) without the
    forget cells, so the result is exactly the model in which the donor was mapped without them. A
    donor left with no cell is dropped. Cost: one mapping run per affected donor.

    Parameters
    ----------
    model
        A trained :class:`scforget.model.AdapterSCVI` (a copy unless ``inplace=True``).
    ctx
        The resolved unlearning context.
    """
    before = model.certificate()
    hit = _hit_donors(model, ctx.forget)
    seconds, epochs = 0.0, 0
    for d in sorted(hit):
        remaining = np.setdiff1d(model.mapped_cells_[d], ctx.forget)
        epochs += model.adapter_fit_[d]["max_epochs"] if remaining.size else 0
        seconds += model.remap_donor(d, remaining, accelerator=ctx.accelerator, devices=ctx.devices)
    after = model.certificate()
    if after["core"] != before["core"]:
        raise RuntimeError("Remapping changed the core; the adapter guarantee does not hold.")
    ctx.info.update(
        {
            "n_donors_remapped": len(hit),
            "core_certificate": after["core"],
            "core_unchanged": True,
            "retrained_epochs": int(epochs),
            "remap_seconds": round(seconds, 4),
            "epochs_run": int(epochs),
        }
    )


register(
    "adapter_drop",
    function=adapter_drop,
    kind="exact",
    guarantee="exact",
    designs=("adapters",),
    description="Drop the adapters of whole donors mapped onto a frozen core: the model that never saw them.",
    reference="Golatkar et al. 2021 (CVPR), Mixed-Privacy Forgetting in Deep Networks",
    default_epochs=lambda e: 0,
    accepts_epochs=False,
    check=_check_drop,
)

register(
    "adapter_remap",
    function=adapter_remap,
    kind="exact",
    guarantee="exact",
    designs=("adapters",),
    description="Map the donors holding forget cells again without them (their own run, frozen core).",
    reference="Golatkar et al. 2021 (CVPR); scArches query mapping (Lotfollahi et al. 2022)",
    default_epochs=lambda e: 0,
    accepts_epochs=False,
    check=_check_remap,
)
