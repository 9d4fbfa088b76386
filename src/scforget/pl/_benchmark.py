"""Figures of a benchmark run, drawn from its summary table (one row per method)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from scforget._core import doc_params

from ._docs import DOC_SHOW_SAVE, DOC_TITLE_AX
from ._utils import finish, new_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _check(summary: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    missing = [c for c in columns if c not in summary.columns]
    if missing:
        raise ValueError(f"`summary` lacks the column(s) {', '.join(missing)}; pass a benchmark summary of one design.")
    if summary.index.nlevels > 1:
        raise ValueError("`summary` holds several designs; select one, e.g. summary.loc['DC'].")
    return summary


@doc_params(title_ax=DOC_TITLE_AX, show_save=DOC_SHOW_SAVE)
def privacy_utility(
    summary: pd.DataFrame,
    *,
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | None = None,
) -> Axes | None:
    """Advantage (primary attack, with its interval) against the held-out NLL change relative to retrain.

    The retrain band is shaded: a method below its top and near 0% change forgets as retraining
    does without losing utility.

    Parameters
    ----------
    summary
        One design's benchmark summary (index: method) with ``advantage``, ``advantage_low``,
        ``advantage_high``, ``band_high`` and ``heldout_nll_change``.
    {title_ax}
    {show_save}

    Returns
    -------
    The Axes, unless the figure was shown.
    """
    s = _check(summary, ("advantage", "advantage_low", "advantage_high", "band_high", "heldout_nll_change"))
    ax = new_axes(ax, (5.5, 4))
    x = 100 * s["heldout_nll_change"].to_numpy(np.float64)
    y = s["advantage"].to_numpy(np.float64)
    err = np.vstack([y - s["advantage_low"].to_numpy(np.float64), s["advantage_high"].to_numpy(np.float64) - y])
    ax.axhspan(0, float(s["band_high"].iloc[0]), color="grey", alpha=0.2, label="retrain band")
    ax.errorbar(x, y, yerr=np.clip(err, 0, None), fmt="o", capsize=3, color="tab:blue")
    for xi, yi, name in zip(x, y, s.index, strict=True):
        ax.annotate(str(name), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize="small")
    ax.axvline(2.0, color="tab:red", linestyle=":", linewidth=0.8, label="+2% NLL")
    ax.set_xlabel("Held-out NLL change vs retrain (%)")
    ax.set_ylabel(f"Advantage ({s['primary_attack'].iloc[0] if 'primary_attack' in s else 'primary attack'})")
    if title:
        ax.set_title(title)
    ax.legend(frameon=False, fontsize="small")
    return finish(ax, writekey="privacy_utility", show=show, save=save)


@doc_params(title_ax=DOC_TITLE_AX, show_save=DOC_SHOW_SAVE)
def attack_heatmap(
    summary: pd.DataFrame,
    *,
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | None = None,
) -> Axes | None:
    """Mean AUC of every attack (columns ``auc_<attack>``) for every method, as a heatmap centred on 0.5.

    Parameters
    ----------
    summary
        One design's benchmark summary (index: method).
    {title_ax}
    {show_save}

    Returns
    -------
    The Axes, unless the figure was shown.
    """
    cols = [c for c in summary.columns if c.startswith("auc_")]
    if not cols:
        raise ValueError("`summary` has no auc_<attack> columns; run the benchmark with the audit.")
    s = _check(summary, tuple(cols))
    values = s[cols].to_numpy(np.float64)
    ax = new_axes(ax, (1.2 + 0.9 * len(cols), 0.8 + 0.35 * len(s)))
    im = ax.imshow(values, cmap="RdBu_r", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), [c[4:] for c in cols])
    ax.set_yticks(range(len(s)), [str(i) for i in s.index])
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize="x-small")
    ax.figure.colorbar(im, ax=ax, label="AUC (0.5 = chance)")
    if title:
        ax.set_title(title)
    return finish(ax, writekey="attack_heatmap", show=show, save=save)


@doc_params(title_ax=DOC_TITLE_AX, show_save=DOC_SHOW_SAVE)
def time_ratios(
    summary: pd.DataFrame,
    *,
    target: float = 0.2,
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | None = None,
) -> Axes | None:
    """Wall time of each method relative to one retrain (log scale), with the target ratio marked.

    Parameters
    ----------
    summary
        One design's benchmark summary (index: method) with ``time_ratio_to_retrain``.
    target
        The ratio to mark.
    {title_ax}
    {show_save}

    Returns
    -------
    The Axes, unless the figure was shown.
    """
    s = _check(summary, ("time_ratio_to_retrain",))
    s = s[s["time_ratio_to_retrain"].notna()]
    ax = new_axes(ax, (5, 0.8 + 0.3 * len(s)))
    ax.barh([str(i) for i in s.index], s["time_ratio_to_retrain"].to_numpy(np.float64), color="tab:blue")
    ax.axvline(target, color="tab:red", linestyle=":", label=f"target {target:g}x")
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=0.8, label="one retrain")
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("Wall time / one retrain")
    if title:
        ax.set_title(title)
    ax.legend(frameon=False, fontsize="small")
    return finish(ax, writekey="time_ratios", show=show, save=save)
