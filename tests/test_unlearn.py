import copy

import numpy as np
import pandas as pd
import pytest
import scvi

import scforget as sf
from scforget.methods import verify_forgotten

from .conftest import ForgetBatchNormWatch, mean_nll, same_state, state_snapshot, train_tiny, watch_batchnorm

QUIET = {"enable_progress_bar": False}


@pytest.fixture
def snapshot_of(trained_scvi, pbmc_small):
    """Everything an unlearn call must leave untouched."""
    return {
        "state": state_snapshot(trained_scvi),
        "train": trained_scvi.train_indices.copy(),
        "obs": pbmc_small.obs.copy(),
        "X": pbmc_small.X.copy(),
        "history": copy.deepcopy(trained_scvi.history_),
    }


def assert_untouched(model, adata, snap):
    assert same_state(model, snap["state"])
    np.testing.assert_array_equal(model.train_indices, snap["train"])
    assert adata.obs.equals(snap["obs"])
    assert (adata.X != snap["X"]).nnz == 0
    assert not hasattr(model, "unlearning_records_") or not model.unlearning_records_
    assert model.history_.keys() == snap["history"].keys()


@pytest.mark.parametrize("method", ["finetune", "retrain", "rewind", "short_retrain"])
def test_unlearn_returns_new_model_and_leaves_input(trained_scvi, pbmc_small, dc_split, snapshot_of, method):
    new = trained_scvi.unlearn(dc_split.forget, method=method, seed=0, max_epochs=2, **QUIET)
    assert new is not trained_scvi
    assert type(new) is type(trained_scvi)
    assert not same_state(new, snapshot_of["state"])
    assert_untouched(trained_scvi, pbmc_small, snapshot_of)
    # forgotten cells are no longer training cells of the new model
    assert np.intersect1d(new.train_indices, dc_split.forget).size == 0
    np.testing.assert_array_equal(new.train_indices, dc_split.retain)
    rec = new.unlearning_records_[-1]
    assert rec["method"] == method
    assert rec["n_forget"] == len(dc_split.forget) and rec["n_retain"] == len(dc_split.retain)
    assert rec["seed"] == 0 and rec["max_epochs"] == 2 and rec["wall_time_s"] > 0
    assert {"scvi-tools", "torch"} <= set(rec["versions"])
    assert "timestamp_utc" in rec
    # without a key the record holds counts only
    assert rec["request_digest"] is None and rec["n_requested"] == len(dc_split.forget)
    # the forgotten cells joined the test cells: no position is outside every index set
    everything = np.union1d(np.union1d(new.train_indices, new.validation_indices), new.test_indices)
    assert everything.size == pbmc_small.n_obs


def test_records_keep_the_secret_and_verify_the_request(trained_scvi, pbmc_small, dc_split):
    import hashlib
    import secrets

    key = secrets.token_hex(32)
    never = dc_split.holdout[:3]  # asked for, but never training cells
    request = np.union1d(dc_split.forget, never)
    names = pbmc_small.obs_names[request]
    with pytest.warns(UserWarning, match="never training cells"):
        new = trained_scvi.unlearn(request, method="finetune", seed=0, max_epochs=1, key=key, **QUIET)
    rec = new.unlearning_records_[-1]
    assert (rec["n_requested"], rec["n_forget"], rec["n_never_trained"]) == (request.size, dc_split.forget.size, 3)
    # nothing in the record names a cell or lets a guess be tested without the key
    assert not any(n in str(rec) for n in names)
    assert key not in str(rec)
    for guess_salt in ("", rec.get("forget_digest_salt", "")):
        h = hashlib.sha256((guess_salt + "".join(sorted(names))).encode()).hexdigest()
        assert h != rec["request_digest"]
    check = verify_forgotten(rec, names, key=key)
    assert check["request_matches"] and check["forgotten_matches"]
    assert sorted(check["forgotten"]) == sorted(pbmc_small.obs_names[dc_split.forget])
    assert sorted(check["never_trained"]) == sorted(pbmc_small.obs_names[never])
    assert not verify_forgotten(rec, names[:-1], key=key)["request_matches"]
    assert not verify_forgotten(rec, names, key=secrets.token_hex(32))["request_matches"]
    with pytest.raises(ValueError, match="16 bytes"):
        trained_scvi.unlearn(dc_split.forget, method="finetune", max_epochs=1, key="short", **QUIET)
    plain = trained_scvi.unlearn(dc_split.forget, method="finetune", max_epochs=1, **QUIET).unlearning_records_[-1]
    with pytest.raises(ValueError, match="without a `key`"):
        verify_forgotten(plain, names, key=key)


