"""Acceptance tests of gradient_ascent, neggrad_plus, calibrated_neggrad, matched_neggrad, scrub, contrastive, bad_teacher."""

from __future__ import annotations

import numpy as np
import pytest
import scvi
import torch

import scforget as sf

# importing a method module registers the method
import scforget.methods._bad_teacher
import scforget.methods._calibrated_neggrad
import scforget.methods._contrastive
import scforget.methods._gradient_ascent
import scforget.methods._matched_neggrad
import scforget.methods._neggrad_plus
import scforget.methods._scrub
from scforget.methods._distill import (
    divergence,
    frozen_copy,
    incompetent_copy,
    output_kl,
    posterior_kl,
    teacher_outputs,
)

from .conftest import mean_nll, same_state, state_snapshot, watch_batchnorm

METHODS = [
    "gradient_ascent",
    "neggrad_plus",
    "calibrated_neggrad",
    "matched_neggrad",
    "scrub",
    "contrastive",
    "bad_teacher",
]
EPOCHS = 3
# gradient ascent spends its first `ascent_steps` steps on forget cells only; keep some retain steps
# in this short run so that the BatchNorm check below sees train-mode forwards
KWARGS = {"gradient_ascent": {"ascent_steps": 8}}


@pytest.fixture(scope="module")
def setup(_pbmc_small_master):
    """A small model trained once for the module: all DC cells plus a random subset of the others."""
    full = _pbmc_small_master
    rng = np.random.default_rng(0)
    dc = np.flatnonzero(full.obs["cell_type"].to_numpy() == "DC")
    other = rng.choice(np.setdiff1d(np.arange(full.n_obs), dc), size=600, replace=False)
    adata = full[np.sort(np.concatenate([dc, other]))].copy()
    split = sf.data.structured_forget(adata, "cell_type", "DC", holdout_fraction=0.5, seed=0)
    scvi.settings.seed = 0
    sf.model.SCVI.setup_anndata(adata)
    model = sf.model.SCVI(adata, n_hidden=32, n_latent=5, gene_likelihood="nb")
    model.train(
        max_epochs=30,
        batch_size=128,
        accelerator="cpu",
        enable_progress_bar=False,
        plan_kwargs={"lr": 1e-2},
        datasplitter_kwargs=split.datasplitter_kwargs(),
    )
    return model, split


@pytest.mark.parametrize("method", METHODS)
def test_method_forgets_and_keeps_input(setup, method, tmp_path):
    model, split = setup
    snap = state_snapshot(model)
    f0, r0 = mean_nll(model, split.forget), mean_nll(model, split.retain)
    with watch_batchnorm(model, split.forget) as watches:
        new = sf.unlearn(
            model,
            split.forget,
            method=method,
            seed=0,
            max_epochs=EPOCHS,
            enable_progress_bar=False,
            **KWARGS.get(method, {}),
        )
    # the input model is bit-identical, the output differs
    assert same_state(model, snap)
    assert new is not model and not same_state(new, snap)
    # forget cells got less likely; retain cells moved less (relative). matched_neggrad moves the forget
    # cells to a target, in either direction (its own test below checks that it reaches it)
    f1, r1 = mean_nll(new, split.forget), mean_nll(new, split.retain)
    rel_f, rel_r = (f1 - f0) / f0, (r1 - r0) / r0
    if method != "matched_neggrad":
        assert rel_f > 0, (method, f0, f1)
        assert rel_f > abs(rel_r), (method, rel_f, rel_r)
    # BatchNorm statistics never saw a forget cell in train mode (and the hooks did fire)
    (watch,) = watches
    assert watch.train_calls > 0
    assert watch.violations == 0
    # per-epoch losses recorded, and kept through save/load
    rec = new.unlearning_records_[-1]
    assert rec["method"] == method
    for key in ("forget_loss", "retain_loss"):
        assert len(rec["history"][key]) == rec["epochs_run"] == EPOCHS
        assert all(np.isfinite(rec["history"][key]))
    new.save(str(tmp_path / "m"), save_anndata=False)
    loaded = sf.model.SCVI.load(str(tmp_path / "m"), adata=model.adata)
    assert loaded.unlearning_records_[-1]["history"] == rec["history"]
    assert loaded.unlearning_records_[-1]["params"] == rec["params"]


@pytest.mark.parametrize(
    ("method", "typo"),
    [
        ("gradient_ascent", {"ascent_step": 3}),
        ("neggrad_plus", {"lamda": 0.1}),
        ("calibrated_neggrad", {"match_calibraton": 5}),
        ("matched_neggrad", {"n_neighbors": 3}),
        ("scrub", {"max_step_epochs": 1}),
        ("contrastive", {"encoder_onyl": True}),
        ("bad_teacher", {"retain_fracton": 0.5}),
    ],
)
def test_misspelled_keyword_fails_before_training(setup, method, typo):
    model, split = setup
    snap = state_snapshot(model)
    with pytest.raises(TypeError, match="Did you mean"):
        sf.unlearn(model, split.forget, method=method, max_epochs=1, **typo)
    with pytest.raises(TypeError, match="Did you mean"):
        sf.unlearn(model, split.forget, method=method, max_epochs=1, plan_kwargs=typo)
    assert same_state(model, snap)


