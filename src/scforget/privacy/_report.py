"""The result of a membership-inference audit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from scforget._core import close_matches

from . import _donors, _verdict
from . import _metrics as M

if TYPE_CHECKING:
    from anndata import AnnData
    from scvi.model.base import BaseModelClass


def describe_model(model: BaseModelClass) -> str:
    """A short name for a model in titles: its class, and how it was last unlearned if it was."""
    records = getattr(model, "unlearning_records_", None) or []
    name = type(model).__name__
    return f"{name} after {records[-1].get('method', 'unlearning')}" if records else name


#: Columns of :meth:`AuditReport.summary`, in order (short, so the table fits a terminal).
SUMMARY_COLUMNS = ("auc", "ci_low", "ci_high", "tpr_1pct", "eps_lb", "direction")
#: The extra columns of ``summary(full=True)``.
FULL_COLUMNS = (*SUMMARY_COLUMNS, "tpr_0.1pct", "p_value", "advantage", "n_members", "n_nonmembers")


def direction_of(auc: float, lo: float, hi: float, *, unlearned: bool) -> str:
    """``direction`` of one attack from its AUC and CI (the point estimate alone when there is no CI)."""
    if not np.isfinite(auc):
        return "undefined"
    if np.isfinite(lo) and np.isfinite(hi):
        above, below = lo > 0.5, hi < 0.5
    else:
        above, below = auc > 0.5, auc < 0.5
    if above:
        return "member"
    if below:
        return "over-unlearned" if unlearned else "reversed"
    return "chance"


def attack_metrics(
    scores: np.ndarray, labels: np.ndarray, *, n_bootstrap: int, seed: int, unlearned: bool = False
) -> dict[str, Any]:
    """One row of :data:`FULL_COLUMNS`: AUC with CI, TPR at low FPR, epsilon bound, direction, counts.

    A TPR at FPR ``a`` needs at least ``1 / a`` non-members (one false positive already exceeds ``a``
    with fewer): below that it is NaN, not the TPR at FPR 0.
    """
    labels = np.asarray(labels).astype(bool)
    n1, n0 = int(labels.sum()), int((~labels).sum())
    row: dict[str, Any] = dict.fromkeys(FULL_COLUMNS, np.nan)
    row.update(n_members=n1, n_nonmembers=n0, direction="undefined")
    if n1 == 0 or n0 == 0:
        return row
    auc, lo, hi = M.auc_with_ci(scores, labels, n_bootstrap=n_bootstrap, seed=seed)
    row.update(
        auc=auc,
        ci_low=lo,
        ci_high=hi,
        advantage=M.advantage(auc),
        direction=direction_of(auc, lo, hi, unlearned=unlearned),
        eps_lb=M.epsilon_lower_bound_roc(scores, labels, delta=1e-5, confidence=0.95, seed=seed),
        p_value=M.auc_p_value(scores, labels),
    )
    for col, fpr in M.FPR_LEVELS.items():
        row[col] = M.tpr_at_fpr(scores, labels, fpr) if M.reachable(fpr, n0) else np.nan
    return row


@dataclass
class AuditReport:
    """Membership-inference audit of one model (returned by :func:`scforget.privacy.audit`).

    Attributes
    ----------
    per_cell
        One row per audited cell: ``label`` (1 member, 0 non-member), one out-of-fold or
        threshold score per attack (higher = member), the ``groupby`` columns and the donor column.
        Indexed by anonymous integer ids unless the audit ran with ``include_names=True``.
    attacks
        The attacks run, in order.
    n_bootstrap
        Bootstrap resamples behind the AUC intervals.
    seed
        Seed of folds, bootstrap and reference models.
    groupby
        The ``adata.obs`` columns available to :meth:`by_group`.
    info
        How the audit ran: the AnnData, design checks, classifier, folds, references, matched
        negatives, composition, whether the model was unlearned, timings.
    donor_key
        The ``adata.obs`` column of donors behind :meth:`by_donor` and :meth:`donor_summary`.
    """

    per_cell: pd.DataFrame
    attacks: tuple[str, ...]
    n_bootstrap: int
    seed: int
    groupby: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    donor_key: str | None = None
    _positions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    _n_obs: int = field(default=0, repr=False)
    _summary: pd.DataFrame | None = field(default=None, init=False, repr=False)
    _donor_summary: pd.DataFrame | None = field(default=None, init=False, repr=False)

    @property
    def unlearned(self) -> bool:
        """Whether the audited model had been unlearned (then scores below chance mean over-unlearning)."""
        return bool(self.info.get("unlearned", False))

    def _metrics(self, sub: pd.DataFrame) -> list[dict[str, Any]]:
        y = sub["label"].to_numpy()
        return [
            attack_metrics(sub[a].to_numpy(), y, n_bootstrap=self.n_bootstrap, seed=self.seed, unlearned=self.unlearned)
            for a in self.attacks
        ]

    def summary(self, full: bool = False) -> pd.DataFrame:
        """One row per attack: AUC and its 95% CI, TPR at 1% FPR, epsilon bound, direction.

        ``tpr_1pct`` and ``tpr_0.1pct`` (TPR at 1% and 0.1% FPR) are NaN when there are too few non-members to resolve that
        FPR (fewer than 100 and 1,000); :meth:`notes` says so. ``eps_lb`` is a 95% lower bound at
        delta = 1e-5 (threshold chosen on half of the cells, bound computed on the other half with
        Clopper-Pearson bounds: :func:`scforget.privacy.metrics.epsilon_lower_bound_roc`).
        ``direction`` is ``"member"`` when the AUC's CI lies above 0.5, ``"chance"`` when it covers
        0.5, and below 0.5 ``"over-unlearned"`` for an unlearned model (the Streisand effect) or
        ``"reversed"`` for one never unlearned (a composition confound such as rarer cells among
        the members, or a score that separates members the other way round, still a leak); without
        a CI (``n_bootstrap=0``) the point estimate decides.

        Parameters
        ----------
        full
            Add ``tpr_0.1pct``, ``p_value`` (one-sided rank test of AUC > 0.5, as
            :func:`scforget.privacy.metrics.auc_p_value`), ``advantage`` (``2 |AUC - 0.5|``),
            ``n_members`` and ``n_nonmembers``.
        """
        from scforget._core import check_bool

        full = check_bool(full, "full")
        if self._summary is None:
            index = pd.Index(list(self.attacks), name="attack")
            self._summary = pd.DataFrame(self._metrics(self.per_cell), index=index)[list(FULL_COLUMNS)]
        return self._summary[list(FULL_COLUMNS if full else SUMMARY_COLUMNS)].copy()

    def to_df(self) -> pd.DataFrame:
        """Alias of ``summary(full=True)``."""
        return self.summary(full=True)

    def by_group(self, key: str | None = None, *, full: bool = False) -> pd.DataFrame:
        """The summary metrics within each group of ``key`` (a ``groupby`` column of the audit).

        A leak that is only cell-type rarity shows up as a high AUC overall but chance within
        groups. Groups without both members and non-members get NaN metrics.

        Parameters
        ----------
        key
            One of the audit's ``groupby`` columns; defaults to the first.
        full
            All columns of ``summary(full=True)``.

        Returns
        -------
        DataFrame indexed by ``(key, attack)``.
        """
        if not self.groupby:
            raise ValueError("The audit ran without `groupby`; rerun `audit(..., groupby='cell_type')`.")
        key = self.groupby[0] if key is None else key
        if key not in self.groupby:
            raise KeyError(f"`key`={key!r} was not a groupby column of this audit.{close_matches(key, self.groupby)}")
        frames = []
        for g, sub in self.per_cell.groupby(key, observed=True, sort=True):
            idx = pd.MultiIndex.from_product([[g], list(self.attacks)], names=[key, "attack"])
            frames.append(pd.DataFrame(self._metrics(sub), index=idx)[list(FULL_COLUMNS)])
        return pd.concat(frames)[list(FULL_COLUMNS if full else SUMMARY_COLUMNS)]

    def by_donor(self) -> pd.DataFrame:
        """One row per donor: member or not, audited cells, and each attack's mean cell score.

        The mean score is the donor's score: higher means "this donor was in the training set".
        """
        self._need_donors()
        return _donors.donor_table(self.per_cell, self.donor_key, self.attacks)

    def donor_summary(self) -> pd.DataFrame:
        """Was a donor in the training set? Per attack, the AUC over donors (donor scores from :meth:`by_donor`).

        Columns: ``auc``; ``ci_low``/``ci_high`` (bootstrap over donors, NaN with fewer than
        :data:`~scforget.privacy._donors.MIN_DONORS_CI` donors on a side); ``p_value`` (one-sided
        exact Mann-Whitney test that member donors score higher, valid at any number of donors);
        ``min_p`` (the smallest p-value these donor counts allow: above 0.05 no result can be
        significant); the donor counts; and ``note``.
        """
        self._need_donors()
        if self._donor_summary is None:  # the verdict, the notes and the HTML all read it
            self._donor_summary = _donors.donor_summary(
                self.by_donor(), self.attacks, n_bootstrap=self.n_bootstrap, seed=self.seed
            )
        return self._donor_summary.copy()

    def _need_donors(self) -> None:
        if self.donor_key is None:
            raise ValueError("The audit ran without `donor_key`; rerun `audit(..., donor_key='donor')`.")

    def notes(self) -> list[str]:
        """Caveats a reader needs next to the numbers: unreachable FPRs, composition, donors, skipped checks."""
        return _verdict.notes(self)

    def verdict(self) -> str:
        """The audit in plain sentences: one per attack and one overall, with the CI and what chance is.

        Examples
        --------
        >>> print(report.verdict())
        """
        return _verdict.verdict(self)

    def best_attack(self) -> str:
        """Attack with the largest ``|AUC - 0.5|`` among those whose CI excludes 0.5 (else among all)."""
        s = self.summary()
        significant = s[(s["ci_low"] > 0.5) | (s["ci_high"] < 0.5)]
        pool = significant if len(significant) else s
        return str((pool["auc"].astype(float) - 0.5).abs().idxmax())

    def to_obs(self, adata: AnnData, prefix: str = "scforget_") -> None:
        """Write per-cell scores into ``adata.obs`` (``{prefix}{attack}`` and ``{prefix}member``).

        Cells that were not audited get NaN. Only this call writes into an AnnData.

        Parameters
        ----------
        adata
            The AnnData the audit ran on (same cells in the same order).
        prefix
            Prefix of the new columns.
        """
        if adata.n_obs != self._n_obs:
            raise ValueError(
                f"`adata` has {adata.n_obs} cells but the audited AnnData has {self._n_obs}; "
                "pass the AnnData the audit ran on."
            )
        for col in (*self.attacks, "label"):
            values = np.full(adata.n_obs, np.nan)
            values[self._positions] = self.per_cell[col].to_numpy(dtype=np.float64)
            name = f"{prefix}member" if col == "label" else f"{prefix}{col}"
            adata.obs[name] = values

    def _attacks(self, attacks: Sequence[str] | str | None) -> list[str]:
        if attacks is None:
            return list(self.attacks)
        out = [attacks] if isinstance(attacks, str) else list(attacks)
        for a in out:
            if a not in self.attacks:
                raise ValueError(f"Attack {a!r} is not in this report.{close_matches(a, self.attacks)}")
        return out

    def roc_bands(self, attacks: Sequence[str] | str | None = None, n_bootstrap: int = 200) -> dict[str, tuple]:
        """Pointwise 95% bootstrap bands of the ROC curves: ``{attack: (fpr_grid, tpr_low, tpr_high)}``."""
        y = self.per_cell["label"].to_numpy()
        grid = fpr_grid(int((y == 0).sum()))
        return {
            a: (grid, *M.roc_band(self.per_cell[a].to_numpy(), y, grid, n_bootstrap=n_bootstrap, seed=self.seed))
            for a in self._attacks(attacks)
        }

    def plot_roc(
        self, log: bool = False, *, attacks: Sequence[str] | str | None = None, ci: bool = False, **kwargs: Any
    ):
        """ROC curves of the attacks (all by default); keyword arguments go to :func:`scforget.pl.roc`.

        Parameters
        ----------
        log
            Log-log axes.
        attacks
            Attacks to draw.
        ci
            Shade each curve's pointwise 95% bootstrap band (:meth:`roc_bands`).
        """
        from scforget import pl

        chosen = self._attacks(attacks)
        kwargs.setdefault("title", f"Membership ROC: {self.info.get('model', 'model')}")
        if ci:
            kwargs.setdefault("bands", self.roc_bands(chosen))
        return pl.roc(self.per_cell[chosen], self.per_cell["label"].to_numpy(), log=log, **kwargs)

    def plot_scores(self, attack: str | None = None, **kwargs: Any):
        """Score distributions of members and non-members for one attack (default: :meth:`best_attack`).

        Keyword arguments go to :func:`scforget.pl.scores`.
        """
        from scforget import pl

        attack = self.best_attack() if attack is None else self._attacks(attack)[0]
        kwargs.setdefault("title", f"{attack} attack: {self.info.get('model', 'model')}")
        return pl.scores(self.per_cell[attack].to_numpy(), self.per_cell["label"].to_numpy(), name=attack, **kwargs)

    def to_html(self, path: str | Path) -> Path:
        """Write the audit as one self-contained HTML file (figures embedded; no external resources).

        It holds the verdict, the summary, notes and design checks, ROC curves with 95% bands (linear
        and log), score histograms, per-group and per-donor tables, and the package versions. Cells
        appear only as counts and scores, never by name.

        Parameters
        ----------
        path
            File to write (parent directories are created).

        Returns
        -------
        The path written.
        """
        from ._html import write_html

        return write_html(self, Path(path))

    def __repr__(self) -> str:
        n1 = int(self.per_cell["label"].sum())
        n0 = len(self.per_cell) - n1
        return f"AuditReport({n1} members vs {n0} non-members; attacks={', '.join(self.attacks)})"


def fpr_grid(n_nonmembers: int, size: int = 200) -> np.ndarray:
    """FPR values to draw bands at: a log grid from the smallest resolvable FPR, plus 0 and 1."""
    floor = 1.0 / max(n_nonmembers, 1)
    return np.unique(np.r_[0.0, np.geomspace(floor, 1.0, size), np.linspace(0, 1, size)])


def plot_roc_models(
    reports: Mapping[str, AuditReport], attack: str | None = None, *, log: bool = False, ci: bool = True, **kwargs: Any
):
    """ROC curves of one attack for several models on one axis (e.g. baseline, unlearned, retrain).

    Parameters
    ----------
    reports
        Audit reports by the name to show in the legend.
    attack
        The attack to compare; by default the first attack every report ran.
    log
        Log-log axes.
    ci
        Shade each model's pointwise 95% bootstrap band.
    **kwargs
        Passed to :func:`scforget.pl.roc` (``title``, ``ax``, ``show``, ``save``).

    Returns
    -------
    The Axes, unless the figure was shown.
    """
    from scforget import pl

    if not reports:
        raise ValueError("`reports` is empty; pass {name: AuditReport}.")
    for name, r in reports.items():
        if not isinstance(r, AuditReport):
            raise TypeError(f"`reports[{name!r}]` is a {type(r).__name__}, not an AuditReport.")
    common = [a for a in next(iter(reports.values())).attacks if all(a in r.attacks for r in reports.values())]
    if attack is None:
        if not common:
            raise ValueError("The reports share no attack; pass `attack=`.")
        attack = common[0]
    elif attack not in common:
        raise ValueError(f"`attack`={attack!r} is not in every report; shared attacks: {', '.join(common) or 'none'}.")
    scores = {name: r.per_cell[attack].to_numpy() for name, r in reports.items()}
    labels = {name: r.per_cell["label"].to_numpy() for name, r in reports.items()}
    if ci:
        kwargs.setdefault("bands", {name: r.roc_bands(attack)[attack] for name, r in reports.items()})
    kwargs.setdefault("title", f"{attack} attack")
    return pl.roc(scores, labels, log=log, **kwargs)
