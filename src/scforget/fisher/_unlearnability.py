"""A pre-flight heuristic: can approximate unlearning separate these cells from the rest?"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from lightning.pytorch.callbacks import Callback

from ._overlap import FisherOverlap, overlap

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

    from scforget.data import CellSpec

_MAIN = ("encoder", "bottleneck", "decoder_hidden", "decoder_output", "label_specific")


@dataclass
class Unlearnability:
    """Verdict of :func:`unlearnability` (a heuristic, not a guarantee).

    Attributes
    ----------
    verdict
        ``"entangled"``, ``"partly separable"`` or ``"separable"``.
    message
        The verdict in words, with the retraining estimate.
    evidence
        Per category: forget/retain cosine, the null cosine and their ratio (``relative_overlap``).
    separable_categories
        Categories whose relative overlap is below ``separable_below``.
    retrain_seconds
        Estimated wall time of retraining on the retain cells with the model's recipe.
    overlap
        The full :class:`~scforget.fisher.FisherOverlap`.
    """

    verdict: str
    message: str
    evidence: pd.DataFrame
    separable_categories: tuple[str, ...]
    retrain_seconds: float
    overlap: FisherOverlap

    def __str__(self) -> str:
        return self.message


class _EpochTimer(Callback):
    """Lightning callback recording the wall time of each training epoch."""

    def __init__(self):
        super().__init__()
        self.times: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.times.append(time.perf_counter() - self._start)


def estimate_retrain_seconds(
    model: BaseModelClass, n_retain: int, *, n_cells: int = 512, seed: int = 0, accelerator: str = "auto"
) -> float:
    """Estimate retraining time: time epochs of a fresh model on a subset, scale to the recipe.

    A fresh model of the same class and architecture is trained for two epochs on ``n_cells``
    random retain-sized cells; the second epoch's time (the first includes start-up costs),
    scaled by ``n_retain / n_cells`` and by the recorded number of training epochs (see
    :func:`scforget.methods.training_recipe`), is the estimate. Validation, early stopping and
    per-run start-up are ignored, so treat it as an order of magnitude.

    Parameters
    ----------
    model
        The trained model.
    n_retain
        Number of retain cells.
    n_cells
        Cells in the timing run.
    seed
        Seed of the subset.
    accelerator
        Lightning accelerator of the timing run.

    Returns
    -------
    Seconds.
    """
    from scforget._clone import fresh_model
    from scforget._recipe import training_recipe

    recipe = training_recipe(model)
    epochs = recipe.get("max_epochs") or recipe.get("epochs_run")
    if epochs is None:
        raise ValueError("The model records no training epochs; cannot estimate the retraining time.")
    batch_size = int(recipe.get("batch_size") or 128)
    n_obs = model.adata.n_obs
    rng = np.random.default_rng(seed)
    m = min(int(n_cells), n_obs, max(int(n_retain), 1))
    sub = np.sort(rng.choice(n_obs, size=m, replace=False))
    rest = np.setdiff1d(np.arange(n_obs), sub)
    fresh = fresh_model(model)
    timer = _EpochTimer()
    fresh.train(
        max_epochs=2,
        batch_size=batch_size,
        accelerator=accelerator,
        datasplitter_kwargs={"external_indexing": [sub, np.zeros(0, dtype=np.int64), rest]},
        enable_progress_bar=False,
        enable_checkpointing=False,
        callbacks=[timer],
    )
    per_epoch = timer.times[-1] if timer.times else float("nan")
    return float(per_epoch * (n_retain / m) * int(epochs))


def unlearnability(
    model: BaseModelClass,
    forget: CellSpec,
    retain: CellSpec | None = None,
    *,
    entangled_above: float = 0.25,
    separable_below: float = 0.1,
    n_null: int = 5,
    seed: int = 0,
    estimate_retrain: bool = True,
    progress_bar: bool = True,
) -> Unlearnability:
    """Pre-flight check: are the forget cells' parameters separable from the retain cells'?

    A **heuristic**. Parameter-space unlearning (SSD, Fisher forgetting, relative-Fisher scrubbing)
    edits the parameters that matter to the forget cells; that can only work if those parameters
    matter much less to the retain cells. For each parameter category this function compares the
    forget/retain Fisher cosine with the null reference of :func:`~scforget.fisher.overlap` (a
    random retain subset of the same size vs the other retain cells) as ``relative_overlap =
    cosine / null_cosine``:

    - every main category at or above ``entangled_above``: **entangled**, approximate methods are
      unlikely to match retraining, which is estimated with :func:`estimate_retrain_seconds`;
    - some categories below ``separable_below`` (e.g. CondSCVI's label-specific columns):
      **partly separable**, an edit restricted to those categories may help;
    - every category below ``separable_below``: **separable**.

    The reference study found a global cosine of 0.21–0.31 for a VAE vs 0.018 for a classifier, and
    no approximate method matched retraining. The thresholds are judgement calls, not calibrated
    error rates; read :attr:`Unlearnability.evidence` and confirm with an audit
    (:func:`scforget.audit`) of the unlearned model.

    Parameters
    ----------
    model
        A trained scvi-tools VAE model.
    forget
        The cells to forget.
    retain
        The retain cells (default: the other training cells).
    entangled_above
        Relative overlap from which a category counts as entangled.
    separable_below
        Relative overlap below which a category counts as separable.
    n_null
        Random subsets of the null reference.
    seed
        Seed of the null subsets and the timing run.
    estimate_retrain
        Time a short training run to estimate the retraining time (a few seconds); ``False``
        reports ``nan``.
    progress_bar
        Show progress bars.

    Returns
    -------
    An :class:`Unlearnability` with the verdict, its evidence and the retraining estimate.
    """
    if not 0 <= separable_below <= entangled_above:
        raise ValueError("Need 0 <= separable_below <= entangled_above.")
    ov = overlap(model, forget, retain, null="random", n_null=n_null, seed=seed, progress_bar=progress_bar)
    t = ov.table
    evidence = t.loc[[c for c in t.index if c != "global"], ["n_params", "cosine", "null_cosine", "null_cosine_sd"]]
    evidence = evidence.assign(relative_overlap=evidence["cosine"] / evidence["null_cosine"])
    main = evidence.loc[[c for c in evidence.index if c in _MAIN]]
    separable = tuple(main.index[main["relative_overlap"] < separable_below])
    entangled = tuple(main.index[main["relative_overlap"] >= entangled_above])
    n_retain = ov.retain.n_cells
    seconds = estimate_retrain_seconds(model, n_retain, seed=seed) if estimate_retrain else float("nan")
    eta = f"retraining on the {n_retain} retain cells is estimated to take about {seconds:,.0f} s"
    if len(separable) == len(main):
        verdict = "separable"
        text = (
            "The forget cells' Fisher information sits in other parameters than the retain cells' in every "
            "category: selective parameter edits (ssd, relative_fisher) may remove them without harming the "
            f"rest. Confirm with an audit; {eta}."
        )
    elif separable:
        verdict = "partly separable"
        text = (
            f"Only {', '.join(separable)} separate the forget cells from the retain cells; elsewhere their Fisher "
            "information overlaps. Edits restricted to those parameters may help, but approximate methods are "
            f"unlikely to match retraining in general; {eta}."
        )
    else:
        verdict = "entangled"
        text = (
            f"The forget cells share Fisher information with the retain cells ({len(entangled)} of {len(main)} "
            f"categories at >= {entangled_above:g} of the random-subset level; global cosine "
            f"{t.loc['global', 'cosine']:.2f} vs null {t.loc['global', 'null_cosine']:.2f}): approximate "
            f"methods are unlikely to match retraining; {eta}."
        )
    return Unlearnability(
        verdict=verdict,
        message=text,
        evidence=evidence,
        separable_categories=separable,
        retrain_seconds=seconds,
        overlap=ov,
    )