@pytest.mark.parametrize(
    ("method", "bad"),
    [
        ("gradient_ascent", {"forget_bound": 0.5}),
        ("neggrad_plus", {"lam": -1.0}),
        ("calibrated_neggrad", {"match_calibration": 0}),
        ("matched_neggrad", {"n_neighbours": 0}),
        ("scrub", {"max_steps_epochs": -1}),
        ("contrastive", {"margin": 0.0}),
        ("bad_teacher", {"retain_sampling": "nearest"}),
    ],
)
def test_bad_values_fail_before_training(setup, method, bad):
    model, split = setup
    snap = state_snapshot(model)
    with pytest.raises(ValueError, match=next(iter(bad))):
        sf.unlearn(model, split.forget, method=method, max_epochs=1, **bad)
    assert same_state(model, snap)
    assert not hasattr(model, "unlearning_records_") or not model.unlearning_records_


def test_calibrated_neggrad_stops_its_ascent_at_the_measured_gap(setup):
    """The calibrated ceiling (gap measured on never-trained look-alikes) is below NegGrad+'s 1.5x, so the
    forget cells end up fitted better than under NegGrad+ with the same seed, budget and weight."""
    from scforget.methods import UnlearnContext
    from scforget.methods._calibrated_neggrad import calibration_gap
    from scforget.methods._critic_plan import select_nonmembers

    model, split = setup
    kw = {"seed": 0, "max_epochs": 6, "lam": 1.0, "enable_progress_bar": False}
    calibrated = sf.unlearn(model, split.forget, method="calibrated_neggrad", **kw)
    plain = sf.unlearn(model, split.forget, method="neggrad_plus", **kw)
    rec = calibrated.unlearning_records_[-1]
    # the gap recorded is the one measured on the input model, from its validation cells
    ctx = UnlearnContext(split.forget, split.retain, split.validation, 1, 128, {}, 0, "cpu", "auto", {}, {})
    pool, _ = select_nonmembers(model, ctx, None, match=10)
    assert rec["calibrated_gap"] == pytest.approx(calibration_gap(model, ctx, pool))
    assert rec["n_calibration_cells"] == pool.size and set(pool) <= set(model.validation_indices)
    assert rec["calibration_source"].startswith("model validation cells")
    assert 1.0 < rec["calibrated_gap"] < 1.5
    assert mean_nll(model, split.forget) < mean_nll(calibrated, split.forget) < mean_nll(plain, split.forget)


def test_matched_neggrad_moves_forget_cells_to_the_calibration_target(setup):
    """The forget cells' NLL per count is pulled to that of their nearest calibration cells (at the forget
    cells' depth): here the calibration cells are the 40 never-trained cells fitted worst for their depth, so the
    forget cells must ascend towards them and the gap must close, and the record keeps only a count."""
    from scforget.privacy import signals

    model, split = setup
    never = np.union1d(split.holdout, split.unseen)
    sig = signals(model, never, include_latent=False, progress_bar=False)
    depth, rpc = np.log(sig["n_counts"].to_numpy()), sig["recon_ll_per_count"].to_numpy()
    residual = rpc - np.polyval(np.polyfit(depth, rpc, 1), depth)  # the fit beyond what depth explains
    pool = never[np.argsort(residual)[:40]]  # the 40 worst-fitted for their depth: a target above the forget cells
    kw = {"seed": 0, "max_epochs": 16, "lam": 1.0, "enable_progress_bar": False}
    out = sf.unlearn(model, split.forget, method="matched_neggrad", calibration=pool, **kw)
    rec = out.unlearning_records_[-1]
    assert rec["calibration_source"] == "calibration="
    assert rec["n_calibration_cells"] == pool.size
    assert rec["params"]["calibration"] == f"{pool.size} cells"  # never positions or names
    hist = {k: np.asarray(v) for k, v in rec["history"].items()}
    gap = hist["target_nll_per_count"] - hist["forget_nll_per_count"]
    assert gap[0] > 0  # the set-up: the forget cells start better fitted than the target
    assert abs(gap[-1]) < 0.5 * gap[0]
    before = signals(model, split.forget, include_latent=False, progress_bar=False)["recon_ll_per_count"].mean()
    after = signals(out, split.forget, include_latent=False, progress_bar=False)["recon_ll_per_count"].mean()
    assert after < before


@pytest.mark.parametrize("method", ["calibrated_neggrad", "matched_neggrad"])
def test_calibration_cells_must_be_never_trained(setup, method):
    model, split = setup
    snap = state_snapshot(model)
    with pytest.raises(ValueError, match="`calibration` cells were training cells"):
        sf.unlearn(model, split.forget, method=method, calibration=split.retain[:20], max_epochs=1)
    assert same_state(model, snap)
    assert not getattr(model, "unlearning_records_", None)


def test_divergences_zero_for_identical_and_positive_for_random(setup):
    model, split = setup
    module = model.module
    tensors = next(iter(model._make_data_loader(adata=model.adata, indices=split.forget, batch_size=64)))
    a = teacher_outputs(frozen_copy(module), tensors)
    b = teacher_outputs(frozen_copy(module), tensors)
    torch.manual_seed(0)
    rand = teacher_outputs(incompetent_copy(module), tensors)
    assert torch.allclose(divergence(a, b), torch.zeros(len(split.forget)), atol=1e-5)
    assert (posterior_kl(a.qz, rand.qz) > 0).all()
    assert (output_kl(a.px, rand.px) > 0).all()


def test_incompetent_teacher_is_seeded_and_untrained(setup):
    model, _ = setup
    torch.manual_seed(1)
    one = incompetent_copy(model.module).state_dict()
    torch.manual_seed(1)
    two = incompetent_copy(model.module).state_dict()
    trained = model.module.state_dict()
    assert all(torch.equal(one[k], two[k]) for k in one)
    weights = [k for k in one if k.endswith("weight") and one[k].ndim == 2]
    assert weights and all(not torch.equal(one[k], trained[k]) for k in weights)
    assert not any(p.requires_grad for p in incompetent_copy(model.module).parameters())