def test_unlearn_function_works_on_stock_model(pbmc_small, dc_split):
    stock = train_tiny(scvi.model.SCVI, pbmc_small, dc_split, max_epochs=3)
    snap = state_snapshot(stock)
    new = sf.unlearn(stock, pbmc_small.obs_names[dc_split.forget], method="finetune", max_epochs=1, **QUIET)
    assert type(new) is scvi.model.SCVI
    assert same_state(stock, snap)
    assert new.unlearning_records_[-1]["method"] == "finetune"


def test_unlearn_inplace_modifies_and_returns_same_object(trained_scvi, dc_split):
    snap = state_snapshot(trained_scvi)
    out = trained_scvi.unlearn(dc_split.forget, inplace=True, max_epochs=1, **QUIET)
    assert out is trained_scvi
    assert not same_state(trained_scvi, snap)
    assert len(trained_scvi.unlearning_records_) == 1


def test_second_unlearn_appends_and_records_survive_save_load(tmp_path, trained_scvi, pbmc_small, dc_split):
    first = trained_scvi.unlearn(dc_split.forget[:5], max_epochs=1, seed=1, **QUIET)
    second = first.unlearn(dc_split.forget[5:], max_epochs=1, seed=2, **QUIET)
    assert [r["n_forget"] for r in second.unlearning_records_] == [5, len(dc_split.forget) - 5]
    assert len(first.unlearning_records_) == 1  # the first result was not modified
    second.save(tmp_path / "m", save_anndata=False)
    loaded = sf.model.SCVI.load(tmp_path / "m", adata=pbmc_small)
    assert loaded.unlearning_records_ == second.unlearning_records_
    assert loaded.training_recipe_ == second.training_recipe_
    np.testing.assert_array_equal(loaded.train_indices, second.train_indices)
    # nothing in the saved files names a forgotten cell
    blob = b"".join(p.read_bytes() for p in (tmp_path / "m").iterdir())
    assert not any(n.encode() in blob for n in pbmc_small.obs_names[dc_split.forget])


def test_seed_makes_unlearning_reproducible_and_restores_rng(trained_scvi, dc_split):
    import torch

    state = torch.random.get_rng_state()
    a = trained_scvi.unlearn(dc_split.forget, max_epochs=1, seed=7, **QUIET)
    assert torch.equal(torch.random.get_rng_state(), state)  # caller's RNG restored
    b = trained_scvi.unlearn(dc_split.forget, max_epochs=1, seed=7, **QUIET)
    c = trained_scvi.unlearn(dc_split.forget, max_epochs=1, seed=8, **QUIET)
    assert same_state(a, state_snapshot(b))
    assert not same_state(a, state_snapshot(c))


@pytest.fixture(scope="module")
def _base25_dir(_pbmc_small_master, tmp_path_factory):
    adata = _pbmc_small_master.copy()
    split = sf.data.structured_forget(adata, "cell_type", "DC", holdout_fraction=0.5, seed=0)
    scvi.settings.seed = 0
    path = tmp_path_factory.mktemp("base25")
    train_tiny(sf.model.SCVI, adata, split, max_epochs=25).save(path, save_anndata=False, overwrite=True)
    return path


@pytest.fixture
def base25(_base25_dir, pbmc_small):
    """A baseline trained 25 epochs (long enough for a membership gap), fresh per test."""
    return sf.model.SCVI.load(_base25_dir, adata=pbmc_small)


def test_retrain_forgets_and_keeps_utility(base25, dc_split):
    """Forget-set likelihood under the retrained model is worse than under the baseline, held-out holds."""
    base = base25
    retrained = base.unlearn(dc_split.forget, method="retrain", seed=0, **QUIET)
    assert retrained.unlearning_records_[-1]["epochs_run"] == 25  # same recipe
    forget_gain = mean_nll(retrained, dc_split.forget) - mean_nll(base, dc_split.forget)
    unseen_base, unseen_rt = mean_nll(base, dc_split.unseen), mean_nll(retrained, dc_split.unseen)
    # the baseline fits its own training cells better than a model that never saw them
    assert forget_gain > 0
    # utility on never-trained cells of other types stays comparable (within 3%)
    assert abs(unseen_rt - unseen_base) / unseen_base < 0.03
    # the members' advantage disappears: forget cells now look like their never-trained twins
    base_gap = mean_nll(base, dc_split.holdout) - mean_nll(base, dc_split.forget)
    rt_gap = mean_nll(retrained, dc_split.holdout) - mean_nll(retrained, dc_split.forget)
    assert rt_gap < base_gap


