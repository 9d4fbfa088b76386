"""ROC curves and score distributions of membership attacks, drawn from plain arrays."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from scforget._core import doc_params

from ._docs import DOC_SHOW_SAVE, DOC_TITLE_AX
from ._utils import finish, new_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _curves(scores, labels) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, scores, labels)`` per curve from a DataFrame/mapping of scores and shared or per-curve labels."""
    if hasattr(scores, "items"):
        items = list(scores.items())
    else:
        items = [("scores", scores)]
    out = []
    for name, s in items:
        y = labels[name] if isinstance(labels, Mapping) else labels
        s, y = np.asarray(s, dtype=np.float64).ravel(), np.asarray(y).ravel().astype(bool)
        if s.shape != y.shape:
            raise ValueError(f"Scores of {name!r} and their labels differ in length ({s.size} vs {y.size}).")
        if y.all() or not y.any():
            raise ValueError(f"The labels of {name!r} need both members (1) and non-members (0).")
        out.append((str(name), s, y))
    if not out:
        raise ValueError("`scores` is empty; pass at least one column of scores.")
    return out


@doc_params(title_ax=DOC_TITLE_AX, show_save=DOC_SHOW_SAVE)
def roc(
    scores: Mapping[str, np.ndarray] | np.ndarray,
    labels: np.ndarray | Mapping[str, np.ndarray],
    *,
    log: bool = False,
    bands: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | None = None,
) -> Axes | None:
    """ROC curves of membership scores (higher = member), with the chance diagonal.

    Parameters
    ----------
    scores
        One array of scores, or several by name (a DataFrame or a dict: one curve per column, e.g.
        per attack, or per model for the same attack).
    labels
        1 for members, 0 for non-members: one array for every curve, or one per name.
    log
        Log-log axes, to read the true-positive rate at low false-positive rates.
    bands
        Confidence bands by curve name: ``(fpr_grid, tpr_low, tpr_high)``, drawn shaded in the
        curve's colour (e.g. from :func:`scforget.privacy.metrics.roc_band`).
    {title_ax}
    {show_save}

    Returns
    -------
    The Axes, unless the figure was shown.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    curves = _curves(scores, labels)
    ax = new_axes(ax, (4, 4))
    n0 = min(int((~y).sum()) for _, _, y in curves)
    for name, s, y in curves:
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        (line,) = ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, s):.2f})", drawstyle="steps-post")
        if bands is not None and name in bands:
            grid, lo, hi = (np.asarray(v, dtype=np.float64) for v in bands[name])
            ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.2, step="post", linewidth=0)
    floor = 1.0 / max(n0, 1) / 2 if log else 0.0
    grid = np.logspace(np.log10(floor), 0, 200) if log else np.linspace(0, 1, 200)
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
    if title:
        ax.set_title(title)
    ax.legend(frameon=False, fontsize="small")
    return finish(ax, writekey="roc", show=show, save=save)


@doc_params(title_ax=DOC_TITLE_AX, show_save=DOC_SHOW_SAVE)
def scores(
    values: np.ndarray,
    labels: np.ndarray,
    *,
    name: str = "attack",
    bins: int = 30,
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | None = None,
) -> Axes | None:
    """Histograms of one attack's scores for members and non-members.

    Parameters
    ----------
    values
        Scores (higher = member).
    labels
        1 for members, 0 for non-members.
    name
        What the scores are (the x-axis label).
    bins
        Number of histogram bins.
    {title_ax}
    {show_save}

    Returns
    -------
    The Axes, unless the figure was shown.
    """
    ((_, s, y),) = _curves({name: values}, labels)
    ax = new_axes(ax, (4, 3))
    edges = np.histogram_bin_edges(s, bins=bins)
    ax.hist(s[~y], bins=edges, density=True, alpha=0.5, label=f"non-members (n={int((~y).sum())})")
    ax.hist(s[y], bins=edges, density=True, alpha=0.5, label=f"members (n={int(y.sum())})")
    ax.set_xlabel(f"{name} score (higher = member)")
    ax.set_ylabel("Density")
    if title:
        ax.set_title(title)
    ax.legend(frameon=False, fontsize="small")
    return finish(ax, writekey="scores", show=show, save=save)
