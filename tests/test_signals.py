"""Per-cell membership signals: values, determinism, kNN distance, model support."""

from __future__ import annotations

import numpy as np
import pytest
import scvi
import torch

import scforget as sf
from scforget.privacy import signals

from .conftest import mean_nll, same_state, state_snapshot, train_tiny


def test_signals_columns_index_and_values(trained_scvi, dc_split):
    model = trained_scvi
    cells = dc_split.forget
    snap = state_snapshot(model)
    mode = model.module.training
    sig = signals(model, cells, progress_bar=False)
    assert list(sig.index) == list(model.adata.obs_names[cells])
    for col in ("recon_ll", "kl", "elbo", "qz_mean_norm", "qz_var_norm", "knn_distance", "qz_mean_0", "qz_var_4"):
        assert col in sig.columns
    assert np.isfinite(sig.to_numpy()).all()
    # NB log-likelihood with observed library at the posterior mean == the independent test helper
    assert -sig["recon_ll"].mean() == pytest.approx(mean_nll(model, cells), rel=1e-5)
    np.testing.assert_allclose(sig["elbo"], sig["recon_ll"] - sig["kl"])
    # posterior moments agree with scvi-tools' own getter
    mean = model.get_latent_representation(indices=cells, give_mean=True)
    np.testing.assert_allclose(sig[[f"qz_mean_{i}" for i in range(5)]].to_numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sig["qz_mean_norm"], np.linalg.norm(mean, axis=1), rtol=1e-5)
    # closed-form KL(N(m, v) || N(0, 1))
    m = sig[[f"qz_mean_{i}" for i in range(5)]].to_numpy()
    v = sig[[f"qz_var_{i}" for i in range(5)]].to_numpy()
    kl = 0.5 * (v + m**2 - 1 - np.log(v)).sum(1)
    np.testing.assert_allclose(sig["kl"], kl, rtol=1e-4)
    # nothing about the model changed
    assert same_state(model, snap) and model.module.training == mode


def test_signals_deterministic_and_sampling(trained_scvi, dc_split):
    cells = dc_split.holdout
    a = signals(trained_scvi, cells, progress_bar=False)
    b = signals(trained_scvi, cells, progress_bar=False)
    pd_equal = np.array_equal(a.to_numpy(), b.to_numpy())
    assert pd_equal
    s1 = signals(trained_scvi, cells, n_samples=5, seed=1, include_latent=False, progress_bar=False)
    s1b = signals(trained_scvi, cells, n_samples=5, seed=1, include_latent=False, progress_bar=False)
    s2 = signals(trained_scvi, cells, n_samples=5, seed=2, include_latent=False, progress_bar=False)
    np.testing.assert_array_equal(s1["recon_ll"], s1b["recon_ll"])
    assert not np.array_equal(s1["recon_ll"], s2["recon_ll"])
    # averaging sampled decodings differs from decoding the mean, KL does not depend on it
    assert not np.allclose(s1["recon_ll"], a["recon_ll"])
    np.testing.assert_allclose(s1["kl"], a["kl"], rtol=1e-6)
    assert "qz_mean_0" not in s1.columns


def test_signals_knn_distance_excludes_self(trained_scvi, dc_split):
    cells = dc_split.forget
    ref = np.union1d(dc_split.forget, dc_split.retain[:200])
    sig = signals(trained_scvi, cells, k=3, reference=ref, progress_bar=False)
    z_all = trained_scvi.get_latent_representation(give_mean=True)
    expected = []
    for c in cells:
        others = ref[ref != c]
        d = np.sort(np.linalg.norm(z_all[others] - z_all[c], axis=1))[:3]
        expected.append(d.mean())
    np.testing.assert_allclose(sig["knn_distance"], expected, rtol=1e-4)
    assert (sig["knn_distance"] > 0).all()


def test_signals_marginal_ll(trained_scvi, dc_split):
    sig = signals(trained_scvi, dc_split.forget[:10], marginal_ll=True, n_mc_samples=20, progress_bar=False)
    assert np.isfinite(sig["marginal_ll"]).all()
    # the marginal likelihood is bounded below by the ELBO on average (importance sampling, noisy)
    assert sig["marginal_ll"].mean() > sig["elbo"].mean() - 5


