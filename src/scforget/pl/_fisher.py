"""Plots of forget/retain Fisher overlap, drawn from plain tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from scforget._core import doc_params

from ._docs import DOC_SHOW_SAVE, DOC_TITLE_AX
from ._utils import finish, new_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes


@doc_params(title_ax=DOC_TITLE_AX, show_save=DOC_SHOW_SAVE)
def fisher_scatter(
    values: pd.DataFrame,
    *,
    cosines: pd.Series | None = None,
    title: str | None = None,
    show: bool | None = None,
    save: bool | str | None = None,
) -> list[Axes] | None:
    """Scatter of log10 forget vs retain Fisher, one panel per parameter category.

    Parameters
    ----------
    values
        Long table with columns ``category``, ``forget`` and ``retain`` (Fisher values, damping added).
    cosines
        Forget/retain cosine per category, shown in the panel titles.
    title
        Title of the figure (say which model and forget set).
    {show_save}

    Returns
    -------
    The list of Axes, unless the figure was shown.
    """
    import matplotlib.pyplot as plt

    missing = {"category", "forget", "retain"} - set(values.columns)
    if missing:
        raise ValueError(f"`values` needs the columns category, forget and retain; missing {sorted(missing)}.")
    cats = list(dict.fromkeys(values["category"].astype(str)))
    if not cats:
        raise ValueError("`values` is empty.")
    fig, axes = plt.subplots(1, len(cats), figsize=(3.2 * len(cats), 3.4), squeeze=False)
    for ax, cat in zip(axes[0], cats, strict=True):
        sub = values[values["category"].astype(str) == cat]
        lx, ly = np.log10(sub["retain"].to_numpy()), np.log10(sub["forget"].to_numpy())
        ax.scatter(lx, ly, s=2, alpha=0.3, rasterized=True)
        lo, hi = float(min(lx.min(), ly.min())), float(max(lx.max(), ly.max()))
        ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
        head = cat if cosines is None or cat not in cosines.index else f"{cat}\ncos {cosines[cat]:.2f}"
        ax.set_title(head, fontsize=9)
        ax.set_xlabel("log10 retain Fisher")
    axes[0][0].set_ylabel("log10 forget Fisher")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return finish(list(axes[0]), writekey="fisher_scatter", show=show, save=save)


@doc_params(title_ax=DOC_TITLE_AX, show_save=DOC_SHOW_SAVE)
def fisher_categories(
    table: pd.DataFrame,
    *,
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | None = None,
) -> Axes | None:
    """Bar chart of the forget/retain Fisher cosine per category, with the null reference.

    Parameters
    ----------
    table
        One row per category with a ``cosine`` column and optionally ``null_cosine`` and
        ``null_cosine_sd`` (the table of :func:`scforget.fisher.overlap`).
    {title_ax}
    {show_save}

    Returns
    -------
    The Axes, unless the figure was shown.
    """
    if "cosine" not in table.columns:
        raise ValueError("`table` needs a `cosine` column (the table of scforget.fisher.overlap).")
    ax = new_axes(ax, (1.1 * len(table) + 1.5, 3.2))
    x = np.arange(len(table))
    ax.bar(x, table["cosine"], color="tab:blue", label="forget vs retain")
    if "null_cosine" in table:
        sd = table["null_cosine_sd"].fillna(0) if "null_cosine_sd" in table else None
        ax.errorbar(x, table["null_cosine"], yerr=sd, fmt="o", color="black", label="null (random subset)")
    ax.set_xticks(x, table.index.astype(str), rotation=30, ha="right")
    ax.set_ylabel("Fisher cosine")
    ax.set_ylim(0, 1.05)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return finish(ax, writekey="fisher_categories", show=show, save=save)