def test_finetune_moves_forget_less_than_retain_fit_drops(base25, dc_split):
    base = base25
    ft = base.unlearn(dc_split.forget, method="finetune", max_epochs=10, seed=0, **QUIET)
    rel = lambda m, idx: (mean_nll(m, idx) - mean_nll(base, idx)) / mean_nll(base, idx)
    # fine-tuning on retain cells helps retain cells more than the (unseen) forget cells
    assert rel(ft, dc_split.forget) > rel(ft, dc_split.retain)
    hist = ft.unlearning_records_[-1]["history"]["retain_loss"]
    assert len(hist) == 10 and hist[-1] < hist[0]


def test_retrain_of_stock_model_warns_recipe_inferred(pbmc_small, dc_split):
    stock = train_tiny(scvi.model.SCVI, pbmc_small, dc_split, max_epochs=2)
    with pytest.warns(UserWarning, match="does not record how it was trained"):
        new = sf.unlearn(stock, dc_split.forget, method="retrain", **QUIET)
    assert new.unlearning_records_[-1]["recipe_inferred"] is True
    assert new.unlearning_records_[-1]["max_epochs"] == 2


@pytest.mark.parametrize("method", ["finetune", "rewind", "short_retrain"])
def test_finetune_never_shows_forget_cells_to_train_mode_batchnorm(trained_scvi, dc_split, method):
    """No train-mode BatchNorm forward of the fine-tune holds a forget cell; the watch itself can see one."""
    import torch

    with watch_batchnorm(trained_scvi, dc_split.forget) as watches:
        trained_scvi.unlearn(dc_split.forget, method=method, max_epochs=1, seed=3, **QUIET)
    (watch,) = watches
    assert watch.train_calls > 0 and watch.violations == 0
    # positive control: a train-mode forward on forget cells is flagged by the same watch
    counts = trained_scvi.adata.X[dc_split.forget]
    control = ForgetBatchNormWatch(trained_scvi.module, counts.toarray())
    (tensors,) = list(trained_scvi._make_data_loader(adata=trained_scvi.adata, indices=dc_split.forget))
    trained_scvi.module.train()
    with torch.no_grad():
        trained_scvi.module(tensors)
    trained_scvi.module.eval()
    control.remove()
    assert control.violations > 0


# ---------------------------------------------------------------------------------------------
# bad input: one test per case, each raised before any training with the inputs unchanged


def _untrained(pbmc_small):
    sf.model.SCVI.setup_anndata(pbmc_small)
    return sf.model.SCVI(pbmc_small)


