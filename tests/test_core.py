"""The shared primitives: likelihood, forward pass, seed policy, validators, close matches, cloning, quiet runs."""

from __future__ import annotations

import logging
import random
import warnings

import numpy as np
import pytest
import scvi
import torch
from scvi.distributions import NegativeBinomial
from scvi.module.base import LossOutput

import scforget as sf
from scforget import _core

from .conftest import same_state, state_snapshot, train_tiny


def test_nb_log_prob_matches_scvi_values_and_gradients():
    gen = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.rand(20, 50, generator=gen) * 3) * (torch.rand(20, 50, generator=gen) > 0.6)
    mu = (torch.rand(20, 50, generator=gen) * 5 + 0.1).requires_grad_(True)
    theta = (torch.rand(50, generator=gen) * 3 + 0.1).requires_grad_(True)
    ours = _core.nb_log_prob(x, mu, theta)
    ref = NegativeBinomial(mu=mu, theta=theta.expand_as(mu)).log_prob(x).sum(-1)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)
    g_ours = torch.autograd.grad(ours.sum(), [mu, theta])
    g_ref = torch.autograd.grad(ref.sum(), [mu, theta])
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", [sf.model.SCVI, sf.model.CondSCVI])
def test_negative_elbo_equals_the_modules_own_terms(cls, pbmc_small, dc_split):
    model = train_tiny(cls, pbmc_small, dc_split, max_epochs=2)
    module = model.module
    module.eval()
    (tensors,) = list(_core.minibatches(model, dc_split.forget))
    with torch.no_grad():
        ours = _core.negative_elbo(module, tensors)
        inf, gen = _core.posterior_mean_forward(module, tensors)
        out = module.loss(tensors, inf, gen, kl_weight=1.0)
        ref = LossOutput.dict_sum(out.reconstruction_loss) + LossOutput.dict_sum(out.kl_local)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-3)
    # the forward is deterministic: z is the posterior mean, not a draw
    with torch.no_grad():
        again = _core.negative_elbo(module, tensors)
    assert torch.equal(ours, again)


def test_seed_none_follows_scvi_settings(monkeypatch):
    monkeypatch.setattr(scvi.settings, "_seed", 17)
    assert _core.resolve_seed(None) == 17
    assert _core.resolve_seed(3) == 3
    monkeypatch.setattr(scvi.settings, "_seed", None)
    drawn = {_core.resolve_seed(None) for _ in range(5)}
    assert len(drawn) > 1  # fresh entropy, recorded by the caller
    with pytest.raises(TypeError, match="seed"):
        _core.resolve_seed(True)
    with pytest.raises(TypeError, match="seed"):
        _core.resolve_seed(1.0)
    with pytest.raises(ValueError, match="seed"):
        _core.resolve_seed(-1)


def test_seeded_forks_every_generator_and_restores_the_caller():
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    expected = (torch.rand(2), np.random.rand(2), random.random())
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    with _core.seeded(11):
        inside = (torch.rand(2), np.random.rand(2), random.random())
    after = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(after[0], expected[0]) and np.array_equal(after[1], expected[1]) and after[2] == expected[2]
    with _core.seeded(11):
        again = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(inside[0], again[0]) and np.array_equal(inside[1], again[1]) and inside[2] == again[2]


def test_fork_rng_covers_every_cuda_device(monkeypatch):
    calls = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    real = torch.random.fork_rng

    def spy(devices=None, **kwargs):
        calls["devices"] = list(devices)
        return real(devices=[], **kwargs)

    monkeypatch.setattr(torch.random, "fork_rng", spy)
    with _core.fork_rng():
        pass
    assert calls["devices"] == [0, 1, 2]


@pytest.mark.parametrize(
    ("check", "value", "error"),
    [
        (lambda v: _core.check_int(v, "k", minimum=1), True, TypeError),
        (lambda v: _core.check_int(v, "k", minimum=1), 2.0, TypeError),
        (lambda v: _core.check_int(v, "k", minimum=1), 0, ValueError),
        (lambda v: _core.check_bool(v, "inplace"), "yes", TypeError),
        (lambda v: _core.check_bool(v, "inplace"), 1, TypeError),
        (lambda v: _core.check_number(v, "lr", minimum=0, exclusive_minimum=True), "fast", TypeError),
        (lambda v: _core.check_number(v, "lr", minimum=0, exclusive_minimum=True), 0.0, ValueError),
        (lambda v: _core.check_number(v, "lr"), float("nan"), ValueError),
        (lambda v: _core.check_number(v, "lr"), False, TypeError),
    ],
)
def test_validators_refuse_with_the_argument_name(check, value, error):
    with pytest.raises(error, match=r"`(k|inplace|lr)`"):
        check(value)


