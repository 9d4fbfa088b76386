"""The rewind checkpoint (recorded at training time) and ``method="rewind"``."""

from __future__ import annotations

import numpy as np
import pytest
import scvi
import torch
from lightning.pytorch.callbacks import Callback

import scforget as sf
from scforget._core import clone_model
from scforget.methods._checkpoint import CHECKPOINT_ATTR, RewindCheckpoint

from .conftest import mean_nll, same_state, same_tensors, state_snapshot

EPOCHS = 20  # the checkpoint lands after round(0.03 * 20) = 1 epoch; with fraction 0.1, after 2


def _train(adata, split, *, cls=sf.model.SCVI, seed=0, epochs=EPOCHS, **train_kwargs):
    scvi.settings.seed = seed
    model = cls(adata, n_hidden=32, n_latent=5, gene_likelihood="nb")
    model.train(
        max_epochs=epochs,
        batch_size=128,
        accelerator="cpu",
        enable_progress_bar=False,
        datasplitter_kwargs=split.datasplitter_kwargs(),
        **train_kwargs,
    )
    return model


@pytest.fixture(scope="module")
def setup(_pbmc_small_master):
    adata = _pbmc_small_master.copy()
    split = sf.data.structured_forget(adata, "cell_type", "DC", holdout_fraction=0.5, seed=0)
    sf.model.SCVI.setup_anndata(adata)
    return _train(adata, split, rewind_fraction=0.1), split


def test_checkpoint_holds_the_weights_after_its_epoch(setup):
    model, split = setup
    ckpt = model.rewind_checkpoint_
    assert ckpt["epoch"] == 2 and ckpt["epochs_run"] == EPOCHS
    # scvi-tools warms the KL weight up linearly over 400 epochs: the last epoch (index 19) trained at 19 / 400
    assert ckpt["kl_weight"] == pytest.approx((EPOCHS - 1) / 400)
    # an independent run of the same seed stopped after 2 epochs has exactly the checkpoint's weights
    short = _train(model.adata, split, epochs=2, rewind_fraction=None)
    assert short.rewind_checkpoint_ is None
    assert same_tensors(ckpt["state_dict"], short.module.state_dict())
    assert not same_tensors(ckpt["state_dict"], model.module.state_dict())


def test_checkpoint_survives_a_safe_save_and_load(setup, tmp_path):
    model, _ = setup
    model.save(str(tmp_path / "m"), save_anndata=False)
    loaded = sf.model.SCVI.load(str(tmp_path / "m"), adata=model.adata)  # weights-only unpickler
    ckpt, back = model.rewind_checkpoint_, loaded.rewind_checkpoint_
    assert {k: v for k, v in back.items() if k != "state_dict"} == {k: v for k, v in ckpt.items() if k != "state_dict"}
    assert same_tensors(back["state_dict"], ckpt["state_dict"])


def _finetune_from_checkpoint(model, split, **kwargs):
    """The rewind by hand: a copy holding the checkpoint's weights, fine-tuned with ``finetune``."""
    manual = clone_model(model)
    manual.module.load_state_dict(model.rewind_checkpoint_["state_dict"])
    return manual.unlearn(split.forget, method="finetune", enable_progress_bar=False, **kwargs)


def test_rewind_is_a_fine_tune_from_the_checkpoint_at_the_recorded_kl_weight(setup):
    model, split = setup
    snap = state_snapshot(model)
    new = model.unlearn(split.forget, method="rewind", seed=3, max_epochs=2, anneal_lr=False, enable_progress_bar=False)
    assert same_state(model, snap) and model.rewind_checkpoint_ is not None  # input untouched
    kl = model.rewind_checkpoint_["kl_weight"]
    by_hand = _finetune_from_checkpoint(model, split, seed=3, max_epochs=2, lr=1e-2, max_kl_weight=kl)
    assert same_tensors(new.module.state_dict(), by_hand.module.state_dict())
    # ... and not what the same fine-tune from the final weights, or at KL weight 1, gives
    final = model.unlearn(split.forget, method="finetune", seed=3, max_epochs=2, lr=1e-2, max_kl_weight=kl)
    assert not same_tensors(new.module.state_dict(), final.module.state_dict())
    rec = new.unlearning_records_[-1]
    assert rec["method"] == "rewind" and rec["rewound_to_epoch"] == 2 and rec["training_epochs"] == EPOCHS
    assert rec["kl_weight"] == pytest.approx(kl)
    assert rec["epochs_run"] == 2 and len(rec["history"]["retain_loss"]) == 2


