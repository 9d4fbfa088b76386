"""A pre-flight heuristic: can approximate unlearning separate these cells from the rest?"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from scforget._core import check_int, check_number, estimate_retrain_seconds, resolve_seed, training_positions
from scforget.data import as_positions

from ._overlap import FisherOverlap, overlap
from ._preflight_scores import MAX_NEIGHBOUR_POOL, isolation, latent_and_fit, memorisation_auc

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

    from scforget.data import CellSpec

#: Retain cells the Fisher is estimated from with ``max_retain="auto"`` (at least twice the forget set).
DEFAULT_MAX_RETAIN = 1000
#: Null subsets drawn by default.
DEFAULT_N_NULL = 3

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
    isolation
        How much the forget cells are their own latent neighbours beyond chance (0: mixed in with
        the retain cells, as a random set is; 1: a group apart, as a cell type absent from the
        retain cells is).
    memorisation_auc
        AUC of the fit per count, forget cells against the ``calibration`` cells (never trained, of
        the forget set's kind): the loss attack on cells no audit uses. ``nan`` without them.
    seconds
        Wall time of the check.
    """

    verdict: str
    message: str
    evidence: pd.DataFrame
    separable_categories: tuple[str, ...]
    retrain_seconds: float
    overlap: FisherOverlap
    isolation: float = float("nan")
    memorisation_auc: float = float("nan")
    seconds: float = float("nan")

    def __str__(self) -> str:
        return self.message