def test_validators_accept_numpy_scalars():
    assert _core.check_int(np.int64(3), "k") == 3
    assert _core.check_bool(np.bool_(True), "flag") is True
    assert _core.check_number(np.float32(0.5), "lr") == 0.5


def test_close_matches_ignore_case_and_accept_substrings():
    methods = sf.methods.available()["name"].tolist()
    assert "'scrub'" in _core.close_matches("SCRUB", methods)
    hint = _core.close_matches("fisher", methods)
    assert "'fisher_forgetting'" in hint and "'relative_fisher'" in hint
    assert "'finetune'" in _core.close_matches("fintune", methods)
    assert _core.close_matches("zzzzzz", methods) == ""


def test_unknown_method_suggestions_reach_the_user(trained_scvi, dc_split):
    with pytest.raises(ValueError, match="Did you mean 'scrub'"):
        trained_scvi.unlearn(dc_split.forget, method="SCRUB")
    with pytest.raises(ValueError, match="'fisher_forgetting' or 'relative_fisher'"):
        trained_scvi.unlearn(dc_split.forget, method="fisher")


def test_clone_survives_setup_on_a_copy_of_the_anndata(trained_scvi, dc_split, pbmc_small):
    copy = pbmc_small.copy()
    sf.model.SCVI.setup_anndata(copy)  # routine: the class now maps the shared uuid to the copy
    snap = state_snapshot(trained_scvi)
    new = trained_scvi.unlearn(dc_split.forget, max_epochs=1, enable_progress_bar=False)
    assert same_state(trained_scvi, snap) and not same_state(new, snap)
    # the user's own registration is left as it was: a model on the copy still works
    other = sf.model.SCVI(copy, n_hidden=8)
    assert other.adata is copy


def test_unlearn_and_audit_are_quiet(trained_scvi, dc_split, caplog, recwarn):
    caplog.set_level(logging.INFO)
    for name in ("lightning.pytorch", "lightning.fabric"):  # Lightning's own default level, whatever ran before
        caplog.set_level(logging.INFO, logger=name)
    new = trained_scvi.unlearn(dc_split.forget, max_epochs=1, enable_progress_bar=False)
    sf.audit(
        new, members=dc_split.forget, nonmembers=dc_split.holdout, attacks=("loss", "lira"), n_reference=2,
        reference_epochs=1, n_bootstrap=10, progress_bar=False,
    )  # fmt: skip
    lightning = [r for r in caplog.records if r.name.startswith("lightning")]
    assert not lightning, [r.getMessage() for r in lightning]
    assert not [w for w in recwarn if "LeafSpec" in str(w.message)]
    # with scvi's verbosity at DEBUG, Lightning's lines come back
    caplog.clear()
    old = scvi.settings.verbosity
    scvi.settings.verbosity = logging.DEBUG
    try:
        trained_scvi.unlearn(dc_split.forget, max_epochs=1, enable_progress_bar=False)
    finally:
        scvi.settings.verbosity = old
    assert any(r.name.startswith("lightning") for r in caplog.records)


def test_no_private_scvi_names_outside_compat():
    import pathlib
    import re

    root = pathlib.Path(sf.__file__).parent
    private = re.compile(
        r"\b(?:model|module|self|cls)\._(?:make_data_loader|get_inference_input|get_generative_input|setup_adata_manager_store)\b"
    )
    offenders = [
        str(p.relative_to(root)) for p in root.rglob("*.py") if p.name != "_compat.py" and private.search(p.read_text())
    ]
    assert not offenders, offenders


def test_warnings_filter_does_not_leak(trained_scvi, dc_split):
    before = list(warnings.filters)
    trained_scvi.unlearn(dc_split.forget, max_epochs=1, enable_progress_bar=False)
    assert warnings.filters == before


def test_warnings_point_at_the_callers_line(trained_scvi, dc_split):
    forget = np.concatenate([dc_split.forget, dc_split.holdout])  # some never trained on: a warning
    with pytest.warns(UserWarning, match="never training cells") as record:
        trained_scvi.unlearn(forget, max_epochs=1, enable_progress_bar=False)
    assert record[0].filename == __file__