class _LearningRates(Callback):
    """The main optimiser's learning rate at the start of every training step."""

    def __init__(self):
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_annealed_rewind_decays_the_learning_rate_on_a_cosine_to_zero(setup):
    model, split = setup
    annealed, constant = _LearningRates(), _LearningRates()
    kw = {"seed": 2, "max_epochs": 3, "enable_progress_bar": False}
    new = model.unlearn(split.forget, method="rewind", callbacks=[annealed], **kw)  # annealed by default
    plain = model.unlearn(split.forget, method="rewind", anneal_lr=False, callbacks=[constant], **kw)
    n = len(annealed.lrs)
    assert n == len(constant.lrs) > 3
    # step t of n runs at lr * (1 + cos(pi t / n)) / 2: the full rate first, nearly 0 at the last step
    expected = 1e-2 * (1 + np.cos(np.pi * np.arange(n) / n)) / 2
    np.testing.assert_allclose(annealed.lrs, expected, rtol=1e-5, atol=1e-12)
    assert constant.lrs == [1e-2] * n
    assert not same_tensors(new.module.state_dict(), plain.module.state_dict())
    assert new.unlearning_records_[-1]["lr_schedule"].startswith("cosine")
    assert plain.unlearning_records_[-1]["lr_schedule"] == "constant"


def test_user_kl_weight_wins(setup):
    model, split = setup
    new = model.unlearn(
        split.forget,
        method="rewind",
        seed=1,
        max_kl_weight=1.0,
        max_epochs=1,
        anneal_lr=False,
        enable_progress_bar=False,
    )
    assert new.unlearning_records_[-1]["kl_weight"] == 1.0
    at_one = _finetune_from_checkpoint(model, split, seed=1, max_epochs=1, lr=1e-2, max_kl_weight=1.0)
    assert same_tensors(new.module.state_dict(), at_one.module.state_dict())
    recorded = _finetune_from_checkpoint(
        model, split, seed=1, max_epochs=1, lr=1e-2, max_kl_weight=model.rewind_checkpoint_["kl_weight"]
    )
    assert not same_tensors(new.module.state_dict(), recorded.module.state_dict())


def test_rewind_default_budget_and_selective_forgetting(setup):
    model, split = setup
    new = model.unlearn(split.forget, method="rewind", seed=0, enable_progress_bar=False)
    assert new.unlearning_records_[-1]["epochs_run"] == round(0.20 * EPOCHS)
    # the forget cells' advantage over never-trained cells of their type (the membership gap) shrinks
    gap = [mean_nll(m, split.holdout) - mean_nll(m, split.forget) for m in (model, new)]
    assert gap[0] > 0 and gap[1] < gap[0]


@pytest.mark.parametrize("method", ["rewind", "finetune"])
def test_no_unlearned_model_carries_the_checkpoint(setup, method, tmp_path):
    model, split = setup
    new = model.unlearn(split.forget, method=method, max_epochs=1, enable_progress_bar=False)
    assert getattr(new, CHECKPOINT_ATTR) is None
    new.save(str(tmp_path / "m"), save_anndata=False)
    assert sf.model.SCVI.load(str(tmp_path / "m"), adata=model.adata).rewind_checkpoint_ is None
    # so a second rewind is refused, with the way out
    with pytest.raises(ValueError, match="carry none"):
        new.unlearn(split.retain[:10], method="rewind")


def test_inplace_unlearning_drops_the_checkpoint_of_the_model_itself(setup):
    model, split = setup
    target = clone_model(model)  # keep the module's fixture intact
    assert target.rewind_checkpoint_ is not None
    out = target.unlearn(split.forget, method="finetune", inplace=True, max_epochs=1, enable_progress_bar=False)
    assert out is target and target.rewind_checkpoint_ is None


def test_retrain_keeps_its_own_fresh_checkpoint(setup):
    model, split = setup
    new = model.unlearn(split.forget, method="retrain", max_epochs=4, enable_progress_bar=False)
    ckpt = new.rewind_checkpoint_
    assert ckpt is not None and not same_tensors(ckpt["state_dict"], model.rewind_checkpoint_["state_dict"])
    assert ckpt["epochs_run"] == 4  # the fresh run's, not the input's 20
    # trained with rewind_fraction=0.1 (recorded in the recipe): round(0.1 * 4) = epoch 0 -> at least 1
    assert ckpt["epoch"] == 1


