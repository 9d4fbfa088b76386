"""The Fisher engine, parameter categories, overlap diagnostics and the unlearnability check."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import scvi
import torch

import scforget as sf
from scforget import fisher
from scforget.fisher._overlap import overlap_table

from .conftest import state_snapshot, train_tiny

NO_GRAD_NB = {
    "l_encoder.encoder.fc_layers.Layer 0.0.weight",
    "l_encoder.mean_encoder.weight",
    "decoder.px_r_decoder.weight",
    "decoder.px_r_decoder.bias",
    "decoder.px_dropout_decoder.weight",
    "decoder.px_dropout_decoder.bias",
}


@pytest.fixture(scope="module")
def scvi_model(_pbmc_small_master):
    adata = _pbmc_small_master.copy()
    split = sf.data.structured_forget(adata, "cell_type", "DC", holdout_fraction=0.5, seed=0)
    scvi.settings.seed = 0
    return train_tiny(sf.model.SCVI, adata, split, max_epochs=3), split


@pytest.fixture(scope="module")
def cond_model(_pbmc_small_master):
    adata = _pbmc_small_master.copy()
    split = sf.data.structured_forget(adata, "cell_type", "DC", holdout_fraction=0.5, seed=0)
    scvi.settings.seed = 0
    return train_tiny(sf.model.CondSCVI, adata, split, max_epochs=3), split


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm()) if float(b.norm()) > 0 else float(a.norm())


@pytest.mark.parametrize("which", ["scvi", "condscvi"])
@pytest.mark.parametrize("estimator", ["per_sample", "sampled"])
def test_vectorised_matches_per_cell_loop(which, estimator, scvi_model, cond_model):
    model, split = scvi_model if which == "scvi" else cond_model
    cells = np.concatenate([split.forget[:10], split.retain[:30]])
    fast = fisher.diagonal(model, cells, estimator=estimator, batch_size=16, progress_bar=False)
    slow = fisher.diagonal(model, cells, estimator=estimator, batch_size=16, engine="loop", progress_bar=False)
    assert fast.keys() == slow.keys()
    assert set(slow.engines.values()) == {"loop"}
    assert "hook" in set(fast.engines.values())
    for k in slow:
        assert _rel_err(fast[k], slow[k]) < 1e-5, k
        assert float(slow[k].norm()) > 0, k
    # the layer hooks really are what is being checked, not the fallback
    n_hook = sum(fast[k].numel() for k, e in fast.engines.items() if e == "hook")
    assert n_hook > 0.8 * sum(v.numel() for v in fast.values())


def test_per_batch_with_batches_of_one_is_per_sample(scvi_model):
    model, split = scvi_model
    cells = split.retain[:20]
    per_sample = fisher.diagonal(model, cells, return_gradient=True, progress_bar=False)
    per_batch_1 = fisher.diagonal(model, cells, estimator="per_batch", batch_size=1, progress_bar=False)
    per_batch_20 = fisher.diagonal(model, cells, estimator="per_batch", batch_size=20, progress_bar=False)
    name = "decoder.px_scale_decoder.0.weight"
    assert _rel_err(per_batch_1[name], per_sample[name]) < 1e-5
    # a batch of 20 gives (sum of gradients)^2 / 20, which is not the per-sample Fisher
    assert _rel_err(per_batch_20[name], per_sample[name]) > 1e-2
    expected = per_sample.mean_gradient[name].square() * 20
    assert _rel_err(per_batch_20[name], expected) < 1e-5


def test_no_gradient_parameters_are_reported_not_zero(scvi_model):
    model, split = scvi_model
    result = fisher.diagonal(model, split.forget, progress_bar=False)
    assert NO_GRAD_NB <= set(result.no_gradient)
    assert not NO_GRAD_NB & set(result)
    names = {k for k, _ in model.module.named_parameters()}
    assert set(result) | set(result.no_gradient) == names
    assert "px_r" in result and "decoder.px_scale_decoder.0.weight" in result
    assert result.n_cells == split.forget.size


def test_diagonal_leaves_model_and_rng_untouched(scvi_model):
    model, split = scvi_model
    before = state_snapshot(model)
    flags = {k: p.requires_grad for k, p in model.module.named_parameters()}
    model.module.train()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fisher.diagonal(model, split.forget[:8], progress_bar=False)
    assert torch.equal(torch.rand(3), expected)
    assert model.module.training
    model.module.eval()
    now = model.module.state_dict()
    assert all(torch.equal(now[k], before[k]) for k in before)
    assert flags == {k: p.requires_grad for k, p in model.module.named_parameters()}


def test_diagonal_bad_input_fails_early(scvi_model):
    model, split = scvi_model
    with pytest.raises(ValueError, match="estimator"):
        fisher.diagonal(model, split.forget, estimator="per_cell")
    with pytest.raises(ValueError, match="batch_size"):
        fisher.diagonal(model, split.forget, batch_size=0)
    with pytest.raises(ValueError):
        fisher.diagonal(model, [model.adata.n_obs + 5])
    with pytest.raises(TypeError, match="model"):
        fisher.diagonal(object(), [0])
    with pytest.raises(TypeError, match="batch_size"):
        fisher.diagonal(model, split.forget, batch_size=True)
    with pytest.raises(TypeError, match="return_gradient"):
        fisher.diagonal(model, split.forget, return_gradient="yes")


def _check_cover(model):
    table = fisher.categories(model)
    for name, p in model.module.named_parameters():
        rows = table[table["parameter"] == name]
        assert rows["n_params"].sum() == p.numel(), name
        if len(rows) > 1:  # split weight: column blocks tile the columns exactly
            cols = sorted(zip(rows["col_start"], rows["col_stop"], strict=True))
            assert cols[0][0] == 0 and cols[-1][1] == p.shape[1]
            assert all(a[1] == b[0] for a, b in zip(cols, cols[1:], strict=False))
    assert set(table["parameter"]) == {k for k, _ in model.module.named_parameters()}
    return table


def test_categories_cover_scvi(scvi_model):
    table = _check_cover(scvi_model[0])
    cat = dict(zip(table["parameter"], table["category"].astype(str), strict=False))
    assert cat["z_encoder.mean_encoder.weight"] == "bottleneck"
    assert cat["z_encoder.encoder.fc_layers.Layer 0.0.weight"] == "encoder"
    assert cat["decoder.px_decoder.fc_layers.Layer 0.0.weight"] == "decoder_hidden"
    assert cat["decoder.px_scale_decoder.0.weight"] == "decoder_output"
    assert cat["px_r"] == "decoder_output"
    assert not (table["category"] == "label_specific").any()


def test_categories_cover_condscvi_and_split_label_columns(cond_model):
    model, _ = cond_model
    table = _check_cover(model)
    n_labels = model.adata.obs["cell_type"].nunique()
    label = table[table["category"] == "label_specific"]
    assert "per_ct_bias" in set(label["parameter"])
    first = label[label["parameter"] == "decoder.fc_layers.Layer 0.0.weight"]
    assert len(first) == 1 and int(first["col_stop"].iloc[0] - first["col_start"].iloc[0]) == n_labels


@pytest.mark.filterwarnings("ignore:.*hasn't been trained.*")
def test_categories_cover_scanvi(scvi_model):
    model, _ = scvi_model
    adata = model.adata.copy()
    scvi.model.SCVI.setup_anndata(adata)
    base = scvi.model.SCVI(adata, n_hidden=16, n_latent=4)
    scanvi = scvi.model.SCANVI.from_scvi_model(base, unlabeled_category="unknown", labels_key="cell_type")
    table = _check_cover(scanvi)
    label = table[table["category"] == "label_specific"]
    assert {"encoder_z2_z1.encoder.fc_layers.Layer 0.0.weight"} <= set(label["parameter"])


def test_overlap_of_a_set_with_itself_is_one(scvi_model):
    model, split = scvi_model
    f = fisher.diagonal(model, split.forget, progress_bar=False)
    table = overlap_table(f, f, fisher.categories(model), damping=1e-8)
    np.testing.assert_allclose(table["cosine"], 1.0, rtol=1e-9)
    np.testing.assert_allclose(table["top_1%"], 1.0)
    np.testing.assert_allclose(table["log_fisher_pearson"], 1.0, rtol=1e-9)


def test_overlap_table_null_and_per_gene(scvi_model):
    model, split = scvi_model
    retain = split.retain[::3]  # a third of the retain cells keeps the test fast
    ov = fisher.overlap(model, split.forget, retain, n_null=3, progress_bar=False)
    t = ov.table
    assert t.index[0] == "global"
    assert {"encoder", "bottleneck", "decoder_hidden", "decoder_output"} <= set(t.index)
    for col in ("cosine", "log_fisher_pearson", "top_0.1%", "top_1%", "top_10%", "eff_rank_ratio", "null_cosine"):
        assert t[col].notna().all(), col
    assert ((t["cosine"] > 0) & (t["cosine"] <= 1 + 1e-12)).all()
    assert (t["null_cosine_sd"] >= 0).all()
    # no-gradient parameters are excluded from the counts, not folded in as zeros
    assert t.loc["global", "n_no_gradient"] > 0
    n_grad = sum(v.numel() for v in ov.forget.values())
    assert t.loc["global", "n_params"] == n_grad
    # the forget cells (a distinct cell type) overlap the retain cells less than random retain subsets do
    assert t.loc["global", "cosine"] < t.loc["global", "null_cosine"]
    assert len(ov.per_gene) == model.adata.n_vars
    assert ov.per_gene["cosine"].between(0, 1 + 1e-9).all()
    np.testing.assert_allclose(ov.per_gene["forget_mass"].sum(), 1.0)
    axes = ov.plot_scatter(show=False, max_points=500)
    ax = ov.plot_categories(show=False)
    assert len(axes) == len(t) - 1 and ax.get_ylabel() == "Fisher cosine"
    assert "SCVI" in axes[0].figure.texts[0].get_text() and "SCVI" in ax.get_title()


def test_overlap_validates_input(scvi_model):
    model, split = scvi_model
    with pytest.raises(ValueError, match="both"):
        fisher.overlap(model, split.forget, split.forget, progress_bar=False)
    with pytest.raises(ValueError, match="null"):
        fisher.overlap(model, split.forget, null="shuffled", progress_bar=False)
    with pytest.raises(ValueError, match="damping"):
        fisher.overlap(model, split.forget, damping=-1.0, progress_bar=False)


def test_classifier_baseline_table(scvi_model):
    model, split = scvi_model
    cells = np.union1d(split.forget, split.retain[::3])
    cb = fisher.classifier_baseline(
        model.adata,
        "cell_type",
        "DC",
        model=model,
        forget=split.forget,
        cells=cells,
        max_iter=15,
        n_null=2,
        n_hidden=32,
    )
    assert list(cb.table.index.names) == ["model", "category"]
    assert set(cb.table.index.get_level_values("model")) == {"linear_probe", "mlp"}
    assert {("mlp", "hidden"), ("mlp", "output"), ("mlp", "global")} <= set(cb.table.index)
    assert cb.table["cosine"].between(0, 1 + 1e-9).all()
    assert cb.table["null_cosine"].notna().all()
    assert (cb.accuracy["train"] > 0.5).all()
    with pytest.raises(ValueError, match="forget_label"):
        fisher.classifier_baseline(model.adata, "cell_type", "Neuron", model=model)


def test_unlearnability_verdict_follows_its_evidence(scvi_model):
    """The verdict is a function of the evidence and the thresholds; each branch is reached and checked."""
    model, split = scvi_model
    kw = {"n_null": 2, "progress_bar": False, "seed": 0}
    u = fisher.unlearnability(model, split.forget, split.retain[::4], **kw)
    ev = u.evidence
    # the evidence is the overlap table's cosine over its null, per category
    t = u.overlap.table
    for cat in ev.index:
        assert ev.loc[cat, "relative_overlap"] == pytest.approx(t.loc[cat, "cosine"] / t.loc[cat, "null_cosine"])
    main = ev.loc[[c for c in ev.index if c in ("encoder", "bottleneck", "decoder_hidden", "decoder_output")]]
    lo, hi = float(main["relative_overlap"].min()), float(main["relative_overlap"].max())
    # thresholds below every category: entangled; above every category: separable; in between: partly
    entangled = fisher.unlearnability(
        model, split.forget, split.retain[::4], separable_below=lo / 2, entangled_above=lo / 2, **kw
    )
    separable = fisher.unlearnability(
        model, split.forget, split.retain[::4], separable_below=hi * 2, entangled_above=hi * 2, **kw
    )
    partly = fisher.unlearnability(
        model, split.forget, split.retain[::4], separable_below=(lo + hi) / 2, entangled_above=hi * 2, **kw
    )
    assert entangled.verdict == "entangled" and entangled.separable_categories == ()
    assert separable.verdict == "separable" and set(separable.separable_categories) == set(main.index)
    assert partly.verdict == "partly separable"
    assert set(partly.separable_categories) == set(main.index[main["relative_overlap"] < (lo + hi) / 2])


def test_unlearnability_trains_nothing_and_estimates_from_the_recipe(scvi_model, monkeypatch):
    model, split = scvi_model
    import scvi.train

    calls = []
    monkeypatch.setattr(scvi.train.TrainRunner, "__call__", lambda self: calls.append(1))
    retain = split.retain[::4]
    u = fisher.unlearnability(model, split.forget, retain, n_null=2, progress_bar=False)
    assert not calls  # no model was trained
    recipe = model.training_recipe_
    expected = recipe["train_seconds"] * retain.size / recipe["n_train_cells"]
    assert u.retrain_seconds == pytest.approx(expected)
    assert f"{expected:,.0f} s" in str(u)
    given = fisher.unlearnability(model, split.forget, retain, n_null=2, progress_bar=False, retrain_seconds=12.5)
    assert given.retrain_seconds == 12.5
    with pytest.raises(TypeError, match="retrain_seconds"):
        fisher.unlearnability(model, split.forget, retain, retrain_seconds="fast", progress_bar=False)


def test_unlearnability_on_stock_model_says_cost_is_unknown(pbmc_small, dc_split):
    stock = train_tiny(scvi.model.SCVI, pbmc_small, dc_split, max_epochs=2)
    u = fisher.unlearnability(stock, dc_split.forget, dc_split.retain[::4], n_null=2, progress_bar=False)
    assert np.isnan(u.retrain_seconds) and "unknown" in str(u)


class _Scale(torch.nn.Module):
    """y = x * w: a layer without a built-in sampler."""

    def __init__(self, d):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.linspace(0.5, 1.5, d))

    def forward(self, x):
        return x * self.weight


def test_registered_sampler_is_used_and_matches_the_loop():
    from scforget.fisher import _samplers

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 4), _Scale(4), torch.nn.Linear(4, 3))
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))

    def loss(module, t):
        return torch.nn.functional.cross_entropy(module(t["x"]), t["y"], reduction="none")

    batches = [{"x": x[:25], "y": y[:25]}, {"x": x[25:], "y": y[25:]}]
    before = fisher.module_diagonal(net, batches, per_cell_loss=loss)
    assert before.engines["1.weight"] != "hook"  # no sampler yet: a generic fallback
    try:

        @fisher.register_sampler(_Scale)
        def _scale(layer, a, g, with_sum):
            gw = g * a
            return {"weight": (gw.square().sum(0), gw.sum(0) if with_sum else None)}

        fast = fisher.module_diagonal(net, batches, per_cell_loss=loss)
    finally:
        _samplers._SAMPLERS.pop(_Scale, None)
    loop = fisher.module_diagonal(net, batches, per_cell_loss=loss, engine="loop")
    assert fast.engines["1.weight"] == "hook"
    for k in loop:
        torch.testing.assert_close(fast[k], loop[k], rtol=1e-5, atol=1e-10)
        torch.testing.assert_close(before[k], loop[k], rtol=1e-5, atol=1e-10)


def test_classifier_baseline_keeps_counts_sparse(scvi_model, monkeypatch):
    import scipy.sparse as sparse

    from scforget.fisher import _classifier

    model, split = scvi_model
    seen = []
    real = _classifier._log_normalised
    monkeypatch.setattr(_classifier, "_log_normalised", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    fisher.classifier_baseline(
        model.adata, "cell_type", "DC", model=model, cells=split.retain[::3].tolist() + split.forget.tolist(),
        max_iter=5, n_null=1, n_hidden=16,
    )  # fmt: skip
    (x,) = seen
    assert sparse.issparse(x) and x.dtype == np.float32  # never the dense float64 cell x gene matrix
    dense = np.log1p(model.adata.X.toarray() / model.adata.X.toarray().sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(x.toarray(), dense, rtol=1e-5, atol=1e-6)


def test_isolation_against_a_brute_force_count():
    """Isolation = (share of forget cells among each forget cell's 15 nearest training cells - chance) /
    (1 - chance), checked against a direct count on a toy latent space, and at its two ends."""
    from scforget.fisher._preflight_scores import N_NEIGHBOURS, isolation

    rng = np.random.default_rng(0)
    forget = rng.normal(size=(30, 3))
    retain = rng.normal(size=(200, 3))
    pool = np.vstack([forget, retain])
    d = ((forget[:, None, :] - pool[None, :, :]) ** 2).sum(-1)
    shares = []
    for i in range(len(forget)):
        order = [j for j in np.argsort(d[i], kind="stable") if j != i][:N_NEIGHBOURS]
        shares.append(np.mean([j < len(forget) for j in order]))
    chance = (len(forget) - 1) / (len(pool) - 1)
    assert isolation(forget, retain) == pytest.approx((np.mean(shares) - chance) / (1 - chance))
    # a group far from every retain cell: every neighbour is a forget cell
    assert isolation(forget + 100.0, retain) == pytest.approx(1.0)
    # forget cells drawn like the retain cells: about chance (mean over draws near 0)
    draws = [isolation(rng.normal(size=(30, 3)), rng.normal(size=(200, 3))) for _ in range(20)]
    assert abs(np.mean(draws)) < 0.05


def test_memorisation_auc_is_the_mann_whitney_statistic():
    from scforget.fisher._preflight_scores import memorisation_auc

    rng = np.random.default_rng(1)
    f, c = rng.normal(0.3, 1, 40), rng.normal(0, 1, 25)
    pairs = (f[:, None] > c[None, :]).mean() + 0.5 * (f[:, None] == c[None, :]).mean()
    assert memorisation_auc(f, c) == pytest.approx(pairs)
    assert memorisation_auc(c + 10, c) == 1.0 and memorisation_auc(c - 10, c) == 0.0
    tied = np.zeros(5)
    assert memorisation_auc(tied, tied) == 0.5


def test_unlearnability_reports_isolation_and_memorisation(scvi_model):
    """The forward-pass scores: DC (a type with no retain cells) is isolated, a random training subset is not;
    calibration cells that are training cells are refused before any work."""
    model, split = scvi_model
    kw = {"n_null": 2, "progress_bar": False, "seed": 0}
    dc = fisher.unlearnability(model, split.forget, split.retain, calibration=split.holdout, **kw)
    assert 0 < dc.memorisation_auc < 1 and dc.seconds > 0
    rng = np.random.default_rng(0)
    scattered = np.sort(rng.choice(split.retain, size=split.forget.size, replace=False))
    rest = np.setdiff1d(split.retain, scattered)
    random = fisher.unlearnability(model, scattered, rest, **kw)
    assert np.isnan(random.memorisation_auc)
    assert dc.isolation > 0.3 > abs(random.isolation)
    assert "isolation" in str(dc) and "memorisation AUC" in str(dc)
    with pytest.raises(ValueError, match="`calibration` cells were training cells"):
        fisher.unlearnability(model, split.forget, split.retain, calibration=split.retain[:5], **kw)
    # a retain subsample for the Fisher: fewer retain cells in the overlap, the retrain estimate unchanged
    sub = fisher.unlearnability(model, split.forget, split.retain, max_retain=100, **kw)
    assert sub.overlap.retain.n_cells == 100
    assert sub.retrain_seconds == pytest.approx(dc.retrain_seconds)
    with pytest.raises(ValueError, match="max_retain"):
        fisher.unlearnability(model, split.forget, split.retain, max_retain=split.forget.size, **kw)


def test_unlearnability_bounds_the_retain_cells_by_default(scvi_model, monkeypatch):
    """``max_retain="auto"``: at most DEFAULT_MAX_RETAIN retain cells, never fewer than twice the forget set;
    ``None`` reads every retain cell; another string is refused by name."""
    from scforget.fisher import _unlearnability

    model, split = scvi_model
    kw = {"progress_bar": False, "seed": 0}
    assert split.retain.size > 2 * split.forget.size + 10
    monkeypatch.setattr(_unlearnability, "DEFAULT_MAX_RETAIN", 2 * split.forget.size + 10)
    bounded = fisher.unlearnability(model, split.forget, split.retain, **kw)
    assert bounded.overlap.retain.n_cells == 2 * split.forget.size + 10
    monkeypatch.setattr(_unlearnability, "DEFAULT_MAX_RETAIN", 3)  # below twice the forget set: that wins
    floor = fisher.unlearnability(model, split.forget, split.retain, **kw)
    assert floor.overlap.retain.n_cells == 2 * split.forget.size
    every = fisher.unlearnability(model, split.forget, split.retain, max_retain=None, **kw)
    assert every.overlap.retain.n_cells == split.retain.size
    with pytest.raises(ValueError, match="`max_retain` must be 'auto'"):
        fisher.unlearnability(model, split.forget, split.retain, max_retain="all", **kw)


def test_fisher_and_matched_negatives_stream_over_backed_anndata(trained_scvi, backed_scvi, dc_split):
    """Counts left on disk give the in-memory Fisher and matches, read minibatch by minibatch."""
    for estimator in ("per_sample", "sampled"):
        kw = {"estimator": estimator, "batch_size": 32, "seed": 0, "progress_bar": False}
        expected = fisher.diagonal(trained_scvi, dc_split.forget, **kw)
        got = fisher.diagonal(backed_scvi, dc_split.forget, **kw)
        assert got.n_cells == expected.n_cells == dc_split.forget.size
        assert list(got) == list(expected)
        np.testing.assert_allclose(got.flat().numpy(), expected.flat().numpy(), rtol=1e-5, atol=1e-10)
    a = sf.data.matched_negatives(trained_scvi, dc_split.forget, k=3, batch_size=64)
    b = sf.data.matched_negatives(backed_scvi, dc_split.forget, k=3, batch_size=64)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.neighbors, b.neighbors)
    assert backed_scvi.adata.isbacked  # nothing loaded the counts into memory
