"""Parameter edits of the Fisher-based methods: cell subsets, paired Fishers and what an edit changed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from scforget.fisher import categories, diagonal, gather

from ._context import UnlearnContext

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass
    from torch import nn

    from scforget.fisher import DiagonalFisher


DOC_MODEL_CTX = """\
    model
        Model edited in place.
    ctx
        The resolved unlearning context."""

DOC_FISHER_CELLS = """\
    max_retain_cells
        Estimate the retain Fisher on a random subset of this many retain cells (seeded); ``None`` uses all.
    fisher_batch_size
        Minibatch size of the Fisher computations."""


def subsample(positions: np.ndarray, max_cells: int | None, seed: int) -> np.ndarray:
    """At most ``max_cells`` of ``positions`` (a seeded random subset, sorted); all if ``None``."""
    positions = np.asarray(positions, dtype=np.int64)
    if max_cells is None or positions.size <= max_cells:
        return positions
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(positions, size=int(max_cells), replace=False))


def noise_generator(seed: int) -> torch.Generator:
    """A CPU generator for an edit's noise, seeded by the run's seed."""
    return torch.Generator(device="cpu").manual_seed(int(seed))


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the module's parameters."""
    return {k: p.detach().clone() for k, p in module.named_parameters()}


def fisher_of(
    model: BaseModelClass, ctx: UnlearnContext, cells: np.ndarray, batch_size: int, **kwargs
) -> DiagonalFisher:
    """Per-sample diagonal Fisher of ``cells`` with the run's seed and progress setting."""
    progress = bool(ctx.trainer_kwargs.get("enable_progress_bar", False))
    return diagonal(model, cells, batch_size=batch_size, progress_bar=progress, seed=ctx.seed, **kwargs)


def forget_retain_fisher(model: BaseModelClass, ctx: UnlearnContext, max_retain_cells: int | None, batch_size: int):
    """Diagonal Fisher of the forget cells and of (a seeded subset of) the retain cells.

    Returns
    -------
    ``(fisher_forget, fisher_retain, retain_positions_used)``.
    """
    retain = subsample(ctx.retain, max_retain_cells, ctx.seed)
    return fisher_of(model, ctx, ctx.forget, batch_size), fisher_of(model, ctx, retain, batch_size), retain


def paired(
    module: nn.Module, f_forget: DiagonalFisher, f_retain: DiagonalFisher
) -> Iterator[tuple[str, nn.Parameter, torch.Tensor, torch.Tensor]]:
    """``(name, parameter, forget Fisher, retain Fisher)`` for every parameter both Fishers cover.

    Parameters without a gradient are in neither Fisher, so they are never edited. The Fishers are
    moved to the parameter's device.
    """
    for name, p in module.named_parameters():
        if name in f_forget and name in f_retain:
            yield name, p, f_forget[name].to(p.device), f_retain[name].to(p.device)


class FisherEdit:
    """An edit of the parameters by their forget and retain Fisher: the pairs to edit and a count of selected entries."""

    def __init__(self, module: nn.Module, f_forget: DiagonalFisher, f_retain: DiagonalFisher):
        self.module, self.forget, self.retain = module, f_forget, f_retain
        self.n_selected = 0

    def pairs(self) -> Iterator[tuple[nn.Parameter, torch.Tensor, torch.Tensor]]:
        """``(parameter, forget Fisher, retain Fisher)`` for every parameter both Fishers cover (see :func:`paired`)."""
        for _, p, i_f, i_r in paired(self.module, self.forget, self.retain):
            yield p, i_f, i_r


@contextlib.contextmanager
def fisher_edit(
    model: BaseModelClass, ctx: UnlearnContext, max_retain_cells: int | None, batch_size: int
) -> Iterator[FisherEdit]:
    """Compute the forget and retain Fisher, yield a :class:`FisherEdit` (no gradients), then record what changed."""
    f_forget, f_retain, retain = forget_retain_fisher(model, ctx, max_retain_cells, batch_size)
    before = snapshot(model.module)
    edit = FisherEdit(model.module, f_forget, f_retain)
    with torch.no_grad():
        yield edit
    record_edit(ctx, model.module, before, f_forget, f_retain, retain, edit.n_selected)


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
    table = categories(module)
    by_cat = {}
    for cat in table["category"].unique():
        values = gather(changed, table, str(cat))
        if values.numel():
            by_cat[str(cat)] = float(values.mean())
    return {
        "n_params": int(n),
        "n_changed": n_changed,
        "fraction_changed": n_changed / max(n, 1),
        "change_norm": norm,
        "relative_change_norm": norm / base if base > 0 else float("nan"),
        "fraction_changed_by_category": by_cat,
    }


def record_edit(
    ctx: UnlearnContext, module: nn.Module, before: dict[str, torch.Tensor], f_forget, f_retain, retain, n_selected: int
) -> None:
    """Write what a Fisher-ratio edit did into the unlearning record (``ctx.info``)."""
    ctx.info.update(edit_summary(module, before))
    ctx.info["n_selected"] = int(n_selected)
    ctx.info["no_gradient"] = list(f_forget.no_gradient)
    ctx.info["n_retain_fisher_cells"] = int(retain.size)
    ctx.info["fisher_seconds"] = f_forget.seconds + f_retain.seconds
