"""DP-SGD with Opacus: per-cell gradients, clipping, noise, accounting, training, the dpsgd method."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scvi
import torch
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.grad_sample import GradSampleModule
from opacus.utils.uniform_sampler import UniformWithReplacementSampler

import scforget as sf
from scforget._core import minibatches, negative_elbo
from scforget.methods._private import (
    DPVAE,
    PoissonData,
    PoissonSampler,
    PrivateTrainingPlan,
    check_private_strategy,
    freeze_unused,
    poisson_loader,
)

from .conftest import same_state, state_snapshot, train_tiny

QUIET = {"enable_progress_bar": False}
LAYER_NORM = {"use_batch_norm": "none", "use_layer_norm": "both"}


@pytest.fixture
def ln_model(pbmc_small, dc_split):
    """A tiny LayerNorm scVI trained 2 epochs (non-private), dropout off so forwards are comparable."""
    return train_tiny(sf.model.SCVI, pbmc_small, dc_split, max_epochs=2, dropout_rate=0.0, **LAYER_NORM)


def test_dpvae_is_the_same_network(ln_model, dc_split):
    dp = DPVAE.adopt(ln_model.module)
    (tensors,) = list(minibatches(ln_model, dc_split.forget))
    ln_model.module.eval()
    dp.eval()
    with torch.no_grad():
        torch.testing.assert_close(negative_elbo(dp, tensors), negative_elbo(ln_model.module, tensors))
    # and its weights go back into a stock VAE
    fresh = scvi.module.VAE(n_input=ln_model.adata.n_vars, n_hidden=32, n_latent=5, **LAYER_NORM)
    fresh.load_state_dict(dp.vae_state_dict())
    assert torch.equal(fresh.px_r, ln_model.module.px_r)


def test_opacus_per_cell_gradients_equal_a_per_cell_loop(ln_model, dc_split):
    dp = DPVAE.adopt(ln_model.module)
    (tensors,) = list(minibatches(ln_model, dc_split.retain[:24]))
    frozen = freeze_unused(dp, tensors)
    assert "decoder.px_r_decoder.weight" in frozen and "gene_dispersion.weight" not in frozen
    dp.train()
    GradSampleModule(dp, loss_reduction="mean")
    negative_elbo(dp, tensors).mean().backward()
    trainable = {n: p for n, p in dp.named_parameters() if p.requires_grad}
    samples = {n: p.grad_sample.detach().clone() for n, p in trainable.items()}
    reference = DPVAE.adopt(ln_model.module)
    reference.train()
    ref_params = {n: p for n, p in reference.named_parameters() if n in trainable}
    worst = 0.0
    for i in range(24):
        cell = {k: v[i : i + 1] for k, v in tensors.items()}
        grads = torch.autograd.grad(negative_elbo(reference, cell).mean(), list(ref_params.values()))
        for (name, _), g in zip(ref_params.items(), grads, strict=True):
            worst = max(worst, float((samples[name][i] - g).norm() / (g.norm() + 1e-12)))
    assert worst < 1e-5


def test_clipping_and_noise_match_the_mechanism(ln_model, dc_split):
    """The update deviates from the clipped non-private one by noise of std sigma * C / B; clipped norms <= C."""
    dp = DPVAE.adopt(ln_model.module)
    train = dc_split.retain
    loader = poisson_loader(ln_model.adata_manager, train, batch_size=64, seed=0)
    probe = next(iter(minibatches(ln_model, train[:64])))
    freeze_unused(dp, probe)
    plan = PrivateTrainingPlan(
        dp, data_loader=loader, target_epsilon=2.0, target_delta=1e-4, max_grad_norm=0.5, max_epochs=2, noise_seed=3
    )
    optimizer = plan.configure_optimizers()
    dp.train()
    batch = next(iter(loader))
    _, _, out = dp(batch, loss_kwargs={"kl_weight": 1.0})
    out.loss.backward()
    params = [p for p in dp.parameters() if p.requires_grad]
    per_cell = torch.cat([p.grad_sample.reshape(p.grad_sample.shape[0], -1) for p in params], dim=1)
    norms = per_cell.norm(dim=1)
    factor = (0.5 / (norms + 1e-6)).clamp(max=1.0)
    assert float((per_cell * factor[:, None]).norm(dim=1).max()) <= 0.5 + 1e-5
    assert float(norms.max()) > 0.5  # clipping did act
    clipped = {id(p): torch.einsum("n,n...->...", factor, p.grad_sample) for p in params}
    optimizer.pre_step()  # Opacus: clip, sum, add noise, divide by the expected batch size
    sigma, b = optimizer.noise_multiplier, optimizer.expected_batch_size
    assert b == math.floor(train.size / math.ceil(train.size / 64))
    deviation = torch.cat([(p.grad - clipped[id(p)] / b).reshape(-1) for p in params])
    expected = sigma * 0.5 / b
    # the sample sd of N Gaussian draws has relative sd 1 / sqrt(2N); allow 5 of those
    assert float(deviation.std()) == pytest.approx(expected, rel=5 / math.sqrt(2 * deviation.numel()))
    assert abs(float(deviation.mean())) < 5 * expected / math.sqrt(deviation.numel())
    plan.on_train_end()


def test_poisson_sampler_in_one_process_draws_what_opacus_draws():
    ours = list(PoissonSampler(50, 0.1, steps=30, seed=7))
    theirs = list(UniformWithReplacementSampler(
        num_samples=50, sample_rate=0.1, steps=30, generator=torch.Generator().manual_seed(7)
    ))  # fmt: skip
    assert ours == theirs and len(ours) == 30


def test_poisson_sampler_shards_are_disjoint_independent_and_take_every_step():
    n, q, steps, world = 101, 0.2, 2000, 3
    ranks = [PoissonSampler(n, q, steps, seed=5, rank=r, world_size=world) for r in range(world)]
    shares = [set(s.positions.tolist()) for s in ranks]
    assert set().union(*shares) == set(range(n)) and sum(len(x) for x in shares) == n
    masks = []
    for s in ranks:
        batches = list(s)
        assert len(batches) == steps  # empty minibatches are steps too (DDP needs the same count)
        m = np.zeros((steps, n), dtype=bool)
        for t, b in enumerate(batches):
            m[t, b] = True
        masks.append(m)
    union = masks[0] | masks[1] | masks[2]
    # each cell is in each step with probability q: binomial sd of the mean over n * steps draws
    sd = math.sqrt(q * (1 - q) / (n * steps))
    assert abs(union.mean() - q) < 5 * sd
    # the processes draw independently: the correlation of paired positions (rank 0's i-th cell with
    # rank 1's i-th cell) over steps has sd 1 / sqrt(N) under independence; shared seeds would give 1
    a, b = masks[0][:, 0::world][:, :33].ravel(), masks[1][:, 1::world][:, :33].ravel()
    r = np.corrcoef(a, b)[0, 1]
    assert abs(r) < 5 / math.sqrt(a.size)
    with pytest.raises(ValueError, match="`rank`"):
        PoissonSampler(n, q, steps, seed=0, rank=3, world_size=3)


def test_poisson_loader_steps_count_every_process(pbmc_small):
    sf.model.SCVI.setup_anndata(pbmc_small)
    model = sf.model.SCVI(pbmc_small, n_hidden=16, n_latent=4, **LAYER_NORM)
    cells = np.arange(300)
    one = poisson_loader(model.adata_manager, cells, batch_size=64, seed=0)
    two = poisson_loader(model.adata_manager, cells, batch_size=64, seed=0, rank=1, world_size=2)
    assert len(one) == 5 and len(two) == 3  # ceil(300 / 64) and ceil(300 / (64 * 2))
    assert len(two.dataset) == 300  # every process holds all cells (Opacus' distributed accounting)
    data = PoissonData(model.adata_manager, cells, batch_size=64, seed=0)
    assert data() is data() and len(data()) == 5  # outside a process group: the one-process loader


@pytest.mark.parametrize(
    ("strategy", "refused"),
    [
        (None, None),
        ("auto", None),
        ("ddp", None),
        ("ddp_find_unused_parameters_true", None),
        ("ddp_spawn", "child processes"),
        ("ddp_fork_find_unused_parameters_true", "child processes"),
        ("ddp_notebook", "child processes"),
        ("fsdp", "sharded parameters"),
        ("deepspeed_stage_2", "sharded parameters"),
    ],
)
def test_private_strategies(strategy, refused):
    kwargs = {} if strategy is None else {"strategy": strategy}
    if refused is None:
        check_private_strategy(kwargs)
    else:
        with pytest.raises(ValueError, match=refused):
            check_private_strategy(kwargs)


def test_private_strategy_objects():
    check_private_strategy({"strategy": SingleDeviceStrategy("cpu")})
    with pytest.raises(ValueError, match="strategy='ddp'"):
        check_private_strategy({"strategy": DDPStrategy()})


@pytest.mark.parametrize(("accountant", "cls"), [("rdp", RDPAccountant), ("prv", PRVAccountant)])
def test_train_private_reports_what_the_accountant_says(pbmc_small, dc_split, accountant, cls):
    sf.model.SCVI.setup_anndata(pbmc_small)
    model = sf.model.SCVI(pbmc_small, n_hidden=16, n_latent=4, **LAYER_NORM)
    rec = model.train_private(
        4.0, max_epochs=2, batch_size=128, accountant=accountant, seed=0,
        datasplitter_kwargs=dc_split.datasplitter_kwargs(), **QUIET,
    )  # fmt: skip
    n = dc_split.train.size
    steps_per_epoch = math.ceil(n / 128)
    assert rec["steps"] == 2 * steps_per_epoch and rec["sample_rate"] == pytest.approx(1 / steps_per_epoch)
    assert rec["delta"] == pytest.approx(1 / n) and rec["guarantee"] == "(epsilon, delta)-DP"
    standalone = cls()
    standalone.history = [(rec["noise_multiplier"], rec["sample_rate"], rec["steps"])]
    assert rec["epsilon"] == pytest.approx(standalone.get_epsilon(rec["delta"]), rel=1e-9)
    assert rec["epsilon"] <= 4.0 + 1e-2  # the noise multiplier was chosen for the target
    np.testing.assert_array_equal(np.sort(model.train_indices), dc_split.train)
    assert model.training_recipe_["max_epochs"] == 2


def test_private_record_survives_save_and_stock_loading(tmp_path, pbmc_small, dc_split):
    sf.model.SCVI.setup_anndata(pbmc_small)
    model = sf.model.SCVI(pbmc_small, n_hidden=16, n_latent=4, **LAYER_NORM)
    rec = model.train_private(8.0, max_epochs=1, seed=0, datasplitter_kwargs=dc_split.datasplitter_kwargs(), **QUIET)
    model.save(tmp_path / "m", save_anndata=False)
    assert sf.model.SCVI.load(tmp_path / "m", adata=pbmc_small).privacy_ == rec
    stock = scvi.model.SCVI.load(tmp_path / "m", adata=pbmc_small)
    np.testing.assert_allclose(stock.get_latent_representation(), model.get_latent_representation(), atol=1e-6)


def test_train_private_refuses_batchnorm_and_bad_arguments(pbmc_small):
    sf.model.SCVI.setup_anndata(pbmc_small)
    bn = sf.model.SCVI(pbmc_small, n_hidden=16)
    with pytest.raises(ValueError, match="use_batch_norm='none'"):
        bn.train_private(3.0)
    ln = sf.model.SCVI(pbmc_small, n_hidden=16, **LAYER_NORM)
    for kwargs, error, match in [
        ({"target_epsilon": 0.0}, ValueError, "target_epsilon"),
        ({"target_epsilon": 3.0, "accountant": "gdp"}, ValueError, "accountant"),
        ({"target_epsilon": 3.0, "max_grad_norm": -1.0}, ValueError, "max_grad_norm"),
        ({"target_epsilon": 3.0, "batch_size": True}, TypeError, "batch_size"),
        ({"target_epsilon": 3.0, "gradient_clip_val": 1.0}, TypeError, "max_grad_norm"),
        ({"target_epsilon": 3.0, "devices": 2, "strategy": "ddp_spawn"}, ValueError, "child processes"),
        ({"target_epsilon": 3.0, "devices": 2, "strategy": "fsdp"}, ValueError, "sharded parameters"),
        ({"target_epsilon": 3.0, "strategy": DDPStrategy()}, ValueError, "strategy object"),
    ]:
        with pytest.raises(error, match=match):
            ln.train_private(**kwargs)
    assert not ln.is_trained_


def test_dpsgd_method_retrains_privately(trained_scvi, dc_split, tmp_path, pbmc_small):
    snap = state_snapshot(trained_scvi)
    new = trained_scvi.unlearn(dc_split.forget, method="dpsgd", target_epsilon=5.0, max_epochs=2, seed=0, **QUIET)
    assert same_state(trained_scvi, snap)
    rec = new.unlearning_records_[-1]
    assert rec["guarantee"] == "(epsilon, delta)-DP" and rec["epsilon"] <= 5.0 + 1e-2
    assert rec["architecture"] == "BatchNorm replaced by LayerNorm for DP-SGD"
    assert not sf._core.has_batchnorm(new.module) and new.privacy_["epsilon"] == rec["epsilon"]
    assert np.intersect1d(new.train_indices, dc_split.forget).size == 0
    new.save(tmp_path / "m", save_anndata=False)
    loaded = sf.model.SCVI.load(tmp_path / "m", adata=pbmc_small)
    assert loaded.unlearning_records_[-1]["epsilon"] == rec["epsilon"]
    # retraining a private model is private again, with its budget
    again = loaded.unlearn(dc_split.retain[:3], method="retrain", max_epochs=1, seed=0, **QUIET)
    assert again.privacy_["target_epsilon"] == 5.0 and again.unlearning_records_[-1]["privacy"]["steps"] > 0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"target_epsilon": -1.0}, ValueError, "target_epsilon"),
        ({"accountant": "gdp"}, ValueError, "accountant"),
        ({"max_grad_norm": 0}, ValueError, "max_grad_norm"),
        ({"devices": 2, "strategy": "ddp_notebook"}, ValueError, "child processes"),
    ],
)
def test_dpsgd_bad_arguments_fail_before_work(trained_scvi, dc_split, kwargs, error, match):
    snap = state_snapshot(trained_scvi)
    with pytest.raises(error, match=match):
        trained_scvi.unlearn(dc_split.forget, method="dpsgd", **kwargs)
    assert same_state(trained_scvi, snap)


def test_dpsgd_refuses_condscvi(pbmc_small, dc_split):
    model = train_tiny(sf.model.CondSCVI, pbmc_small, dc_split, max_epochs=1)
    with pytest.raises(TypeError, match="scvi.model.SCVI"):
        model.unlearn(dc_split.forget, method="dpsgd")


@pytest.mark.slow
def test_dp_audit_on_a_planted_leak(_pbmc_small_master):
    """Members memorised without DP; with DP at epsilon the audit's epsilon lower bound stays below epsilon."""
    adata = _pbmc_small_master.copy()
    sf.model.SCVI.setup_anndata(adata)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    rng = np.random.default_rng(0)
    b = rng.permutation(np.flatnonzero(labels == "B"))
    members, holdout = np.sort(b[:40]), np.sort(b[40:80])
    others = np.sort(rng.choice(np.flatnonzero(labels != "B"), 60, replace=False))
    train = np.union1d(members, others)
    rest = np.setdiff1d(np.arange(adata.n_obs), train)
    split = {"external_indexing": [train, np.zeros(0, dtype=np.int64), rest]}
    kwargs = {"n_hidden": 128, "n_latent": 10, "dropout_rate": 0.0, **LAYER_NORM}
    scvi.settings.seed = 0
    leaky = sf.model.SCVI(adata, **kwargs)
    leaky.train(max_epochs=200, batch_size=8, datasplitter_kwargs=split, **QUIET)
    private = sf.model.SCVI(adata, **kwargs)
    epsilon = 1.0
    private.train_private(epsilon, max_epochs=200, batch_size=8, seed=0, datasplitter_kwargs=split, **QUIET)
    reports = {
        name: sf.audit(m, members=members, nonmembers=holdout, attacks=("loss", "classifier"), progress_bar=False)
        for name, m in {"leaky": leaky, "private": private}.items()
    }
    leak, dp = reports["leaky"].summary(), reports["private"].summary()
    assert leak.loc["loss", "auc"] > 0.8  # the design memorises without DP
    assert (dp["eps_lb"] <= epsilon).all(), dp
    assert leak["eps_lb"].max() > dp["eps_lb"].max()