BAD_CASES = {
    "unknown-method": ({"method": "fintune"}, ValueError, "Did you mean 'finetune'"),
    "method-not-string": ({"method": 3}, TypeError, "`method` must be a string"),
    "misspelled-plan-kwarg": ({"plan_kwargs": {"lrr": 1e-3}}, TypeError, "Did you mean 'lr'"),
    "misspelled-keyword": ({"lr_rate": 1e-3}, TypeError, "Unknown keyword argument 'lr_rate'"),
    "misspelled-trainer-kwarg": ({"enable_progres_bar": False}, TypeError, "enable_progress_bar"),
    "keyword-twice": ({"lr": 1e-3, "plan_kwargs": {"lr": 1e-2}}, TypeError, "both"),
    "bad-batch-size": ({"batch_size": 0}, ValueError, "`batch_size`"),
    "bad-max-epochs": ({"max_epochs": -1}, ValueError, "`max_epochs`"),
    "bad-seed": ({"seed": "zero"}, TypeError, "`seed`"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_arguments_fail_before_work(trained_scvi, pbmc_small, dc_split, snapshot_of, case):
    kwargs, exc, match = BAD_CASES[case]
    with pytest.raises(exc, match=match):
        trained_scvi.unlearn(dc_split.forget, **kwargs)
    assert_untouched(trained_scvi, pbmc_small, snapshot_of)


FORGET_CASES = {
    "empty": (lambda s, a: [], ValueError, "selects no cells"),
    "out-of-range": (lambda s, a: [a.n_obs + 5], ValueError, "out of range"),
    "negative": (lambda s, a: [-3], ValueError, "negative"),
    "non-integer": (lambda s, a: np.array([1.5, 2.0]), TypeError, "non-integer"),
    "nan": (lambda s, a: np.array([np.nan]), ValueError, "NaN"),
    "unknown-names": (lambda s, a: ["not-a-cell"], ValueError, "not in the AnnData"),
    "mask-wrong-length": (lambda s, a: np.ones(a.n_obs - 1, dtype=bool), ValueError, "length"),
    "misaligned-series": (
        lambda s, a: pd.Series(True, index=[f"x{i}" for i in range(a.n_obs)]),
        ValueError,
        "not aligned",
    ),
    "all-training-cells": (lambda s, a: s.train, ValueError, "covers every training cell"),
    "never-trained-only": (lambda s, a: s.holdout, ValueError, "None of the `forget` cells were training cells"),
}


@pytest.mark.parametrize("case", list(FORGET_CASES))
def test_bad_forget_fails_before_work(trained_scvi, pbmc_small, dc_split, snapshot_of, case):
    make, exc, match = FORGET_CASES[case]
    with pytest.raises(exc, match=match):
        trained_scvi.unlearn(make(dc_split, pbmc_small))
    assert_untouched(trained_scvi, pbmc_small, snapshot_of)


def test_duplicates_are_removed_with_warning(trained_scvi, dc_split):
    forget = np.concatenate([dc_split.forget, dc_split.forget[:3]])
    with pytest.warns(UserWarning, match="more than once"):
        new = trained_scvi.unlearn(forget, max_epochs=1, **QUIET)
    assert new.unlearning_records_[-1]["n_forget"] == len(dc_split.forget)


def test_never_trained_forget_cells_are_excluded_with_warning(trained_scvi, dc_split):
    forget = np.concatenate([dc_split.forget, dc_split.holdout])
    with pytest.warns(UserWarning, match="never training cells"):
        new = trained_scvi.unlearn(forget, max_epochs=1, **QUIET)
    assert new.unlearning_records_[-1]["n_forget"] == len(dc_split.forget)


def test_retain_overlapping_forget_fails(trained_scvi, dc_split, pbmc_small, snapshot_of):
    with pytest.raises(ValueError, match="both `retain` and `forget`"):
        trained_scvi.unlearn(dc_split.forget, retain=np.union1d(dc_split.retain, dc_split.forget[:1]))
    assert_untouched(trained_scvi, pbmc_small, snapshot_of)


def test_untrained_model_fails(pbmc_small, dc_split):
    model = _untrained(pbmc_small)
    with pytest.raises(RuntimeError, match="not trained"):
        model.unlearn(dc_split.forget)


def test_not_a_model_fails(dc_split):
    with pytest.raises(TypeError, match="`model` must be a trained scvi-tools model"):
        sf.unlearn("model.pt", dc_split.forget)


def test_minified_model_fails(trained_scvi, dc_split, monkeypatch):
    monkeypatch.setattr(type(trained_scvi), "minified_data_type", property(lambda self: "latent_posterior_parameters"))
    with pytest.raises(ValueError, match="minified"):
        trained_scvi.unlearn(dc_split.forget)


def test_anndata_with_different_genes_fails(trained_scvi, pbmc_small, dc_split):
    pbmc_small._inplace_subset_var(np.arange(pbmc_small.n_vars - 10))
    with pytest.raises(ValueError, match="no longer has the genes"):
        trained_scvi.unlearn(dc_split.forget)


def test_available_lists_methods():
    table = sf.methods.available()
    assert {"retrain", "finetune"} <= set(table["name"])
    assert list(table.columns) == ["name", "kind", "guarantee", "designs", "description", "reference", "parameters"]
    guarantees = table.set_index("name")["guarantee"]
    assert guarantees["retrain"] == "exact" and guarantees["finetune"] == "approximate"
    assert guarantees["dpsgd"] == "(epsilon, delta)-DP"
    assert table.set_index("name").loc["retrain", "kind"] == "exact"


def test_register_third_party_method(trained_scvi, dc_split):
    calls = {}

    def shrink(model, ctx, *, factor: float = 0.5):
        calls["n_forget"] = len(ctx.forget)
        for p in model.module.parameters():
            p.data.mul_(factor)

    sf.methods.register("test_shrink", function=shrink, description="test only", overwrite=True)
    try:
        new = trained_scvi.unlearn(dc_split.forget, method="test_shrink", factor=0.9)
        assert calls["n_forget"] == len(dc_split.forget)
        assert new.unlearning_records_[-1]["params"] == {"factor": 0.9}
        with pytest.raises(TypeError, match="Did you mean 'factor'"):
            trained_scvi.unlearn(dc_split.forget, method="test_shrink", facter=0.9)
        with pytest.raises(ValueError, match="already registered"):
            sf.methods.register("test_shrink", function=shrink, description="again")
    finally:
        sf.methods._registry._REGISTRY.pop("test_shrink", None)


def test_condscvi_unlearn(pbmc_small, dc_split):
    model = train_tiny(sf.model.CondSCVI, pbmc_small, dc_split, max_epochs=3)
    snap = state_snapshot(model)
    new = model.unlearn(dc_split.forget, method="finetune", max_epochs=1, **QUIET)
    assert type(new) is sf.model.CondSCVI
    assert same_state(model, snap)
    assert not same_state(new, snap)
