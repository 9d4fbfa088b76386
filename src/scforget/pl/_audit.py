"""Plots of membership-inference audits: ROC curves and score distributions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from scforget._utils import close_matches

if TYPE_CHECKING:
    from pathlib import Path

    from matplotlib.axes import Axes

    from scforget.privacy import AuditReport


def _finish(ax: Axes, show: bool | None, save: str | Path | None):
    import matplotlib.pyplot as plt

    if save is not None:
        ax.figure.savefig(save, bbox_inches="tight")
    if show is None:
        show = False
    if show:
        plt.show()
        return None
    return ax


def _attacks(report: AuditReport, attacks: Sequence[str] | None) -> list[str]:
    if attacks is None:
        return list(report.attacks)
    out = [attacks] if isinstance(attacks, str) else list(attacks)
    for a in out:
        if a not in report.attacks:
            raise ValueError(f"Attack {a!r} is not in this report.{close_matches(a, report.attacks)}")
    return out


def roc(
    report: AuditReport,
    *,
    log: bool = False,
    attacks: Sequence[str] | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """ROC curves of an audit's attacks, with the chance diagonal.

    Parameters
    ----------
    report
        An :class:`~scforget.privacy.AuditReport`.
    log
        Log-log axes, to read the TPR at low FPR (the regime that matters for privacy).
    attacks
        Attacks to draw; all by default.
    ax
        Axes to draw into; a new figure otherwise.
    show
        Call :func:`matplotlib.pyplot.show` and return ``None``.
    save
        Path to save the figure to.

    Returns
    -------
    The Axes, unless ``show=True``.
    """
    import matplotlib.pyplot as plt

    from scforget.privacy.metrics import roc as roc_curve

    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    y = report.per_cell["label"].to_numpy()
    summary = report.summary()
    for a in _attacks(report, attacks):
        fpr, tpr, _ = roc_curve(report.per_cell[a].to_numpy(), y)
        ax.plot(fpr, tpr, label=f"{a} (AUC {summary.loc[a, 'auc']:.2f})", drawstyle="steps-post")
    n0 = int((y == 0).sum())
    floor = 1.0 / max(n0, 1) / 2 if log else 0.0
    grid = np.linspace(floor, 1, 200) if not log else np.logspace(np.log10(floor), 0, 200)
    ax.plot(grid, grid, color="grey", linestyle="--", linewidth=0.8, label="chance")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(floor, 1)
        ax.set_ylim(floor, 1.05)
    else:
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.legend(frameon=False, fontsize="small")
    return _finish(ax, show, save)


def scores(
    report: AuditReport,
    *,
    attack: str | None = None,
    bins: int = 30,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Histograms of one attack's scores for members and non-members.

    Parameters
    ----------
    report
        An :class:`~scforget.privacy.AuditReport`.
    attack
        The attack; defaults to :meth:`~scforget.privacy.AuditReport.best_attack`.
    bins
        Number of histogram bins.
    ax
        Axes to draw into; a new figure otherwise.
    show
        Call :func:`matplotlib.pyplot.show` and return ``None``.
    save
        Path to save the figure to.

    Returns
    -------
    The Axes, unless ``show=True``.
    """
    import matplotlib.pyplot as plt

    attack = report.best_attack() if attack is None else _attacks(report, attack)[0]
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3))
    s = report.per_cell[attack].to_numpy(dtype=np.float64)
    y = report.per_cell["label"].to_numpy().astype(bool)
    edges = np.histogram_bin_edges(s, bins=bins)
    ax.hist(s[~y], bins=edges, density=True, alpha=0.5, label=f"non-members (n={int((~y).sum())})")
    ax.hist(s[y], bins=edges, density=True, alpha=0.5, label=f"members (n={int(y.sum())})")
    ax.set_xlabel(f"{attack} score (higher = member)")
    ax.set_ylabel("Density")
    ax.legend(frameon=False, fontsize="small")
    return _finish(ax, show, save)