def test_retrain_honours_no_checkpoint(_pbmc_small_master):
    adata = _pbmc_small_master.copy()
    split = sf.data.structured_forget(adata, "cell_type", "DC", holdout_fraction=0.5, seed=0)
    sf.model.SCVI.setup_anndata(adata)
    model = _train(adata, split, epochs=3, rewind_fraction=None)
    assert model.rewind_checkpoint_ is None and model.training_recipe_["rewind_fraction"] is None
    assert model.unlearn(split.forget, method="retrain", enable_progress_bar=False).rewind_checkpoint_ is None


def test_checkpoints_recorded_while_unlearning_are_refused(setup):
    model, split = setup
    snap = state_snapshot(model)
    for method in ("finetune", "retrain"):
        with pytest.raises(TypeError, match="Drop the RewindCheckpoint"):
            model.unlearn(split.forget, method=method, callbacks=[RewindCheckpoint(model)])
    assert same_state(model, snap)


def test_a_callback_for_another_model_is_refused(_pbmc_small_master):
    adata = _pbmc_small_master.copy()
    sf.model.SCVI.setup_anndata(adata)
    one = sf.model.SCVI(adata, n_hidden=32, n_latent=5)
    other = sf.model.SCVI(adata, n_hidden=32, n_latent=5)
    with pytest.raises(ValueError, match="made for another model"):
        other.train(max_epochs=2, accelerator="cpu", enable_progress_bar=False, callbacks=[RewindCheckpoint(one)])
    assert getattr(one, CHECKPOINT_ATTR, None) is None


def test_no_checkpoint_at_the_last_epoch_and_the_users_callback_wins(_pbmc_small_master):
    adata = _pbmc_small_master.copy()
    sf.model.SCVI.setup_anndata(adata)
    one_epoch = sf.model.SCVI(adata, n_hidden=32, n_latent=5)
    one_epoch.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
    assert one_epoch.rewind_checkpoint_ is None  # epoch 1 of 1 would be the trained model itself
    mine = sf.model.SCVI(adata, n_hidden=32, n_latent=5)
    cb = RewindCheckpoint(mine, fraction=0.5)
    mine.train(max_epochs=4, accelerator="cpu", enable_progress_bar=False, callbacks=[cb])
    assert mine.rewind_checkpoint_["epoch"] == 2  # the user's fraction, not the default 3%


def test_dp_training_drops_an_earlier_checkpoint(_pbmc_small_master):
    adata = _pbmc_small_master.copy()
    sf.model.SCVI.setup_anndata(adata)
    model = sf.model.SCVI(adata, n_hidden=16, n_latent=4, use_batch_norm="none", use_layer_norm="both")
    model.train(max_epochs=2, accelerator="cpu", enable_progress_bar=False, rewind_fraction=0.5)
    assert model.rewind_checkpoint_ is not None
    model.train_private(target_epsilon=10.0, max_epochs=1, accelerator="cpu", enable_progress_bar=False)
    assert model.rewind_checkpoint_ is None
    model.rewind_checkpoint_ = {"epoch": 1, "epochs_run": 2, "kl_weight": 0.0, "state_dict": {}}  # e.g. a file
    with pytest.raises(ValueError, match="DP-SGD"):
        model.unlearn(np.arange(5), method="rewind")


def test_training_again_drops_the_checkpoint(_pbmc_small_master):
    adata = _pbmc_small_master.copy()
    split = sf.data.structured_forget(adata, "cell_type", "DC", holdout_fraction=0.5, seed=0)
    sf.model.SCVI.setup_anndata(adata)
    model = _train(adata, split, epochs=2)
    assert model.rewind_checkpoint_["epoch"] == 1
    model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
    assert model.rewind_checkpoint_ is None


