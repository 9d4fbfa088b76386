"""Helpers for Fisher-based parameter edits: cell subsampling and summaries of what changed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._categories import block, categories

if TYPE_CHECKING:
    from torch import nn


def subsample(positions: np.ndarray, max_cells: int | None, seed: int | None) -> np.ndarray:
    """At most ``max_cells`` of ``positions`` (a seeded random subset, sorted); all if ``None``."""
    positions = np.asarray(positions, dtype=np.int64)
    if max_cells is None or positions.size <= max_cells:
        return positions
    rng = np.random.default_rng(0 if seed is None else seed)
    return np.sort(rng.choice(positions, size=int(max_cells), replace=False))


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the module's parameters."""
    return {k: p.detach().clone() for k, p in module.named_parameters()}


def edit_summary(module: nn.Module, before: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What a parameter edit changed, for the unlearning record.

    Returns
    -------
    ``n_params``, ``n_changed``, ``fraction_changed``, ``change_norm`` (L2 norm of the change),
    ``relative_change_norm`` (relative to the norm of the parameters before) and
    ``fraction_changed_by_category`` (see :func:`~scforget.fisher.categories`).
    """
    now = dict(module.named_parameters())
    diff = {k: (now[k].detach() - before[k]).double().cpu() for k in before}
    changed = {k: (d != 0).double() for k, d in diff.items()}
    n = sum(d.numel() for d in diff.values())
    n_changed = int(sum(float(c.sum()) for c in changed.values()))
    norm = float(torch.sqrt(sum((d.square().sum() for d in diff.values()), torch.tensor(0.0, dtype=torch.float64))))
    base = float(torch.sqrt(sum((b.double().square().sum().cpu() for b in before.values()), torch.tensor(0.0))))
    by_cat: dict[str, list[float]] = {}
    for row in categories(module).itertuples():
        c = block(changed, row)
        if c is not None:
            acc = by_cat.setdefault(str(row.category), [0.0, 0.0])
            acc[0] += float(c.sum())
            acc[1] += c.numel()
    return {
        "n_params": int(n),
        "n_changed": n_changed,
        "fraction_changed": n_changed / max(n, 1),
        "change_norm": norm,
        "relative_change_norm": norm / base if base > 0 else float("nan"),
        "fraction_changed_by_category": {k: v[0] / v[1] for k, v in by_cat.items() if v[1] > 0},
    }


def forget_retain_fisher(model: Any, ctx: Any, max_retain_cells: int | None, batch_size: int):
    """Diagonal Fisher of the forget cells and of (a seeded subset of) the retain cells.

    Returns
    -------
    ``(fisher_forget, fisher_retain, retain_positions_used)``.
    """
    from ._engine import diagonal

    progress = bool(ctx.trainer_kwargs.get("enable_progress_bar", False))
    retain = subsample(ctx.retain, max_retain_cells, ctx.seed)
    f_forget = diagonal(model, ctx.forget, batch_size=batch_size, progress_bar=progress)
    f_retain = diagonal(model, retain, batch_size=batch_size, progress_bar=progress)
    return f_forget, f_retain, retain


def record_edit(
    ctx: Any, module: nn.Module, before: dict[str, torch.Tensor], f_forget, f_retain, retain, n_selected: int
):
    """Write what a Fisher-ratio edit did into the unlearning record (``ctx.info``)."""
    ctx.info.update(edit_summary(module, before))
    ctx.info["n_selected"] = int(n_selected)
    ctx.info["no_gradient"] = list(f_forget.no_gradient)
    ctx.info["n_retain_fisher_cells"] = int(retain.size)
    ctx.info["fisher_seconds"] = f_forget.seconds + f_retain.seconds
