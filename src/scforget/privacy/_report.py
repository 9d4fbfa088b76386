"""The result of a membership-inference audit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from scforget._core import close_matches

from . import _metrics as M

if TYPE_CHECKING:
    from anndata import AnnData
    from scvi.model.base import BaseModelClass


def describe_model(model: BaseModelClass) -> str:
    """A short name for a model in titles: its class, and how it was last unlearned if it was."""
    records = getattr(model, "unlearning_records_", None) or []
    name = type(model).__name__
    return f"{name} after {records[-1].get('method', 'unlearning')}" if records else name


#: Columns of :meth:`AuditReport.summary`, in order.
SUMMARY_COLUMNS = (
    "auc",
    "auc_ci_low",
    "auc_ci_high",
    "advantage",
    "direction",
    "tpr_at_1pct_fpr",
    "tpr_at_0_1pct_fpr",
    "epsilon_lower_bound",
    "n_members",
    "n_nonmembers",
)


def attack_metrics(scores: np.ndarray, labels: np.ndarray, *, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """One summary row: AUC with CI, advantage, direction, TPR at low FPR, epsilon bound, counts."""
    labels = np.asarray(labels).astype(bool)
    n1, n0 = int(labels.sum()), int((~labels).sum())
    row: dict[str, Any] = dict.fromkeys(SUMMARY_COLUMNS, np.nan)
    row.update(n_members=n1, n_nonmembers=n0, direction="undefined")
    if n1 == 0 or n0 == 0:
        return row
    auc, lo, hi = M.auc_with_ci(scores, labels, n_bootstrap=n_bootstrap, seed=seed)
    if auc >= 0.5:
        direction = "member"
    elif np.isfinite(hi) and hi < 0.5:
        direction = "over-unlearned"
    else:
        direction = "non-member"
    row.update(
        auc=auc,
        auc_ci_low=lo,
        auc_ci_high=hi,
        advantage=M.advantage(auc),
        direction=direction,
        tpr_at_1pct_fpr=M.tpr_at_fpr(scores, labels, 0.01),
        tpr_at_0_1pct_fpr=M.tpr_at_fpr(scores, labels, 0.001),
        epsilon_lower_bound=M.epsilon_lower_bound_roc(scores, labels, delta=1e-5, confidence=0.95, seed=seed),
    )
    return row


@dataclass
class AuditReport:
    """Membership-inference audit of one model (returned by :func:`scforget.privacy.audit`).

    Attributes
    ----------
    per_cell
        One row per audited cell: ``label`` (1 member, 0 non-member), one out-of-fold or
        threshold score per attack (higher = member) and the ``groupby`` columns. Indexed by
        anonymous integer ids unless the audit ran with ``include_names=True``.
    attacks
        The attacks run, in order.
    n_bootstrap
        Bootstrap resamples behind the AUC intervals.
    seed
        Seed of folds, bootstrap and reference models.
    groupby
        The ``adata.obs`` columns available to :meth:`by_group`.
    info
        How the audit ran: classifier, folds, LiRA mode and references, matched negatives, timings.
    """

    per_cell: pd.DataFrame
    attacks: tuple[str, ...]
    n_bootstrap: int
    seed: int
    groupby: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    _positions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    _n_obs: int = field(default=0, repr=False)
    _summary: pd.DataFrame | None = field(default=None, init=False, repr=False)

    def summary(self) -> pd.DataFrame:
        """One row per attack with the metrics in :data:`SUMMARY_COLUMNS`.

        ``direction`` is ``"member"`` when AUC >= 0.5, ``"over-unlearned"`` when the whole CI lies
        below 0.5 (the members now look *less* like training data than never-seen cells: the
        Streisand effect), and ``"non-member"`` for an AUC below 0.5 whose CI still covers 0.5.
        The epsilon bound is a 95% lower bound at delta = 1e-5: the threshold is chosen on half of
        the cells and the bound computed on the other half with Clopper-Pearson bounds on FPR and
        FNR (see :func:`scforget.privacy.metrics.epsilon_lower_bound_roc`).
        """
        if self._summary is None:
            y = self.per_cell["label"].to_numpy()
            rows = [
                attack_metrics(self.per_cell[a].to_numpy(), y, n_bootstrap=self.n_bootstrap, seed=self.seed)
                for a in self.attacks
            ]
            df = pd.DataFrame(rows, index=pd.Index(list(self.attacks), name="attack"))[list(SUMMARY_COLUMNS)]
            self._summary = df
        return self._summary.copy()

    def to_df(self) -> pd.DataFrame:
        """Alias of :meth:`summary`."""
        return self.summary()

    def by_group(self, key: str | None = None) -> pd.DataFrame:
        """The summary metrics within each group of ``key`` (a ``groupby`` column of the audit).

        A leak that is only cell-type rarity shows up as a high AUC overall but chance within
        groups. Groups without both members and non-members get NaN metrics.

        Parameters
        ----------
        key
            One of the audit's ``groupby`` columns; defaults to the first.

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
            y = sub["label"].to_numpy()
            rows = [
                attack_metrics(sub[a].to_numpy(), y, n_bootstrap=self.n_bootstrap, seed=self.seed) for a in self.attacks
            ]
            idx = pd.MultiIndex.from_product([[g], list(self.attacks)], names=[key, "attack"])
            frames.append(pd.DataFrame(rows, index=idx)[list(SUMMARY_COLUMNS)])
        return pd.concat(frames)

    def best_attack(self) -> str:
        """Attack with the highest advantage among those whose CI excludes 0.5 (else the highest overall)."""
        s = self.summary()
        significant = s[(s["auc_ci_low"] > 0.5) | (s["auc_ci_high"] < 0.5)]
        pool = significant if len(significant) else s
        return str(pool["advantage"].astype(float).idxmax())

    def to_obs(self, adata: AnnData, prefix: str = "scforget_") -> None:
        """Write per-cell scores into ``adata.obs`` (``{prefix}{attack}`` and ``{prefix}member``).

        Cells that were not audited get NaN. Only this call writes into an AnnData.

        Parameters
        ----------
        adata
            The AnnData the audited model is set up on (same cells in the same order).
        prefix
            Prefix of the new columns.
        """
        if adata.n_obs != self._n_obs:
            raise ValueError(
                f"`adata` has {adata.n_obs} cells but the audited model's AnnData has {self._n_obs}; "
                "pass the AnnData the model was set up with."
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

    def plot_roc(self, log: bool = False, *, attacks: Sequence[str] | str | None = None, **kwargs: Any):
        """ROC curves of the attacks (all by default); keyword arguments go to :func:`scforget.pl.roc`."""
        from scforget import pl

        chosen = self._attacks(attacks)
        kwargs.setdefault("title", f"Membership ROC: {self.info.get('model', 'model')}")
        return pl.roc(self.per_cell[chosen], self.per_cell["label"].to_numpy(), log=log, **kwargs)

    def plot_scores(self, attack: str | None = None, **kwargs: Any):
        """Score distributions of members and non-members for one attack (default: :meth:`best_attack`).

        Keyword arguments go to :func:`scforget.pl.scores`.
        """
        from scforget import pl

        attack = self.best_attack() if attack is None else self._attacks(attack)[0]
        kwargs.setdefault("title", f"{attack} attack: {self.info.get('model', 'model')}")
        return pl.scores(self.per_cell[attack].to_numpy(), self.per_cell["label"].to_numpy(), name=attack, **kwargs)

    def __repr__(self) -> str:
        n1 = int(self.per_cell["label"].sum())
        n0 = len(self.per_cell) - n1
        return f"AuditReport({n1} members vs {n0} non-members; attacks={', '.join(self.attacks)})"
