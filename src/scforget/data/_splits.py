"""Forget sets and member/non-member splits decided before training."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from scforget._core import check_int, check_number, close_matches, doc_params, resolve_seed

if TYPE_CHECKING:
    from anndata import AnnData


#: The roles of a split, in display order.
ROLES = ("forget", "holdout", "retain", "unseen", "validation", "calibration")


def _frozen(a: Any) -> np.ndarray:
    arr = np.sort(np.asarray(a, dtype=np.int64))
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class ForgetSplit:
    """Positions of the cells in each role of an unlearning experiment.

    All arrays are sorted positional indices into the AnnData the split was built on, and are
    pairwise disjoint.

    Attributes
    ----------
    forget
        Training cells that will be forgotten (the members whose deletion is requested).
    holdout
        Cells of the same group as ``forget`` that are never trained on: non-members sharing the
        forget set's biology, the fair comparison for a membership audit.
    retain
        Training cells that stay.
    unseen
        Other never-trained cells (a generic held-out set for utility and audits).
    validation
        Never-trained cells for monitoring and early stopping; disjoint from every audit set.
    calibration
        Never-trained cells of the same kind as ``forget`` that an unlearning method may look at (to
        learn how a never-trained cell of that kind is fitted) and that no audit uses: carved out of
        the non-members with :meth:`carve_calibration`. Empty by default.
    description
        A short human-readable description of how the split was made.
    """

    forget: np.ndarray
    holdout: np.ndarray
    retain: np.ndarray
    unseen: np.ndarray
    validation: np.ndarray = field(default_factory=lambda: _frozen([]))
    description: str = ""
    calibration: np.ndarray = field(default_factory=lambda: _frozen([]))

    def __post_init__(self) -> None:
        for name in ROLES:
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        allpos = np.concatenate([getattr(self, name) for name in ROLES])
        if np.unique(allpos).size != allpos.size:
            raise ValueError("The roles of a ForgetSplit must be disjoint.")

    @property
    def train(self) -> np.ndarray:
        """Cells the model is trained on: ``forget`` and ``retain``."""
        return _frozen(np.union1d(self.forget, self.retain))

    @property
    def n_obs(self) -> int:
        """Number of cells covered by the split."""
        return sum(len(getattr(self, f)) for f in ROLES)

    def datasplitter_kwargs(self) -> dict:
        """Keyword arguments for ``model.train(datasplitter_kwargs=...)`` that train on :attr:`train`.

        The validation cells become scvi-tools' validation set and every never-trained cell its test
        set (calibration cells included), so ``model.train_indices`` equals :attr:`train` afterwards.
        """
        test = np.union1d(np.union1d(self.holdout, self.unseen), self.calibration)
        return {"external_indexing": [self.train.copy(), self.validation.copy(), test]}

    def summary(self) -> pd.DataFrame:
        """Number of cells per role."""
        return pd.DataFrame({"role": ROLES, "n_cells": [len(getattr(self, r)) for r in ROLES]}).set_index("role")

    def carve_calibration(self, fraction: float, *, seed: int | None = None) -> ForgetSplit:
        """A copy in which a random ``fraction`` of the non-members (``holdout``) become calibration cells.

        The training cells, and so every model trained on the split, stay the same; the audit keeps
        the remaining non-members. Methods that calibrate to never-trained cells of the forget set's
        kind (``calibrated_neggrad``'s ``calibration=``) take :attr:`calibration`, so they never see
        a cell the audit later uses as a non-member.

        Parameters
        ----------
        fraction
            Share of the non-members moved to calibration, in ``[0, 1)``; at least one non-member stays.
        seed
            Seed of the random choice; ``None`` follows :attr:`scvi.settings.seed`.

        Returns
        -------
        The new split (this one is unchanged).
        """
        fraction = _check_fraction(fraction, "fraction")
        if self.calibration.size:
            raise ValueError("This split already has calibration cells; carve them once, from the original split.")
        n = int(round(fraction * self.holdout.size))
        if fraction > 0 and n == 0:
            raise ValueError(
                f"`fraction`={fraction} of {self.holdout.size} non-member(s) rounds to no calibration cell; raise "
                "`fraction` or hold out more cells of the group."
            )
        if n >= self.holdout.size:
            raise ValueError(f"`fraction`={fraction} would leave no non-member for the audit; lower it.")
        rng = np.random.RandomState(resolve_seed(seed))
        moved = rng.permutation(self.holdout)[:n]
        return replace(
            self,
            holdout=np.setdiff1d(self.holdout, moved),
            calibration=moved,
            description=f"{self.description}; {n} of the non-members kept for calibration",
        )

    def __repr__(self) -> str:
        counts = ", ".join(f"{r}={len(getattr(self, r))}" for r in ROLES)
        return f"ForgetSplit({counts}; {self.description})"


def _check_fraction(value: float, argument: str, *, upper_inclusive: bool = False) -> float:
    return check_number(value, argument, minimum=0.0, maximum=1.0, exclusive_maximum=not upper_inclusive)


def _check_rest(unseen_fraction: float, validation_fraction: float, unseen_name: str = "unseen_fraction") -> None:
    _check_fraction(unseen_fraction, unseen_name)
    _check_fraction(validation_fraction, "validation_fraction")
    if unseen_fraction + validation_fraction >= 1:
        raise ValueError(f"`{unseen_name} + validation_fraction` must be below 1 so that cells remain to train on.")


def _split_rest(
    rest: np.ndarray, rng: np.random.RandomState, unseen_fraction: float, validation_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rest = rng.permutation(rest)
    n_unseen = int(round(unseen_fraction * rest.size))
    n_val = int(round(validation_fraction * rest.size))
    return rest[n_unseen + n_val :], rest[:n_unseen], rest[n_unseen : n_unseen + n_val]


_DOC_ADATA = """\
    adata
        The AnnData the model will be trained on (the split's positions refer to its cells)."""

_DOC_REST = """\
    unseen_fraction
        Fraction of the other cells (outside the forget set and its non-members) held out of training as
        generic unseen cells.
    validation_fraction
        Fraction of the other cells used for validation only.
    seed
        Seed of the random assignment; ``None`` follows :attr:`scvi.settings.seed`."""


@doc_params(adata=_DOC_ADATA, rest=_DOC_REST)
def structured_forget(
    adata: AnnData,
    key: str,
    value: Any,
    *,
    holdout_fraction: float = 0.5,
    unseen_fraction: float = 0.1,
    validation_fraction: float = 0.05,
    seed: int | None = None,
) -> ForgetSplit:
    """Forget a whole group of cells (a cell type, cluster or donor).

    A random ``holdout_fraction`` of the group is set aside before training as never-trained
    non-members with the same biology, so that a membership audit compares like with like
    (reference-study-spec section 8, E3). The remaining cells are split into retain, unseen and
    validation cells.

    Parameters
    ----------
    {adata}
    key
        Column of ``adata.obs`` defining the groups.
    value
        The group to forget, or a list of groups.
    holdout_fraction
        Fraction of the group held out of training.
    {rest}

    Returns
    -------
    The split; train the model on ``split.train`` (e.g. with :meth:`ForgetSplit.datasplitter_kwargs`).

    Examples
    --------
    >>> split = scforget.data.structured_forget(adata, "cell_type", "DC", holdout_fraction=0.5)
    >>> model.train(datasplitter_kwargs=split.datasplitter_kwargs())
    """
    if key not in adata.obs.columns:
        raise KeyError(f"`key`={key!r} is not a column of adata.obs.{close_matches(key, adata.obs.columns)}")
    _check_fraction(holdout_fraction, "holdout_fraction")
    _check_rest(unseen_fraction, validation_fraction)
    seed = resolve_seed(seed)
    values = list(value) if isinstance(value, list | tuple | set) else [value]
    col = adata.obs[key].astype(str)
    present = set(col.unique())
    wanted = [str(v) for v in values]
    missing = [v for v in wanted if v not in present]
    if missing:
        hint = close_matches(missing[0], present)
        raise ValueError(
            f"`value`={missing[0]!r} does not occur in adata.obs[{key!r}].{hint} "
            f"Available: {', '.join(sorted(present)[:20])}."
        )
    group = np.flatnonzero(col.isin(wanted).to_numpy())
    rng = np.random.RandomState(seed)
    group = rng.permutation(group)
    n_hold = int(round(holdout_fraction * group.size))
    holdout, forget = group[:n_hold], group[n_hold:]
    if forget.size == 0:
        raise ValueError(
            f"The group {value!r} has {group.size} cell(s); with holdout_fraction={holdout_fraction} none is left "
            "to forget. Lower `holdout_fraction`."
        )
    rest = np.setdiff1d(np.arange(adata.n_obs), group)
    retain, unseen, validation = _split_rest(rest, rng, unseen_fraction, validation_fraction)
    desc = f"{key} in {values!r}, holdout_fraction={holdout_fraction}, seed={seed}"
    return ForgetSplit(forget, holdout, retain, unseen, validation, description=desc)


@doc_params(adata=_DOC_ADATA, rest=_DOC_REST)
def scattered_forget(
    adata: AnnData,
    n: int,
    *,
    holdout_size: int | None = None,
    unseen_fraction: float = 0.1,
    validation_fraction: float = 0.05,
    seed: int | None = None,
) -> ForgetSplit:
    """Forget ``n`` random cells, with ``holdout_size`` random never-trained cells as their non-members.

    Parameters
    ----------
    {adata}
    n
        Number of cells to forget.
    holdout_size
        Number of random cells held out of training as non-members; defaults to ``n``.
    {rest}

    Returns
    -------
    The split.
    """
    n = check_int(n, "n", minimum=1)
    holdout_size = n if holdout_size is None else check_int(holdout_size, "holdout_size", minimum=0)
    if n + holdout_size >= adata.n_obs:
        raise ValueError(
            f"`n` + `holdout_size` = {n + holdout_size} must be below the number of cells ({adata.n_obs})."
        )
    _check_rest(unseen_fraction, validation_fraction)
    seed = resolve_seed(seed)
    rng = np.random.RandomState(seed)
    perm = rng.permutation(adata.n_obs)
    forget, holdout = perm[:n], perm[n : n + holdout_size]
    retain, unseen, validation = _split_rest(perm[n + holdout_size :], rng, unseen_fraction, validation_fraction)
    desc = f"{n} random cells, holdout_size={holdout_size}, seed={seed}"
    return ForgetSplit(forget, holdout, retain, unseen, validation, description=desc)


@doc_params(adata=_DOC_ADATA)
def heldout_split(
    adata: AnnData,
    fraction: float = 0.15,
    *,
    stratify_key: str | None = None,
    validation_fraction: float = 0.0,
    seed: int | None = None,
) -> ForgetSplit:
    """Split cells into training cells and generic unseen cells (no forget set yet).

    Parameters
    ----------
    {adata}
    fraction
        Fraction of cells held out as unseen.
    stratify_key
        Optional ``adata.obs`` column to stratify the hold-out by (each group keeps its share).
    validation_fraction
        Fraction of cells used for validation only.
    seed
        Seed of the random assignment; ``None`` follows :attr:`scvi.settings.seed`.

    Returns
    -------
    A :class:`ForgetSplit` with empty ``forget`` and ``holdout``; ``retain`` holds the training cells.
    """
    _check_rest(fraction, validation_fraction, "fraction")
    seed = resolve_seed(seed)
    rng = np.random.RandomState(seed)
    if stratify_key is None:
        groups = [np.arange(adata.n_obs)]
    else:
        if stratify_key not in adata.obs.columns:
            raise KeyError(
                f"`stratify_key`={stratify_key!r} is not a column of adata.obs."
                f"{close_matches(stratify_key, adata.obs.columns)}"
            )
        codes = pd.Categorical(adata.obs[stratify_key]).codes
        groups = [np.flatnonzero(codes == c) for c in np.unique(codes)]
    train, unseen, val = [], [], []
    for g in groups:
        r, u, v = _split_rest(g, rng, fraction, validation_fraction)
        train.append(r)
        unseen.append(u)
        val.append(v)
    desc = f"heldout fraction={fraction}, stratify_key={stratify_key!r}, seed={seed}"
    empty = np.zeros(0, dtype=np.int64)
    return ForgetSplit(
        empty, empty, np.concatenate(train), np.concatenate(unseen), np.concatenate(val), description=desc
    )