def test_stock_model_with_the_callback(_pbmc_small_master):
    adata = _pbmc_small_master.copy()
    split = sf.data.structured_forget(adata, "cell_type", "DC", holdout_fraction=0.5, seed=0)
    scvi.model.SCVI.setup_anndata(adata)
    scvi.settings.seed = 0
    stock = scvi.model.SCVI(adata, n_hidden=32, n_latent=5, gene_likelihood="nb")
    train = {"max_epochs": 4, "accelerator": "cpu", "enable_progress_bar": False}
    train["datasplitter_kwargs"] = split.datasplitter_kwargs()
    # without the callback: refused before any work, with the fix in the message
    stock.train(**train)
    snap = state_snapshot(stock)
    with pytest.raises(ValueError, match=r"callbacks=\[scforget.train.RewindCheckpoint\(model\)\]"):
        sf.unlearn(stock, split.forget, method="rewind")
    assert same_state(stock, snap)
    scvi.settings.seed = 0
    stock = scvi.model.SCVI(adata, n_hidden=32, n_latent=5, gene_likelihood="nb")
    stock.train(**train, callbacks=[sf.train.RewindCheckpoint(stock, fraction=0.5)])
    assert stock.rewind_checkpoint_["epoch"] == 2
    new = sf.unlearn(stock, split.forget, method="rewind", max_epochs=1)
    assert isinstance(new, scvi.model.SCVI) and new.rewind_checkpoint_ is None
    assert stock.rewind_checkpoint_ is not None


def test_condscvi_records_a_checkpoint(_pbmc_small_master):
    adata = _pbmc_small_master.copy()
    sf.model.CondSCVI.setup_anndata(adata, labels_key="cell_type")
    scvi.settings.seed = 0
    model = sf.model.CondSCVI(adata, n_hidden=32)
    model.train(max_epochs=4, accelerator="cpu", enable_progress_bar=False, rewind_fraction=0.5)
    assert model.rewind_checkpoint_["epoch"] == 2
    forget = np.flatnonzero(adata.obs["cell_type"].to_numpy() == "DC")
    new = model.unlearn(forget, method="rewind", max_epochs=1, enable_progress_bar=False)
    assert new.rewind_checkpoint_ is None


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "0.05", True])
def test_bad_rewind_fraction_refused_before_training(_pbmc_small_master, bad):
    adata = _pbmc_small_master.copy()
    sf.model.SCVI.setup_anndata(adata)
    model = sf.model.SCVI(adata, n_hidden=32, n_latent=5)
    with pytest.raises((TypeError, ValueError), match="rewind_fraction"):
        model.train(max_epochs=1, rewind_fraction=bad)
    assert not model.is_trained_


@pytest.mark.parametrize("bad", [0, 1, 2.0, "x"])
def test_bad_callback_fraction(bad):
    with pytest.raises((TypeError, ValueError), match="fraction"):
        RewindCheckpoint(object(), fraction=bad)


def test_mismatched_checkpoint_refused(setup):
    model, split = setup
    target = clone_model(model)
    ckpt = dict(target.rewind_checkpoint_)
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if "decoder" not in k}
    target.rewind_checkpoint_ = ckpt
    snap = state_snapshot(target)
    with pytest.raises(ValueError, match="does not match its module"):
        target.unlearn(split.forget, method="rewind")
    assert same_state(target, snap)
    ckpt["state_dict"] = {k: torch.zeros(1) for k in model.module.state_dict()}
    with pytest.raises(ValueError, match="does not match its module"):
        target.unlearn(split.forget, method="rewind")
    good = model.rewind_checkpoint_
    for broken, message in [
        ({**good, "epoch": 20}, "must be a whole number before"),
        ({**good, "epoch": 2.0}, "must be a whole number before"),
        ({**good, "kl_weight": float("nan")}, "kl_weight"),
        ({**good, "kl_weight": "0.1"}, "kl_weight"),
        ([1, 2], "malformed"),
    ]:
        target.rewind_checkpoint_ = broken
        with pytest.raises(ValueError, match=message):
            target.unlearn(split.forget, method="rewind")
        assert same_state(target, snap)
    target.rewind_checkpoint_ = good
    with pytest.raises(ValueError, match="min_kl_weight"):
        target.unlearn(split.forget, method="rewind", min_kl_weight=0.9)


def test_rewind_hyperparameters_checked(setup):
    model, split = setup
    with pytest.raises(ValueError, match="lr"):
        model.unlearn(split.forget, method="rewind", lr=-1.0)
    with pytest.raises(TypeError, match="max_kl_weight"):
        model.unlearn(split.forget, method="rewind", max_kl_weight="high")
    with pytest.raises(TypeError, match="Did you mean 'max_kl_weight'"):
        model.unlearn(split.forget, method="rewind", max_kl_wieght=0.5)
    with pytest.raises(TypeError, match="anneal_lr"):
        model.unlearn(split.forget, method="rewind", anneal_lr=1)
    with pytest.raises(ValueError, match="reduce_lr_on_plateau"):
        model.unlearn(split.forget, method="rewind", anneal_lr=True, reduce_lr_on_plateau=True)
