"""The likelihood-ratio attack (LiRA) of Carlini et al. 2022 with scVI reference models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scvi.utils import track

from scforget._core import (
    drop_last_for_batchnorm,
    fresh_model,
    from_payload,
    model_payload,
    recipe_train_kwargs,
    run_jobs,
    seeded,
    training_positions,
    training_recipe,
    validation_positions,
)

from ._signals import compute_raw

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

#: Prior strength (pseudo-observations) of the pooled variance in the per-cell variance estimate.
VARIANCE_PRIOR = 4.0


def in_out_design(n_candidates: int, n_reference: int, seed: int) -> np.ndarray:
    """Boolean ``(n_reference, n_candidates)`` matrix: which reference model trains on which candidate.

    Every candidate is IN for exactly ``n_reference // 2`` models chosen at random, so each
    reference model sees about half of the candidates and every cell has IN and OUT fits.
    """
    rng = np.random.default_rng(seed)
    design = np.zeros((n_reference, n_candidates), dtype=bool)
    n_in = n_reference // 2
    for j in range(n_candidates):
        design[rng.permutation(n_reference)[:n_in], j] = True
    return design


def reference_epochs_of(model: BaseModelClass, reference_epochs: int | None) -> int:
    """Epochs to train each reference model: ``reference_epochs`` or the target's recipe."""
    if reference_epochs is not None:
        return int(reference_epochs)
    recipe = training_recipe(model)
    epochs = recipe.get("max_epochs") or recipe.get("epochs_run")
    if not epochs:
        raise ValueError(
            "Cannot tell how many epochs the model was trained for (no recorded recipe or history); "
            "pass `reference_epochs=`."
        )
    return int(epochs)


def train_reference(
    template: BaseModelClass,
    *,
    train: np.ndarray,
    validation: np.ndarray,
    seed: int,
    epochs: int,
    train_kwargs: dict[str, Any],
) -> dict:
    """One reference model: a fresh model of ``template``'s kind trained on ``train``; its payload.

    The fleet job of :func:`train_reference_models` (the same function runs in this process and on
    a cluster's workers, so both give the same weights for the same seed and thread count).
    """
    rest = np.setdiff1d(np.arange(template.adata.n_obs), np.union1d(train, validation))
    batch_size = int(train_kwargs.get("batch_size", 128))
    splitter = {"external_indexing": [train, validation, rest]}
    if drop_last_for_batchnorm(train.size, batch_size):
        splitter["drop_last"] = True
    with seeded(seed):
        ref = fresh_model(template)
        ref.train(
            max_epochs=epochs,
            datasplitter_kwargs=splitter,
            enable_progress_bar=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            **train_kwargs,
        )
    return model_payload(ref)


def train_reference_models(
    model: BaseModelClass,
    candidates: np.ndarray,
    design: np.ndarray,
    *,
    epochs: int,
    seed: int,
    progress_bar: bool = True,
    accelerator: str = "auto",
    devices: Any = "auto",
    fleet: Any = None,
) -> list[BaseModelClass]:
    """Train one fresh model per row of ``design`` with the target's architecture and recipe.

    Reference model ``r`` trains on the target's training cells outside the candidate pool plus
    the candidates marked IN in row ``r``; it validates on the target's validation cells outside
    the pool. ``model`` and its AnnData are not modified. With a ``fleet`` (a
    :class:`distributed.Client`) the references train in parallel on its workers.
    """
    recipe = training_recipe(model)
    other = np.setdiff1d(training_positions(model), candidates)
    val = np.setdiff1d(validation_positions(model), candidates)
    train_kwargs = {
        **recipe_train_kwargs(recipe),
        "batch_size": int(recipe.get("batch_size", 128)),
        "plan_kwargs": dict(recipe.get("plan_kwargs") or {}),
        "accelerator": accelerator,
        "devices": devices,
    }
    jobs = [
        {"train": np.union1d(other, candidates[design[r]]), "validation": val.copy(), "seed": seed * 100_003 + r}
        for r in range(design.shape[0])
    ]
    shared = {"template": model, "epochs": epochs, "train_kwargs": train_kwargs}
    if fleet is None:  # one at a time, with a progress bar
        iterator = track(jobs, description="LiRA reference models", disable=not progress_bar)
        payloads = [run_jobs(train_reference, [job], shared=shared)[0] for job in iterator]
    else:
        payloads = run_jobs(train_reference, jobs, fleet=fleet, shared=shared)
    return [from_payload(model, p) for p in payloads]


