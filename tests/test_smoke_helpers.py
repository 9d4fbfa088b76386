import numpy as np

from .conftest import mean_nll


def test_mean_nll_is_deterministic(trained_scvi, dc_split):
    a = mean_nll(trained_scvi, dc_split.forget)
    b = mean_nll(trained_scvi, dc_split.forget)
    assert a == b
    assert np.isfinite(a) and a > 0
