"""Checks of a model (and its data) before any work: the same rules and messages in every room."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from scforget import _compat

from ._indices import CELL_ORDER_ATTR, cell_order_digest

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

#: scvi-tools model classes (with their scforget subclasses) each task supports.
UNLEARN_CLASSES = ("SCVI", "CondSCVI")
AUDIT_CLASSES = ("SCVI", "CondSCVI", "SCANVI", "TOTALVI")
FISHER_CLASSES = ("SCVI", "CondSCVI", "SCANVI")


def _classes(names: Sequence[str]) -> tuple[type, ...]:
    import scvi

    return tuple(getattr(scvi.model, n) for n in names)


def _supported_text(names: Sequence[str]) -> str:
    return ", ".join(f"scvi.model.{n}" for n in names) + " (and their scforget.model subclasses)"


def _check_ensemble(model: Any, *, task: str, argument: str, designs: Sequence[str]) -> None:
    """Checks of a model built for deletion that is not itself a scvi-tools model (an ensemble of them)."""
    design = model.deletion_design
    if design not in designs:
        raise TypeError(
            f"{task.capitalize()} does not support a {type(model).__name__} (a {design} ensemble) as a whole; "
            f"use one of its models (e.g. `{argument}.shards[0]`)."
        )
    if getattr(model, "adata", None) is None:
        raise ValueError(f"`{argument}` has no AnnData; load it with the data it was trained on.")
    if not getattr(model, "is_trained_", False):
        raise RuntimeError(f"`{argument}` is not trained yet; call `{argument}.train()` first.")
    recorded = getattr(model, CELL_ORDER_ATTR, None)
    if recorded is not None and recorded != cell_order_digest(model.adata.obs_names):
        raise ValueError(
            f"The cells of `{argument}`'s AnnData are not the ones, in the same order, that it was trained with. "
            "Load it with the AnnData it was trained on, with the cells in their original order."
        )


def check_model(
    model: Any,
    *,
    supported: Sequence[str],
    task: str,
    argument: str = "model",
    designs: Sequence[str] = (),
    allow_minified: bool = False,
) -> None:
    """Raise a clear error unless ``model`` is a trained scvi-tools model that ``task`` supports.

    Checks, in order: the class (one of ``supported``), the AnnData (present, full counts, the genes it
    was set up with in the same order, the cells in the order it was trained with) and training.

    Parameters
    ----------
    model
        The object to check.
    supported
        Names of the supported :mod:`scvi.model` classes.
    task
        What the model is checked for (``"unlearning"``, ``"auditing"``, ``"the Fisher information"``),
        used in messages.
    argument
        Name of the user-facing argument, used in messages.
    designs
        Ensembles built for deletion (``deletion_design`` of the object, e.g. ``"sharded"``) accepted
        as a whole; their member models are checked when they are built.
    allow_minified
        Accept a minified model (latent only), for callers that bring the counts themselves.
    """
    from scvi.model.base import BaseModelClass

    if not isinstance(model, BaseModelClass) and getattr(model, "deletion_design", None) is not None:
        return _check_ensemble(model, task=task, argument=argument, designs=designs)

    if not isinstance(model, BaseModelClass):
        raise TypeError(
            f"`{argument}` must be a trained scvi-tools model for {task}: {_supported_text(supported)}; "
            f"got {type(model).__name__}."
        )
    if not isinstance(model, _classes(supported)):
        raise TypeError(
            f"{task.capitalize()} supports {_supported_text(supported)}; `{argument}` is a "
            f"{type(model).__module__}.{type(model).__name__}."
        )
    if getattr(model, "adata", None) is None:
        raise ValueError(
            f"`{argument}` has no AnnData (it was loaded or built without one). Load it with the data it was "
            f"trained on: `{type(model).__name__}.load(path, adata=adata)`."
        )
    if not _compat.check_if_trained(model):
        raise RuntimeError(f"`{argument}` is not trained yet; call `{argument}.train()` first.")
    if _compat.is_minified(model) and not allow_minified:
        raise ValueError(
            f"`{argument}` uses a minified AnnData, which holds no counts; {task} needs the full counts. "
            "Load the model with the full AnnData."
        )
    registered = _compat.registered_var_names(model)
    genes = _compat.registered_anndata(model).var_names
    if registered is not None and (len(registered) != len(genes) or not np.array_equal(np.asarray(registered), genes)):
        raise ValueError(
            f"The AnnData of `{argument}` no longer has the genes it was set up with, in the same order "
            f"({len(registered)} registered, {len(genes)} now). Use the AnnData the model was trained on, "
            "or subset it with `adata[:, registered_genes]`."
        )
    recorded = getattr(model, CELL_ORDER_ATTR, None)
    if recorded is not None and recorded != cell_order_digest(model.adata.obs_names):
        raise ValueError(
            f"The cells of `{argument}`'s AnnData are not the ones, in the same order, that it was trained with: "
            "its training, validation and forget indices are positions and would point at other cells. Load the "
            "model with the AnnData it was trained on, with the cells in their original order."
        )


def _bad_values(block: Any) -> tuple[int, int, int]:
    """Counts of NaN, infinite and negative entries in a dense or sparse block."""
    values = block.data if sp.issparse(block) else np.asarray(block)
    if values.dtype.kind not in "fc":
        return 0, 0, int((values < 0).sum()) if values.dtype.kind == "i" else 0
    return int(np.isnan(values).sum()), int(np.isinf(values).sum()), int((values < 0).sum())


def check_counts(model: BaseModelClass, positions: np.ndarray | None = None, *, chunk: int = 10_000) -> None:
    """Raise a ``ValueError`` if the model's registered counts hold NaN, infinite or negative values.

    scvi-tools models need raw non-negative counts; such values would otherwise fail deep inside a
    fit with a distribution-constraint error. Only the cells at ``positions`` (all by default) are
    read, ``chunk`` cells at a time.
    """
    from scvi import REGISTRY_KEYS

    keys = [REGISTRY_KEYS.X_KEY]
    if REGISTRY_KEYS.PROTEIN_EXP_KEY in model.adata_manager.data_registry:
        keys.append(REGISTRY_KEYS.PROTEIN_EXP_KEY)
    # the order does not matter for counting: sorted rows, with runs read as slices (a backed matrix
    # reads an index array row by row, a slice at once)
    rows = np.arange(model.adata.n_obs) if positions is None else np.unique(np.asarray(positions, dtype=np.int64))
    for key in keys:
        data = model.adata_manager.get_from_registry(key)
        nan = inf = neg = 0
        for start in range(0, rows.size, chunk):
            part = rows[start : start + chunk]
            index = slice(int(part[0]), int(part[-1]) + 1) if part[-1] - part[0] + 1 == part.size else part
            block = data.iloc[index] if hasattr(data, "iloc") else data[index]  # rows of a DataFrame too
            block = block.to_numpy() if hasattr(block, "to_numpy") else block
            a, b, c = _bad_values(block)
            nan, inf, neg = nan + a, inf + b, neg + c
        if nan or inf or neg:
            what = ", ".join(f"{n} {label}" for n, label in ((nan, "NaN"), (inf, "infinite"), (neg, "negative")) if n)
            raise ValueError(
                f"The model's registered {'counts' if key == REGISTRY_KEYS.X_KEY else key} contain {what} "
                "value(s). scvi-tools models need raw, non-negative, finite counts: fix the AnnData (e.g. "
                "`adata.X = adata.layers['counts']`) and load the model with it."
            )