def test_signals_condscvi_and_stock_scvi(pbmc_small, dc_split):
    cond = train_tiny(scvi.model.CondSCVI, pbmc_small.copy(), dc_split, max_epochs=2)
    sig = signals(cond, dc_split.forget, progress_bar=False)
    assert np.isfinite(sig[["recon_ll", "kl", "knn_distance"]].to_numpy()).all()
    with pytest.raises(ValueError, match="marginal"):
        signals(cond, dc_split.forget, marginal_ll=True, progress_bar=False)
    stock = train_tiny(scvi.model.SCVI, pbmc_small.copy(), dc_split, max_epochs=2)
    sig = signals(stock, dc_split.forget, progress_bar=False)
    assert -sig["recon_ll"].mean() == pytest.approx(mean_nll(stock, dc_split.forget), rel=1e-5)


def test_signals_errors(pbmc_small, trained_scvi):
    with pytest.raises(TypeError, match="must be a trained scvi-tools model for membership signals"):
        signals(object(), [0])
    sf.model.SCVI.setup_anndata(pbmc_small)
    untrained = sf.model.SCVI(pbmc_small, n_hidden=8, n_latent=2)
    with pytest.raises(RuntimeError, match="not trained"):
        signals(untrained, [0])
    with pytest.raises(ValueError, match="n_samples"):
        signals(trained_scvi, [0, 1], n_samples=-1)
    with pytest.raises(ValueError, match="out of range"):
        signals(trained_scvi, [10**6])
    assert torch.is_inference_mode_enabled() is False


def _brute_force_knn(query, query_pos, ref, ref_pos, k):
    """Independent reference: full distance matrix in float64, own position excluded."""
    d = np.sqrt(((query[:, None, :] - ref[None, :, :]) ** 2).sum(-1))
    d[query_pos[:, None] == ref_pos[None, :]] = np.inf
    return np.sort(d, axis=1)[:, :k].mean(1)


def _clustered_latents():
    rng = np.random.default_rng(0)
    # clustered 10-d latents, like a VAE's: 3,000 reference cells, 400 queries, half of them reference cells
    centres = rng.normal(scale=4.0, size=(12, 10))
    ref = centres[rng.integers(0, 12, 3000)] + rng.normal(size=(3000, 10))
    ref_pos = np.arange(3000) * 2  # positions need not be contiguous
    own = rng.choice(3000, 200, replace=False)
    query = np.vstack([ref[own], centres[rng.integers(0, 12, 200)] + rng.normal(size=(200, 10))])
    query_pos = np.concatenate([ref_pos[own], np.arange(200) * 2 + 1])  # odd positions: not in the reference
    return query, query_pos, ref, ref_pos


@pytest.mark.parametrize("method", ["brute", "kdtree"])
def test_exact_knn_searches_match_an_independent_brute_force(method):
    from scforget.privacy._signals import knn_distance

    query, query_pos, ref, ref_pos = _clustered_latents()
    expected = _brute_force_knn(query, query_pos, ref, ref_pos, 10)
    got = knn_distance(query, query_pos, ref, ref_pos, 10, method=method)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # k larger than the reference set minus the query's own row: the mean of the rows left
    rows = np.flatnonzero(np.isin(ref_pos, query_pos[:4]))  # the first 4 queries' own rows
    tiny = knn_distance(query[:3], query_pos[:3], ref[rows], ref_pos[rows], 10, method=method)
    for i in range(3):
        d = np.sqrt(((query[i] - ref[rows]) ** 2).sum(-1))
        keep = ref_pos[rows] != query_pos[i]
        assert keep.sum() == 3
        assert tiny[i] == pytest.approx(d[keep].mean(), rel=1e-5)


def test_knn_method_follows_the_sizes():
    from scforget.privacy._signals import KDTREE_MAX_DIM, KDTREE_MAX_QUERIES, knn_method

    assert knn_method(10**6, 50_000, 10) == "brute"
    assert knn_method(5_000, 2_000_000, 10) == "kdtree"  # a few thousand audited cells against an atlas
    assert knn_method(KDTREE_MAX_QUERIES, 200_000, KDTREE_MAX_DIM) == "kdtree"
    assert knn_method(KDTREE_MAX_QUERIES + 1, 200_000, 10) == "ivf"  # an atlas against itself
    assert knn_method(5_000, 200_000, KDTREE_MAX_DIM + 1) == "ivf"  # a tree degrades with dimension
    # the caller's preference beyond the brute-force range; brute force below it whatever is asked
    assert knn_method(10**6, 10**6, 10, search="exact") == "kdtree"
    assert knn_method(10**6, 10**6, 64, search="exact") == "kdtree"
    assert knn_method(5_000, 200_000, 10, search="approximate") == "ivf"
    assert knn_method(5_000, 40_000, 10, search="approximate") == "brute"