def unlearnability(
    model: BaseModelClass,
    forget: CellSpec,
    retain: CellSpec | None = None,
    *,
    calibration: CellSpec | None = None,
    entangled_above: float = 0.25,
    separable_below: float = 0.1,
    n_null: int = DEFAULT_N_NULL,
    max_retain: int | Literal["auto"] | None = "auto",
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

    - every main category at or above ``entangled_above``: **entangled**, parameter-space edits are
      unlikely to match retraining (its cost is estimated from the model's recorded training time);
    - some categories below ``separable_below`` (e.g. CondSCVI's label-specific columns):
      **partly separable**, an edit restricted to those categories may help;
    - every category below ``separable_below``: **separable**.

    Two further scores come from forward passes only: :attr:`Unlearnability.isolation` (are the
    forget cells their own latent neighbours?) and, given ``calibration`` cells,
    :attr:`Unlearnability.memorisation_auc` (the loss attack of forget against calibration cells on
    the input model). They are reported next to the verdict, which they do not change; the
    benchmarks page evaluates all three against what unlearning achieved.

    The reference study found a global cosine of 0.21–0.31 for a VAE vs 0.018 for a classifier, and
    no approximate method matched retraining. The thresholds are judgement calls, not calibrated
    error rates; read :attr:`Unlearnability.evidence` and confirm with an audit
    (:func:`scforget.audit`) of the unlearned model.

    The verdict does not predict training-based methods: on the benchmarks page's designs (pbmc3k
    cell types, scattered sets, pseudo-donors; mouse-brain clusters) it is ``entangled`` everywhere,
    while ``rewind`` (and on some designs NegGrad+ or the calibrated ascent) reached the retrain band
    on nearly all of them.

    Parameters
    ----------
    model
        A trained :class:`~scvi.model.SCVI`, :class:`~scvi.model.CondSCVI` or :class:`~scvi.model.SCANVI`
        (or a scforget subclass).
    forget
        The cells to forget.
    retain
        The retain cells (default: the other training cells).
    calibration
        Never-trained cells of the forget set's kind (not the cells you will audit with), for the
        memorisation score; ``None`` leaves it ``nan``.
    entangled_above
        Relative overlap from which a category counts as entangled.
    separable_below
        Relative overlap below which a category counts as separable.
    n_null
        Random subsets of the null reference.
    max_retain
        Compute the retain Fisher (and draw the null subsets) from at most this many random retain
        cells: the Fisher is a mean over cells, so a large random subset estimates it closely at a
        fraction of the cost, and the cost no longer grows with the training set. ``"auto"``:
        :data:`DEFAULT_MAX_RETAIN` cells, or twice the forget set if that is more (the null subsets
        are forget-sized draws from the retain cells against the rest). ``None`` uses every retain
        cell (0.03-0.07x one retrain on pbmc3k, against 0.016-0.024x with ``"auto"``; benchmarks page).
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
    names = model.adata.obs_names
    f_pos = as_positions(forget, names, argument="forget")
    cal_pos = None
    if calibration is not None:
        cal_pos = as_positions(calibration, names, argument="calibration")
        trained = np.intersect1d(cal_pos, training_positions(model))
        if trained.size:
            raise ValueError(
                f"{trained.size} of the `calibration` cells were training cells of the model; pass cells it never "
                "trained on."
            )
        if cal_pos.size < 2:
            raise ValueError("`calibration` must contain at least two cells.")
    start = time.perf_counter()
    r_all = (
        np.setdiff1d(training_positions(model), f_pos)
        if retain is None
        else as_positions(retain, names, argument="retain")
    )
    n_retain = int(r_all.size)  # what a retrain trains on, whatever the Fisher is estimated from
    if isinstance(max_retain, str):
        if max_retain != "auto":
            raise ValueError(
                f"`max_retain` must be 'auto', None (every retain cell) or a whole number; got {max_retain!r}."
            )
        max_retain = max(DEFAULT_MAX_RETAIN, 2 * f_pos.size)
    elif max_retain is not None:
        max_retain = check_int(max_retain, "max_retain", minimum=2 * f_pos.size)
    if max_retain is not None and r_all.size > max_retain:
        r_all = np.sort(np.random.default_rng(seed).choice(r_all, size=max_retain, replace=False))
    ov = overlap(model, f_pos, r_all, null="random", n_null=n_null, seed=seed, progress_bar=progress_bar)
    t = ov.table
    evidence = t.loc[[c for c in t.index if c != "global"], ["n_params", "cosine", "null_cosine", "null_cosine_sd"]]
    evidence = evidence.assign(relative_overlap=evidence["cosine"] / evidence["null_cosine"])
    main = evidence.loc[[c for c in evidence.index if c in _MAIN]]
    separable = tuple(main.index[main["relative_overlap"] < separable_below])
    entangled = tuple(main.index[main["relative_overlap"] >= entangled_above])
    r_pos = r_all
    rng = np.random.default_rng(seed)
    if r_pos.size > MAX_NEIGHBOUR_POOL:
        r_pos = np.sort(rng.choice(r_pos, size=MAX_NEIGHBOUR_POOL, replace=False))
    f_latent, f_fit = latent_and_fit(model, f_pos)
    r_latent, _ = latent_and_fit(model, r_pos)
    iso = isolation(f_latent, r_latent)
    mem = float("nan") if cal_pos is None else memorisation_auc(f_fit, latent_and_fit(model, cal_pos)[1])
    seconds_taken = time.perf_counter() - start
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
            "information overlaps. Edits restricted to those parameters may help, but parameter-space edits are "
            f"unlikely to match retraining in general; {eta}."
        )
    else:
        verdict = "entangled"
        text = (
            f"The forget cells share Fisher information with the retain cells ({len(entangled)} of {len(main)} "
            f"categories at >= {entangled_above:g} of the random-subset level; global cosine "
            f"{t.loc['global', 'cosine']:.2f} vs null {t.loc['global', 'null_cosine']:.2f}): parameter-space "
            "edits (ssd, fisher_forgetting, relative_fisher) are unlikely to match retraining. This says nothing "
            f"about training-based methods such as rewind (benchmarks page); {eta}."
        )
    text += f" Latent isolation of the forget cells: {iso:.2f} (0: mixed in, 1: a group apart)"
    text += "." if cal_pos is None else f"; memorisation AUC against the calibration cells: {mem:.2f}."
    return Unlearnability(
        verdict=verdict,
        message=text,
        evidence=evidence,
        separable_categories=separable,
        retrain_seconds=seconds,
        overlap=ov,
        isolation=iso,
        memorisation_auc=mem,
        seconds=seconds_taken,
    )
