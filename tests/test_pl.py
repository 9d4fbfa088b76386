"""Plots follow scanpy's convention: show follows autoshow, save writes into figdir, Axes come back when not shown."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

import scforget as sf


@pytest.fixture
def figdir(tmp_path):
    # scanpy's settings are properties of its settings class: set and restore them by hand
    names = ("figdir", "file_format_figs", "plot_suffix", "autoshow")
    before = {n: getattr(sc.settings, n) for n in names}
    sc.settings.figdir, sc.settings.file_format_figs, sc.settings.plot_suffix = tmp_path, "png", ""
    yield tmp_path
    for n, v in before.items():
        setattr(sc.settings, n, v)
    plt.close("all")


@pytest.fixture
def scores():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(30), np.zeros(30)].astype(int)
    return pd.DataFrame({"loss": rng.normal(size=60) + labels, "kl": rng.normal(size=60)}), labels


def test_show_none_follows_autoshow(figdir, scores, monkeypatch):
    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(1))
    s, y = scores
    sc.settings.autoshow = True
    assert sf.pl.roc(s, y) is None and shown == [1]
    sc.settings.autoshow = False
    ax = sf.pl.roc(s, y)
    assert isinstance(ax, matplotlib.axes.Axes) and shown == [1]
    assert sf.pl.roc(s, y, show=True) is None and shown == [1, 1]


def test_save_true_and_suffix_write_into_figdir(figdir, scores):
    s, y = scores
    sf.pl.roc(s, y, save=True, show=False)
    assert (figdir / "roc.png").exists()
    sf.pl.scores(s["loss"], y, save="_dc.pdf", show=False)
    assert (figdir / "scores_dc.pdf").exists()
    table = pd.DataFrame({"cosine": [0.3, 0.5], "null_cosine": [0.6, 0.7], "null_cosine_sd": [0.1, 0.1]})
    sf.pl.fisher_categories(table.set_index(pd.Index(["encoder", "decoder_output"])), save="_x", show=False)
    assert (figdir / "fisher_categories_x.png").exists()
    with pytest.raises(TypeError, match="save"):
        sf.pl.roc(s, y, save=1, show=False)


def test_plots_draw_from_plain_data_and_return_axes(figdir, scores):
    s, y = scores
    ax = sf.pl.roc(s, y, log=True, title="Membership ROC: my model", show=False)
    assert ax.get_xscale() == "log" and ax.get_title() == "Membership ROC: my model"
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "chance"
    # one curve per model of the same attack, each with its own labels
    ax = sf.pl.roc({"baseline": s["loss"], "retrain": s["kl"]}, {"baseline": y, "retrain": y}, show=False)
    assert len(ax.lines) == 3
    values = pd.DataFrame({"category": ["encoder"] * 5 + ["decoder"] * 5, "forget": np.arange(1, 11.0), "retain": 2.0})
    axes = sf.pl.fisher_scatter(values, cosines=pd.Series({"encoder": 0.5}), show=False)
    assert isinstance(axes, list) and len(axes) == 2 and "cos 0.50" in axes[0].get_title()
    with pytest.raises(ValueError, match="both members"):
        sf.pl.roc(s, np.ones(60), show=False)


def test_fisher_overlap_plots_say_which_model(figdir, trained_scvi, dc_split):
    ov = sf.fisher.overlap(trained_scvi, dc_split.forget, dc_split.retain[::6], n_null=2, progress_bar=False)
    ax = ov.plot_categories(show=False, save=True)
    assert "SCVI" in ax.get_title() and (figdir / "fisher_categories.png").exists()
    axes = ov.plot_scatter(show=False, max_points=100)
    assert "SCVI" in axes[0].figure.texts[0].get_text()
