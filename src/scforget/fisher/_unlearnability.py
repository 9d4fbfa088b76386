"""A pre-flight heuristic: can approximate unlearning separate these cells from the rest?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from scforget._core import check_number, estimate_retrain_seconds, resolve_seed

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
        Estimated wall time of retraining on the retain cells with the model's recipe (``nan`` when
        unknown).
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


def unlearnability(
    model: BaseModelClass,
    forget: CellSpec,
    retain: CellSpec | None = None,
    *,
    entangled_above: float = 0.25,
    separable_below: float = 0.1,
    n_null: int = 5,
    seed: int | None = None,
    retrain_seconds: float | None = None,
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
      unlikely to match retraining (its cost is estimated from the model's recorded training time);
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
        A trained :class:`~scvi.model.SCVI`, :class:`~scvi.model.CondSCVI` or :class:`~scvi.model.SCANVI`
        (or a scforget subclass).
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
        Seed of the null subsets; ``None`` follows :attr:`scvi.settings.seed`.
    retrain_seconds
        What one retraining costs, if the caller knows it (e.g. the benchmark, which times its
        retraining). By default it is estimated from the training time the model recorded (scforget's
        model classes record it; stock scvi-tools models do not, and then it is reported as unknown).
        Nothing is trained here.
    progress_bar
        Show progress bars.

    Returns
    -------
    An :class:`Unlearnability` with the verdict, its evidence and the retraining estimate.
    """
    separable_below = check_number(separable_below, "separable_below", minimum=0)
    entangled_above = check_number(entangled_above, "entangled_above", minimum=0)
    if separable_below > entangled_above:
        raise ValueError("`separable_below` must not exceed `entangled_above`.")
    retrain_seconds = check_number(retrain_seconds, "retrain_seconds", minimum=0, allow_none=True)
    seed = resolve_seed(seed)
    ov = overlap(model, forget, retain, null="random", n_null=n_null, seed=seed, progress_bar=progress_bar)
    t = ov.table
    evidence = t.loc[[c for c in t.index if c != "global"], ["n_params", "cosine", "null_cosine", "null_cosine_sd"]]
    evidence = evidence.assign(relative_overlap=evidence["cosine"] / evidence["null_cosine"])
    main = evidence.loc[[c for c in evidence.index if c in _MAIN]]
    separable = tuple(main.index[main["relative_overlap"] < separable_below])
    entangled = tuple(main.index[main["relative_overlap"] >= entangled_above])
    n_retain = ov.retain.n_cells
    if retrain_seconds is None:
        estimate = estimate_retrain_seconds(model, n_retain)
        seconds = float("nan") if estimate is None else estimate
    else:
        seconds = float(retrain_seconds)
    if np.isfinite(seconds):
        eta = f"retraining on the {n_retain} retain cells is estimated to take about {seconds:,.0f} s"
    else:
        eta = f"the cost of retraining on the {n_retain} retain cells is unknown (the model records no training time)"
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