def test_knn_search_reaches_the_search_from_signals_and_audit(trained_scvi, dc_split, monkeypatch):
    from scforget.privacy import _signals

    seen = []
    original = _signals.knn_distance

    def recording(*args, **kwargs):
        seen.append(kwargs["search"])
        return original(*args, **kwargs)

    monkeypatch.setattr(_signals, "knn_distance", recording)
    signals(trained_scvi, [0, 1, 2], knn_search="approximate", progress_bar=False)
    sf.audit(
        trained_scvi,
        members=dc_split.forget,
        nonmembers=dc_split.holdout,
        attacks=("distance",),
        knn_search="exact",
        n_bootstrap=0,
        progress_bar=False,
    )
    assert seen == ["approximate", "exact"]
    snapshot = {k: v.clone() for k, v in trained_scvi.module.state_dict().items()}
    with pytest.raises(ValueError, match="knn_search"):
        signals(trained_scvi, [0], knn_search="fast")
    with pytest.raises(ValueError, match="knn_search"):
        sf.audit(trained_scvi, members=dc_split.forget, nonmembers=dc_split.holdout, knn_search="fast")
    assert all(torch.equal(v, trained_scvi.module.state_dict()[k]) for k, v in snapshot.items())


def test_approximate_knn_matches_the_exact_search_and_excludes_self():
    from scforget.privacy._signals import knn_distance

    query, query_pos, ref, ref_pos = _clustered_latents()
    expected = _brute_force_knn(query, query_pos, ref, ref_pos, 10)
    approx = knn_distance(query, query_pos, ref, ref_pos, 10, seed=0, method="ivf")
    # the inverted-file search is approximate: nearly every query gets its exact neighbours, none is far off
    close = np.isclose(approx, expected, rtol=1e-5)
    assert close.mean() >= 0.98
    assert np.all(approx >= expected * (1 - 1e-5)) and np.all(approx <= expected * 1.05)
    # a cell's own row is never its neighbour: with itself included its distance would be smaller
    with_self = np.sort(np.sqrt(((query[:200, None] - ref[None]) ** 2).sum(-1)), axis=1)[:, :10].mean(1)
    assert np.all(approx[:200] > with_self)
    # seeded: the same search twice gives the same answer
    np.testing.assert_array_equal(approx, knn_distance(query, query_pos, ref, ref_pos, 10, seed=0, method="ivf"))


def test_approximate_knn_probes_a_few_lists_of_a_large_reference():
    """60,000 reference cells: 980 k-means lists, 32 probed (3%); still nearly exact, never below exact."""
    from scforget.privacy._signals import IVF_NPROBE, knn_distance

    rng = np.random.default_rng(1)
    centres = rng.normal(scale=4.0, size=(40, 10))
    ref = centres[rng.integers(0, 40, 60_000)] + rng.normal(size=(60_000, 10))
    ref_pos = np.arange(60_000)
    query_pos = rng.choice(60_000, 500, replace=False)
    query = ref[query_pos]
    expected = np.empty(500)
    for start in range(0, 500, 100):  # the independent brute force, in blocks
        sl = slice(start, start + 100)
        expected[sl] = _brute_force_knn(query[sl], query_pos[sl], ref, ref_pos, 10)
    approx = knn_distance(query, query_pos, ref, ref_pos, 10, seed=0, method="ivf")
    assert IVF_NPROBE < round(4 * np.sqrt(60_000)) // 10  # the search really is restricted
    assert np.all(approx >= expected * (1 - 1e-5))  # a subset of the candidates: never nearer than exact
    assert np.isclose(approx, expected, rtol=1e-5).mean() >= 0.95 and np.all(approx <= expected * 1.10)
    # any integer seed (scvi.settings.seed can exceed a C int), deterministic
    big = knn_distance(query, query_pos, ref, ref_pos, 10, seed=2**40 + 7, method="ivf")
    np.testing.assert_array_equal(big, knn_distance(query, query_pos, ref, ref_pos, 10, seed=2**40 + 7, method="ivf"))


def test_signals_on_backed_anndata_equal_the_in_memory_ones(trained_scvi, backed_scvi):
    """Counts left on disk (``backed="r"``) give the same signals, read minibatch by minibatch."""
    kw = {"k": 5, "include_latent": False, "batch_size": 64, "progress_bar": False, "seed": 0}
    expected = signals(trained_scvi, **kw)
    got = signals(backed_scvi, **kw)
    assert got.index.equals(expected.index)
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-5, atol=1e-6)
    backed = backed_scvi.adata
    assert backed.isbacked  # nothing loaded the counts into memory behind the user's back