def reference_signal(
    refs: Sequence[BaseModelClass], model: BaseModelClass, candidates: np.ndarray, batch_size: int = 1024
) -> np.ndarray:
    """NB log-likelihood of every candidate under every reference model, ``(n_reference, n_candidates)``."""
    names = model.adata.obs_names
    out = []
    for i, ref in enumerate(refs):
        if not ref.adata.obs_names.equals(names):
            raise ValueError(
                f"`reference_models[{i}]` is set up on different cells than the audited model; reference "
                "models must share the audited model's AnnData (same obs_names in the same order)."
            )
        out.append(compute_raw(ref, candidates, batch_size=batch_size)["recon_ll"])
    return np.stack(out)


def _gaussian_fit(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell mean and variance of ``values`` over the rows where ``mask`` is true.

    The variance is the per-cell sample variance shrunk, on the log scale, towards the variances
    pooled over all cells (a weighted geometric mean; :data:`VARIANCE_PRIOR` pseudo-observations).
    Per-cell log-likelihoods are strongly heteroscedastic (their spread across models grows with a
    cell's depth), so pooling on the absolute scale would let a few wide cells inflate every other
    cell's variance and cost power; on the log scale each cell keeps its own order of magnitude. With
    one fit per cell it is the pooled variance, Carlini et al.'s fixed-variance variant for few
    reference models.
    """
    cnt = mask.sum(0).astype(np.float64)
    v = np.where(mask, values, 0.0)
    mean = v.sum(0) / np.maximum(cnt, 1)
    ss = (np.where(mask, values - mean, 0.0) ** 2).sum(0)
    dof = np.maximum(cnt - 1, 0)
    floor = 1e-12
    s2 = np.maximum(ss / np.maximum(dof, 1), floor)
    if dof.sum() > 0:
        log_pooled = float((dof * np.log(s2)).sum() / dof.sum())
    else:
        log_pooled = float(np.log(max(np.var(values[mask]), floor)))
    log_var = (dof * np.log(s2) + VARIANCE_PRIOR * log_pooled) / (dof + VARIANCE_PRIOR)
    return mean, np.exp(log_var)


def _log_normal(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    return -0.5 * (np.log(2 * np.pi * var) + (x - mean) ** 2 / var)


def lira_scores(target: np.ndarray, ref: np.ndarray, in_mask: np.ndarray | None) -> tuple[np.ndarray, str]:
    """LiRA membership scores of the target model's signal against reference fits.

    Parameters
    ----------
    target
        The audited model's signal per candidate, ``(n,)``.
    ref
        Reference models' signal, ``(n_reference, n)``.
    in_mask
        Which reference model trained on which candidate; ``None`` means all are OUT.

    Returns
    -------
    ``(scores, mode)``: online mode (log-likelihood ratio of the IN and OUT Gaussians) when every
    candidate has at least one IN and one OUT fit, else offline mode (one-sided z-score against
    the OUT Gaussian; a higher likelihood than the OUT models means member).
    """
    ref = np.asarray(ref, dtype=np.float64)
    in_mask = np.zeros(ref.shape, dtype=bool) if in_mask is None else np.asarray(in_mask, dtype=bool)
    out_mask = ~in_mask
    if not out_mask.any(0).all():
        raise ValueError("Every candidate needs at least one reference model that did not train on it.")
    mu_out, var_out = _gaussian_fit(ref, out_mask)
    if in_mask.any(0).all():
        mu_in, var_in = _gaussian_fit(ref, in_mask)
        return _log_normal(target, mu_in, var_in) - _log_normal(target, mu_out, var_out), "online"
    return (target - mu_out) / np.sqrt(var_out), "offline"
