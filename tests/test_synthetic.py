"""The synthetic-data generator of benchmarks/make_synthetic.py (fit and chunked on-disk writing)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "make_synthetic.py"


@pytest.fixture(scope="module")
def synthetic():
    spec = importlib.util.spec_from_file_location("make_synthetic", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def _nb_counts(rng, n, props, theta, log_lib=(7.0, 0.3)):
    """Negative-binomial counts drawn with numpy's own NB parameterisation (independent of the script)."""
    lib = np.exp(rng.normal(*log_lib, size=n))
    mean = lib[:, None] * props[None, :]
    p = theta / (theta + mean)  # numpy: number of successes theta, success probability p -> mean theta (1-p)/p
    return rng.negative_binomial(theta, p)


def test_fit_recovers_known_parameters(synthetic):
    rng = np.random.default_rng(0)
    g = 40
    props = [rng.dirichlet(np.ones(g)), rng.dirichlet(np.ones(g))]
    theta = np.full(g, 2.0)
    counts = np.vstack([_nb_counts(rng, 3000, props[0], theta), _nb_counts(rng, 1000, props[1], theta, (6.0, 0.2))])
    labels = np.r_[np.repeat("a", 3000), np.repeat("b", 1000)]
    prof = synthetic.fit_profile(sp.csr_matrix(counts), labels, np.arange(g).astype(str))
    np.testing.assert_allclose(prof.type_freq, [0.75, 0.25])
    np.testing.assert_allclose(prof.proportions, np.vstack(props), rtol=0.1, atol=2e-4)
    np.testing.assert_allclose(prof.log_lib_mean, [7.0, 6.0], atol=0.03)
    np.testing.assert_allclose(prof.log_lib_sd, [0.3, 0.2], atol=0.03)
    # moments over 4,000 cells: one gene's estimate scatters by about 9% (sd over the 40 genes), so their
    # mean (standard error about 1.5%) must be within 5% and every gene within 40% (about 4.5 sd)
    assert abs(prof.theta.mean() / 2.0 - 1) < 0.05
    np.testing.assert_allclose(prof.theta, theta, rtol=0.4)
    # and a Poisson gene (no excess variance) gets the upper clip, not a negative or infinite value
    pois = synthetic.fit_profile(sp.csr_matrix(rng.poisson(5.0, size=(500, 3))), np.repeat("a", 500), list("xyz"))
    assert np.all(pois.theta > 10) and np.all(pois.theta <= synthetic.THETA_RANGE[1])


def test_written_file_reads_back_backed_and_follows_the_profile(synthetic, tmp_path):
    rng = np.random.default_rng(1)
    g = 30
    props = rng.dirichlet(np.ones(g))
    counts = _nb_counts(rng, 2000, props, np.full(g, 3.0))
    prof = synthetic.fit_profile(sp.csr_matrix(counts), np.repeat("t", 2000), np.arange(g).astype(str))
    path = tmp_path / "syn.h5ad"
    checks = synthetic.write_synthetic(path, prof, 2500, chunk_size=1000, seed=0)  # two full chunks, one partial
    backed = ad.read_h5ad(path, backed="r")
    assert backed.shape == (2500, g)
    x = backed.X[:]
    assert sp.issparse(x)
    np.testing.assert_allclose(np.asarray(x.sum(axis=1)).ravel(), backed.obs["n_counts"].to_numpy())
    assert list(backed.obs["cell_type"].cat.categories) == ["t"]
    # the synthetic cells match the reference's sparsity and depth (2,500 cells: a few percent)
    assert checks["zero_fraction"] == pytest.approx(prof.zero_fraction, abs=0.02)
    assert checks["lib_q50"] == pytest.approx(prof.lib_quantiles[2], rel=0.05)
    backed.file.close()
    # seeded: the same call writes the same counts
    synthetic.write_synthetic(tmp_path / "again.h5ad", prof, 2500, chunk_size=1000, seed=0)
    assert (ad.read_h5ad(tmp_path / "again.h5ad").X != x).nnz == 0


def test_bad_sizes_refused(synthetic, tmp_path):
    prof = synthetic.fit_profile(sp.csr_matrix(np.ones((4, 2))), np.repeat("a", 4), ["x", "y"])
    for n, chunk in ((0, 10), (10, 0)):
        with pytest.raises(ValueError, match="positive"):
            synthetic.write_synthetic(tmp_path / "x.h5ad", prof, n, chunk_size=chunk)
    with pytest.raises(ValueError, match="at least one count"):
        synthetic.fit_profile(sp.csr_matrix(np.zeros((2, 2))), np.repeat("a", 2), ["x", "y"])
