"""Training plans do what they accept: optimisers, schedulers, clipping, logging, held critics, seeds."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import scforget as sf
from scforget.methods._base import UnlearningTrainingPlan

from .conftest import same_state, state_snapshot, train_tiny

QUIET = {"enable_progress_bar": False}
#: One manual plan of each optimiser layout and the automatic ones.
MANUAL = ["gradient_ascent", "scrub", "gisa", "extragradient"]
AUTOMATIC = ["finetune", "neggrad_plus", "contrastive", "bad_teacher", "frozen_critic"]


def _kwargs(method, split):
    return {"nonmembers": split.holdout} if method in ("extragradient", "frozen_critic") else {}


@pytest.mark.parametrize("method", MANUAL + AUTOMATIC)
def test_optimizer_argument_reaches_every_optimiser(trained_scvi, dc_split, monkeypatch, method):
    made = []
    real_init = torch.optim.AdamW.__init__

    def spy(self, params, *args, **kwargs):
        made.append(kwargs.get("lr"))
        real_init(self, params, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "__init__", spy)
    trained_scvi.unlearn(
        dc_split.forget, method=method, optimizer="AdamW", max_epochs=1, seed=0, **_kwargs(method, dc_split), **QUIET
    )
    expected = 2 if method in ("gradient_ascent", "scrub") else 1  # extragradient's critics keep their own Adam
    assert len(made) == expected, made


def test_custom_optimizer_creator_is_used_by_manual_plans(trained_scvi, dc_split):
    calls = []

    def creator(params):
        calls.append(1)
        return torch.optim.SGD(params, lr=0.1)

    trained_scvi.unlearn(
        dc_split.forget, method="scrub", optimizer="Custom", optimizer_creator=creator, max_epochs=1, seed=0, **QUIET
    )
    assert len(calls) == 2  # the min-step and the max-step optimisers


@pytest.mark.parametrize("method", ["finetune", "scrub", "gisa"])
def test_reduce_lr_on_plateau_steps_the_scheduler(trained_scvi, dc_split, monkeypatch, method):
    stepped = []
    real = torch.optim.lr_scheduler.ReduceLROnPlateau.step

    def spy(self, metrics, *args, **kwargs):
        stepped.append(float(metrics))
        return real(self, metrics, *args, **kwargs)

    monkeypatch.setattr(torch.optim.lr_scheduler.ReduceLROnPlateau, "step", spy)
    trained_scvi.unlearn(dc_split.forget, method=method, reduce_lr_on_plateau=True, max_epochs=3, seed=0, **QUIET)
    assert len(stepped) == 3 and all(np.isfinite(stepped))  # once per epoch, on the validation ELBO


@pytest.mark.parametrize("method", ["neggrad_plus", "gradient_ascent", "gisa"])
def test_clipping_goes_through_lightning(trained_scvi, dc_split, monkeypatch, method):
    seen = []
    real = UnlearningTrainingPlan.clip_gradients

    def spy(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        seen.append((gradient_clip_val, gradient_clip_algorithm))
        return real(self, optimizer, gradient_clip_val, gradient_clip_algorithm)

    monkeypatch.setattr(UnlearningTrainingPlan, "clip_gradients", spy)
    trained_scvi.unlearn(dc_split.forget, method=method, clip_grad_norm=0.5, max_epochs=1, seed=0, **QUIET)
    assert seen and all(v == (0.5, "norm") for v in seen)


def test_steps_log_tensors_with_the_plans_sync_setting(trained_scvi, dc_split, monkeypatch):
    logged = []
    real = UnlearningTrainingPlan.log

    def spy(self, name, value, *args, **kwargs):
        logged.append((name, type(value), kwargs.get("sync_dist"), self.use_sync_dist))
        return real(self, name, value, *args, **kwargs)

    monkeypatch.setattr(UnlearningTrainingPlan, "log", spy)
    new = trained_scvi.unlearn(dc_split.forget, method="neggrad_plus", max_epochs=2, seed=0, **QUIET)
    ours = [entry for entry in logged if entry[0] in ("retain_loss", "forget_loss", "objective")]
    assert ours and all(t is torch.Tensor and sync == plan_sync for _, t, sync, plan_sync in ours)
    # the epoch means kept in the record are those of the logged per-step values
    assert len(new.unlearning_records_[-1]["history"]["retain_loss"]) == 2


def test_frozen_critics_are_held_outside_the_plan(trained_scvi, dc_split, recwarn):
    from scforget.methods._critic_plan import CriticCells
    from scforget.train import ExtraGradientPlan, FrozenCriticPlan

    cells = CriticCells(trained_scvi.adata_manager, dc_split.forget, dc_split.holdout, dc_split.holdout, seed=0)
    import copy

    frozen = FrozenCriticPlan(copy.deepcopy(trained_scvi.module), critic_pretrain_steps=5)
    frozen.attach_cells(cells)
    critic_ids = {id(m) for c in frozen.critic_modules() for m in c.modules()}
    assert critic_ids and not critic_ids & {id(m) for m in frozen.modules()}
    trainable = ExtraGradientPlan(copy.deepcopy(trained_scvi.module), critic_pretrain_steps=5)
    trainable.attach_cells(cells)
    assert {id(c) for c in trainable.critic_modules()} <= {id(m) for m in trainable.modules()}
    # no Lightning warning about modules left in eval mode
    trained_scvi.unlearn(
        dc_split.forget, method="frozen_critic", nonmembers=dc_split.holdout, max_epochs=1, seed=0, **QUIET
    )
    assert not [w for w in recwarn if "eval mode" in str(w.message)]


def test_retrain_batch_size_follows_the_recipe_unless_given(pbmc_small, dc_split):
    model = train_tiny(sf.model.SCVI, pbmc_small, dc_split, max_epochs=2)
    model.training_recipe_["batch_size"] = 64
    assert model.unlearn(dc_split.forget, method="retrain", **QUIET).unlearning_records_[-1]["batch_size"] == 64
    given = model.unlearn(dc_split.forget, method="retrain", batch_size=128, **QUIET)
    assert given.unlearning_records_[-1]["batch_size"] == 128  # an explicit 128 is not "not given"


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("relative_fisher", {"mode": "noise", "max_retain_cells": 300}),
        ("fisher_forgetting", {"max_retain_cells": 300}),
        ("extragradient", {"max_epochs": 1}),
        ("bad_teacher", {"max_epochs": 1}),
    ],
)
def test_seed_none_follows_scvi_settings_seed(trained_scvi, dc_split, method, kwargs):
    import scvi

    extra = {"nonmembers": dc_split.holdout} if method == "extragradient" else {}
    scvi.settings.seed = 3
    torch.rand(7)  # the caller's own draws must not matter
    a = sf.unlearn(trained_scvi, dc_split.forget, method=method, **kwargs, **extra, **QUIET)
    random.random()
    np.random.rand(3)
    b = sf.unlearn(trained_scvi, dc_split.forget, method=method, **kwargs, **extra, **QUIET)
    c = sf.unlearn(trained_scvi, dc_split.forget, method=method, seed=3, **kwargs, **extra, **QUIET)
    d = sf.unlearn(trained_scvi, dc_split.forget, method=method, seed=4, **kwargs, **extra, **QUIET)
    assert same_state(a, state_snapshot(b)) and same_state(a, state_snapshot(c))
    assert not same_state(a, state_snapshot(d))
    assert a.unlearning_records_[-1]["seed"] == 3


def test_audit_leaves_the_callers_random_state_alone(trained_scvi, dc_split):
    torch.manual_seed(9)
    np.random.seed(9)
    random.seed(9)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9)
    np.random.seed(9)
    random.seed(9)
    sf.audit(
        trained_scvi, members=dc_split.forget, nonmembers=dc_split.holdout, attacks=("loss", "classifier", "lira"),
        classifier="mlp", n_reference=2, reference_epochs=1, n_bootstrap=20, progress_bar=False,
    )  # fmt: skip
    after = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(after[0], expected[0]) and np.array_equal(after[1], expected[1]) and after[2] == expected[2]


def test_audit_seed_none_follows_scvi_settings_seed(trained_scvi, dc_split):
    import scvi

    kw = {"members": dc_split.forget, "nonmembers": dc_split.holdout, "attacks": ("classifier",), "progress_bar": False}
    scvi.settings.seed = 5
    a = sf.audit(trained_scvi, **kw, n_bootstrap=50)
    b = sf.audit(trained_scvi, **kw, n_bootstrap=50, seed=5)
    c = sf.audit(trained_scvi, **kw, n_bootstrap=50, seed=6)
    assert a.seed == 5 and a.summary().equals(b.summary())
    assert not np.array_equal(a.info["folds"], c.info["folds"])
