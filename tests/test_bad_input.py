"""Every class of bad input is refused before any work, with a message naming the argument; inputs stay unchanged."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import scvi

import scforget as sf

from .conftest import same_state, state_snapshot, train_tiny

QUIET = {"enable_progress_bar": False}


@pytest.fixture
def guard(trained_scvi, pbmc_small):
    """Snapshot of everything a refused call must leave as it was; ``guard()`` asserts it."""
    state = state_snapshot(trained_scvi)
    train = np.array(trained_scvi.train_indices).copy()
    obs, x = pbmc_small.obs.copy(), pbmc_small.X.copy()
    history = copy.deepcopy(trained_scvi.history_)

    def check():
        assert same_state(trained_scvi, state)
        np.testing.assert_array_equal(trained_scvi.train_indices, train)
        assert pbmc_small.obs.equals(obs) and (pbmc_small.X != x).nnz == 0
        assert not getattr(trained_scvi, "unlearning_records_", None)
        assert trained_scvi.history_.keys() == history.keys()

    return check


# -- flags and counts ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"inplace": "yes"}, TypeError, "`inplace` must be True or False"),
        ({"inplace": 1}, TypeError, "`inplace`"),
        ({"batch_size": True}, TypeError, "`batch_size` must be an integer"),
        ({"batch_size": 64.0}, TypeError, "`batch_size`"),
        ({"max_epochs": True}, TypeError, "`max_epochs`"),
        ({"seed": True}, TypeError, "`seed`"),
        ({"seed": -2}, ValueError, "`seed`"),
        ({"batch_size": 1}, ValueError, "at least two cells per minibatch"),
        ({"lr": "fast"}, TypeError, "`lr` of method 'finetune' must be a number"),
        ({"lr": -1e-3}, ValueError, "`lr` must be a number > 0"),
        ({"weight_decay": -1.0}, ValueError, "weight_decay"),
        ({"optimizer": "adam"}, ValueError, "Did you mean 'Adam'"),
        ({"reduce_lr_on_plateau": 1}, TypeError, "reduce_lr_on_plateau"),
        ({"clip_grad_norm": 0.0}, ValueError, "clip_grad_norm"),
        ({"gradient_clip_val": 1.0}, TypeError, "clip_grad_norm"),
        ({"plan_kwargs": ["lr"]}, TypeError, "`plan_kwargs` must be a dict"),
        ({"adata": "x"}, TypeError, "unlearn\\(\\) takes no AnnData"),
        ({"max_epochs": 0}, ValueError, "at least 1 for training-based methods"),
    ],
)
def test_unlearn_refuses_bad_flags_counts_and_hyperparameters(trained_scvi, dc_split, guard, kwargs, error, match):
    with pytest.raises(error, match=match):
        trained_scvi.unlearn(dc_split.forget, **kwargs)
    guard()


@pytest.mark.parametrize(
    ("method", "kwargs", "match"),
    [
        ("gradient_ascent", {"ascent_steps": True}, "ascent_steps"),
        ("scrub", {"max_posterior": "kll"}, "Did you mean 'kl'"),
        ("contrastive", {"encoder_only": "no"}, "encoder_only"),
        ("extragradient", {"critics": "all"}, "critics"),
        ("frozen_critic", {"critic_hidden": (64, 0)}, "critic_hidden"),
        ("gisa", {"n_importance_cells": 2.5}, "n_importance_cells"),
        ("retrain", {"lr": "fast"}, "lr"),
        ("ssd", {"alpha": True}, "alpha"),
    ],
)
def test_method_hyperparameters_checked_before_any_work(
    trained_scvi, dc_split, guard, monkeypatch, method, kwargs, match
):
    import scforget.methods._unlearn as unlearn_mod

    cloned = []
    real = unlearn_mod.clone_model
    monkeypatch.setattr(unlearn_mod, "clone_model", lambda m: cloned.append(1) or real(m))
    with pytest.raises((TypeError, ValueError), match=match):
        trained_scvi.unlearn(dc_split.forget, method=method, **kwargs)
    assert not cloned  # refused before the model was even copied
    guard()


def test_one_cell_retain_set_is_refused_before_training(trained_scvi, dc_split, guard):
    with pytest.raises(ValueError, match="at least two retain cells"):
        trained_scvi.unlearn(dc_split.forget, retain=dc_split.retain[:1], max_epochs=1)
    guard()


def test_reduce_lr_on_plateau_needs_validation_cells(trained_scvi, dc_split):
    with pytest.raises(ValueError, match="elbo_validation"):
        trained_scvi.unlearn(dc_split.forget, reduce_lr_on_plateau=True, lr_scheduler_metric="elbo_train")
    trained_scvi.validation_indices = np.zeros(0, dtype=np.int64)  # a model trained without validation cells
    with pytest.raises(ValueError, match="needs validation cells"):
        trained_scvi.unlearn(dc_split.forget, reduce_lr_on_plateau=True)


# -- cell sets -------------------------------------------------------------------------------------
def test_retain_must_be_training_cells(trained_scvi, dc_split, guard):
    with pytest.raises(ValueError, match="never training cells of this model"):
        trained_scvi.unlearn(dc_split.forget, retain=np.union1d(dc_split.retain, dc_split.unseen[:3]), max_epochs=1)
    guard()


CELL_CASES = {
    "mixed-tuple": (lambda a, s: ("0", 7), TypeError, "mixes obs names, positions"),
    "mixed-ints-and-bools": (lambda a, s: [True, 3], TypeError, "mixes"),
    "anndata-view": (lambda a, s: a[s.forget], TypeError, "is an AnnData.*obs_names"),
    "dataframe": (lambda a, s: a.obs.iloc[s.forget], TypeError, "is a DataFrame"),
    "generator": (lambda a, s: (int(i) for i in s.forget), TypeError, "generator"),
    "label-series": (lambda a, s: a.obs["cell_type"], TypeError, "adata.obs\\['cell_type'\\] =="),
    "dict": (lambda a, s: {"DC": s.forget}, TypeError, "dict"),
}


@pytest.mark.parametrize("case", list(CELL_CASES))
def test_cell_specifications_refused_with_a_specific_message(trained_scvi, pbmc_small, dc_split, guard, case):
    make, error, match = CELL_CASES[case]
    with pytest.raises(error, match=match):
        trained_scvi.unlearn(make(pbmc_small, dc_split), max_epochs=1)
    guard()


def test_mixed_tuple_never_selects_a_cell_by_its_name():
    names = pd.Index([str(i) for i in range(10)][::-1])  # the cell named "7" is at position 2
    with pytest.raises(TypeError, match="mixes"):
        sf.data.as_positions(("0", 7), names)
    np.testing.assert_array_equal(sf.data.as_positions(("7",), names), [2])
    np.testing.assert_array_equal(sf.data.as_positions((7,), names), [7])


def test_duplicated_obs_names_are_refused_when_cells_are_named():
    names = pd.Index(["a", "b", "a", "c"])
    with pytest.raises(ValueError, match="duplicated obs name"):
        sf.data.as_positions(["a"], names)
    np.testing.assert_array_equal(sf.data.as_positions([0, 3], names), [0, 3])  # positions stay unambiguous


def test_holdout_size_and_split_fractions_are_type_checked(pbmc_small):
    with pytest.raises(TypeError, match="holdout_size"):
        sf.data.scattered_forget(pbmc_small, 10, holdout_size=5.5)
    with pytest.raises(TypeError, match="holdout_size"):
        sf.data.scattered_forget(pbmc_small, 10, holdout_size=True)
    with pytest.raises(TypeError, match="`n`"):
        sf.data.scattered_forget(pbmc_small, True)
    with pytest.raises(TypeError, match="holdout_fraction"):
        sf.data.structured_forget(pbmc_small, "cell_type", "DC", holdout_fraction="half")


# -- models and data -------------------------------------------------------------------------------
def _with_bad_counts(pbmc_small, row, value):
    x = pbmc_small.X.tocsr(copy=True).astype(np.float32)
    x.data[x.indptr[row]] = value  # one count of one cell
    pbmc_small.X = x


@pytest.mark.parametrize("value", [np.nan, np.inf, -3.0])
def test_counts_with_nan_inf_or_negatives_are_refused_everywhere(trained_scvi, pbmc_small, dc_split, value):
    _with_bad_counts(pbmc_small, dc_split.forget[0], value)
    snap = state_snapshot(trained_scvi)
    match = "NaN|infinite|negative"
    with pytest.raises(ValueError, match=match):
        trained_scvi.unlearn(dc_split.forget, max_epochs=1)
    with pytest.raises(ValueError, match=match):
        sf.audit(trained_scvi, members=dc_split.forget, nonmembers=dc_split.holdout, progress_bar=False)
    with pytest.raises(ValueError, match=match):
        sf.fisher.diagonal(trained_scvi, dc_split.forget, progress_bar=False)
    with pytest.raises(ValueError, match=match):
        sf.privacy.signals(trained_scvi, dc_split.forget, progress_bar=False)
    assert same_state(trained_scvi, snap)


@pytest.mark.parametrize("layout", ["run", "gaps", "unsorted"])
def test_check_counts_finds_a_bad_cell_whichever_rows_it_reads(trained_scvi, pbmc_small, layout):
    from scforget._core import check_counts

    _with_bad_counts(pbmc_small, 23, -1.0)
    rows = {"run": np.arange(10, 40), "gaps": np.r_[10:20, 23, 30:40], "unsorted": np.array([39, 23, 5, 11])}[layout]
    with pytest.raises(ValueError, match="negative"):
        check_counts(trained_scvi, rows, chunk=7)  # the bad cell is in neither the first chunk nor alone
    check_counts(trained_scvi, np.setdiff1d(rows, [23]), chunk=7)  # and only that cell is bad


def test_bad_counts_outside_the_audited_cells_are_refused_too(trained_scvi, pbmc_small, dc_split):
    _with_bad_counts(pbmc_small, dc_split.retain[0], np.nan)  # a reference cell of the distance attack
    with pytest.raises(ValueError, match="NaN"):
        sf.audit(trained_scvi, members=dc_split.forget, nonmembers=dc_split.holdout, progress_bar=False)


def test_model_without_anndata_gets_a_clear_error(trained_scvi, dc_split):
    trained_scvi._adata = None  # as for a model built from a registry for a custom data module
    for call in (
        lambda: trained_scvi.unlearn(dc_split.forget),
        lambda: sf.audit(trained_scvi, members=dc_split.forget, progress_bar=False),
        lambda: sf.fisher.diagonal(trained_scvi, dc_split.forget, progress_bar=False),
    ):
        with pytest.raises(ValueError, match="has no AnnData"):
            call()


def test_fisher_on_an_untrained_model_is_refused(pbmc_small):
    sf.model.SCVI.setup_anndata(pbmc_small)
    model = sf.model.SCVI(pbmc_small, n_hidden=8)
    with pytest.raises(RuntimeError, match="not trained"):
        sf.fisher.diagonal(model, [0, 1], progress_bar=False)
    with pytest.raises(RuntimeError, match="not trained"):
        sf.fisher.overlap(model, [0, 1], progress_bar=False)


def test_loading_with_reordered_cells_is_refused(tmp_path, trained_scvi, pbmc_small, dc_split):
    trained_scvi.save(tmp_path / "m", save_anndata=False)
    shuffled = pbmc_small[np.random.default_rng(0).permutation(pbmc_small.n_obs)].copy()
    loaded = sf.model.SCVI.load(tmp_path / "m", adata=shuffled)
    names = pbmc_small.obs_names[dc_split.forget]
    for call in (
        lambda: loaded.unlearn(names, max_epochs=1),
        lambda: sf.audit(loaded, members=names, progress_bar=False),
        lambda: sf.fisher.diagonal(loaded, names, progress_bar=False),
    ):
        with pytest.raises(ValueError, match="in the same order"):
            call()
    # the original order loads and works
    ok = sf.model.SCVI.load(tmp_path / "m", adata=pbmc_small)
    assert ok.unlearn(names, max_epochs=1, **QUIET).unlearning_records_[-1]["n_forget"] == len(names)


def test_scanvi_unlearning_is_refused_with_the_recipe_to_follow(pbmc_small, dc_split):
    base = train_tiny(scvi.model.SCVI, pbmc_small, dc_split, max_epochs=1)
    scanvi = scvi.model.SCANVI.from_scvi_model(base, unlabeled_category="unknown", labels_key="cell_type")
    scanvi.is_trained_ = True
    with pytest.raises(TypeError, match="Unlearning supports scvi.model.SCVI, scvi.model.CondSCVI"):
        sf.unlearn(scanvi, dc_split.forget, method="retrain")
    with pytest.raises(TypeError, match="SCANVI"):
        sf.unlearn(scanvi, dc_split.forget)


def test_dense_counts_are_checked_too(pbmc_small, dc_split):
    pbmc_small.X = sp.csr_matrix(pbmc_small.X).toarray()
    model = train_tiny(sf.model.SCVI, pbmc_small, dc_split, max_epochs=1)
    pbmc_small.X[3, 4] = -1.0
    with pytest.raises(ValueError, match="negative"):
        model.unlearn(dc_split.forget, max_epochs=1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": True}, TypeError, "`k`"),
        ({"n_folds": True}, TypeError, "`n_folds`"),
        ({"n_bootstrap": 10.0}, TypeError, "`n_bootstrap`"),
        ({"seed": True}, TypeError, "`seed`"),
        ({"matched": "yes"}, TypeError, "`matched`"),
        ({"include_names": 1}, TypeError, "`include_names`"),
        ({"progress_bar": None}, TypeError, "`progress_bar`"),
        ({"classifier": "svm"}, ValueError, "`classifier`"),
    ],
)
def test_audit_refuses_bad_flags_and_counts(trained_scvi, dc_split, guard, kwargs, error, match):
    with pytest.raises(error, match=match):
        sf.audit(trained_scvi, members=dc_split.forget, nonmembers=dc_split.holdout, **kwargs)
    guard()


def test_methods_namespace_holds_what_users_call():
    public = set(sf.methods.__all__)
    assert {"unlearn", "available", "register", "get_method", "verify_forgotten", "training_recipe"} <= public
    assert not public & {"clone_model", "check_model", "frozen_batchnorm", "UnlearningTrainingPlan"}
    assert all(not name.startswith("_") for name in public)
