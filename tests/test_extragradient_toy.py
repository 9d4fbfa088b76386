"""Extra-gradient vs simultaneous gradient descent-ascent on bilinear games."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from scforget.methods import extragradient_step

simultaneous_gda_step = functools.partial(extragradient_step, extrapolate=False)


def _play(step, n_steps, lr_min, lr_max, dim=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    # a random orthogonal coupling matrix (all singular values 1) for dim > 1
    a = torch.eye(dim) if dim == 1 else torch.linalg.qr(torch.randn(dim, dim, generator=gen))[0]
    x = torch.nn.Parameter(torch.ones(dim))
    y = torch.nn.Parameter(torch.ones(dim))
    opt_x = torch.optim.SGD([x], lr=lr_min)
    opt_y = torch.optim.SGD([y], lr=lr_max)
    norms = [float(torch.cat([x.detach(), y.detach()]).norm())]
    for _ in range(n_steps):
        step(lambda: x @ a @ y, opt_x, opt_y)
        norms.append(float(torch.cat([x.detach(), y.detach()]).norm()))
    return np.asarray(norms)


def test_extragradient_converges_on_bilinear_game():
    # min_x max_y x*y: the unique equilibrium is (0, 0)
    norms = _play(extragradient_step, 1000, 0.1, 0.1)
    # theory: |z_{t+1}| = sqrt(1 - lr^2 + lr^4) |z_t| -> about 0.7% of the start after 1000 steps
    expected = np.sqrt(1 - 0.1**2 + 0.1**4) ** 1000 * norms[0]
    assert norms[-1] == pytest.approx(expected, rel=1e-3)
    assert norms[-1] < 0.05 * norms[0]
    assert np.all(np.diff(norms) < 0)  # a contraction at every step


def test_simultaneous_gda_diverges_on_bilinear_game():
    norms = _play(simultaneous_gda_step, 1000, 0.1, 0.1)
    # theory: |z_{t+1}| = sqrt(1 + lr^2) |z_t|: the iterates spiral outwards
    expected = np.sqrt(1 + 0.1**2) ** 1000 * norms[0]
    assert norms[-1] == pytest.approx(expected, rel=1e-3)
    assert np.all(np.diff(norms) > 0)


def test_extragradient_two_timescales_and_matrix_game():
    # different learning rates for the two players and a random orthogonal coupling matrix
    eg = _play(extragradient_step, 2000, 0.1, 0.05, dim=3)
    gda = _play(simultaneous_gda_step, 2000, 0.1, 0.05, dim=3)
    assert eg[-1] < 0.05 * eg[0]
    assert gda[-1] > gda[0]


def test_extragradient_uses_lookahead_gradient():
    # one step on f = x*y from (1, 1) with lr 0.5: look-ahead point (0.5, 1.5),
    # update from (1, 1) with its gradients (1.5, 0.5): x = 1 - 0.75, y = 1 + 0.25
    x = torch.nn.Parameter(torch.tensor(1.0))
    y = torch.nn.Parameter(torch.tensor(1.0))
    f0, f_half = extragradient_step(lambda: x * y, torch.optim.SGD([x], lr=0.5), torch.optim.SGD([y], lr=0.5))
    assert (float(x), float(y)) == pytest.approx((0.25, 1.25))
    assert (f0, f_half) == pytest.approx((1.0, 0.75))
    assert x.grad is None and y.grad is None
