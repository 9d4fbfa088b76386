import json

import pandas as pd
import pytest

from scforget.benchmark._cli import main


def test_benchmark_cli_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = main(
        [
            "benchmark",
            "--quick",
            "--epochs", "4",
            "--n-top-genes", "200",
            "--methods", "finetune",
            "--forget", "DC", "random:30",
            "--accelerator", "cpu",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    summary = pd.read_csv(out / "summary.csv", index_col=[0, 1])
    assert list(summary.index) == [(d, m) for d in ("DC", "random:30") for m in ("baseline", "retrain", "finetune")]
    for col in (
        "wall_time_s",
        "time_ratio_to_retrain",
        "heldout_nll",
        "heldout_nll_change",
        "forget_nll",
        "membership_gap",
        "auc",
        "advantage",
        "advantage_low",
        "advantage_high",
        "band_high",
        "in_band",
        "best_attack",
        "informative",
        "min_detectable_auc",
        "p_permutation",
        "meets_target",
        "guarantee",
    ):
        assert col in summary.columns, col
    assert summary.loc[("DC", "retrain"), "time_ratio_to_retrain"] == pytest.approx(1.0)
    assert (summary[["heldout_nll", "forget_nll"]] > 0).all().all()
    assert set(summary["meets_target"].fillna("")) <= {"", "yes", "no", "uninformative"}
    assert summary["marker_r_retrain"].between(-1, 1).all() and summary["marker_r_observed"].between(-1, 1).all()
    runs = pd.read_csv(out / "runs.csv")
    assert set(runs["method"]) == {"baseline", "retrain", "finetune"}
    assert (
        runs.groupby(["design", "method"]).size().loc[(slice(None), "retrain")] == 2
    ).all()  # quick: 2 retrain seeds
    md = (out / "summary.md").read_text()
    assert "| design | method |" in md and "finetune" in md and "indicative only" in md
    config = json.loads((out / "config.json").read_text())
    assert {"config", "timings_s", "versions", "machine", "command"} <= set(config)
    assert config["versions"]["scvi-tools"] and config["config"]["forget"] == ["DC", "random:30"]
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == sorted(
        f"{d}_{f}.png" for d in ("DC", "random_30") for f in ("privacy_utility", "roc", "attack_heatmap", "time_ratios")
    )
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 8 and "meets_target" in html
    assert "finetune" in capsys.readouterr().out


def test_benchmark_cli_rejects_unknown_method_before_training(tmp_path, capsys):
    rc = main(["benchmark", "--quick", "--methods", "fintune", "--out", str(tmp_path)])
    assert rc == 2
    assert "Did you mean 'finetune'" in capsys.readouterr().err


def test_benchmark_cli_rejects_unknown_label_key(tmp_path, capsys):
    rc = main(["benchmark", "--quick", "--label-key", "celltype", "--out", str(tmp_path)])
    assert rc == 2
    assert "celltype" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--forget", "dc"], "Did you mean 'DC'"),
        (["--forget", "donor:P1"], "needs --donor-key"),
        (["--forget", "random:0"], "random:N"),
        (["--retrain-seeds", "1", "1"], "--retrain-seeds needs distinct seeds"),
        (["--fleet", "local:0"], "write local:N"),
        (["--fleet", "local:two"], "write local:N"),
    ],
)
def test_benchmark_cli_refuses_bad_designs_before_training(tmp_path, capsys, argv, match):
    rc = main(["benchmark", "--quick", "--n-top-genes", "200", *argv, "--out", str(tmp_path)])
    assert rc == 2
    assert match in capsys.readouterr().err


def test_benchmark_runs_the_guaranteed_methods_with_a_guarantee_column(tmp_path):
    out = tmp_path / "bench"
    rc = main(
        [
            "benchmark", "--quick", "--epochs", "3", "--n-top-genes", "200",
            "--methods", "dpsgd", "sisa", "adapter_drop",
            "--dp-epsilons", "2", "8", "--sisa-shards", "3", "--n-pseudo-donors", "4",
            "--accelerator", "cpu", "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    summary = pd.read_csv(out / "summary.csv", index_col=[0, 1]).loc["DC"]
    assert list(summary.index) == [
        "baseline", "retrain", "dpsgd (eps=2)", "dpsgd (eps=8)", "sisa", "adapter_drop"
    ]  # fmt: skip
    # no references of their architecture: the primary attack falls back to the classifier
    assert (summary.loc[["sisa", "adapter_drop"], "primary_attack"] == "classifier").all()
    assert summary.loc["baseline", "guarantee"] == "none"
    assert (summary.loc[["retrain", "sisa", "adapter_drop"], "guarantee"] == "exact").all()
    assert summary.loc["dpsgd (eps=2)", "guarantee"] == "(epsilon, delta)-DP"
    # the spent budget is the one asked for (the accountant's epsilon, at most the target)
    assert 1.5 < summary.loc["dpsgd (eps=2)", "epsilon"] <= 2.0 + 1e-6
    assert 6.0 < summary.loc["dpsgd (eps=8)", "epsilon"] <= 8.0 + 1e-6
    # the forget group lives in one of 3 shards; dropping an adapter trains nothing
    assert summary.loc["sisa", "cost_fraction"] == pytest.approx(1 / 3)
    assert summary.loc["adapter_drop", "cost_fraction"] == 0
    assert summary[["heldout_nll", "auc"]].notna().all().all()


def test_cache_trains_nothing_twice_and_misses_on_a_changed_recipe(tmp_path, monkeypatch):
    import scvi

    calls = {"n": 0}
    original = scvi.train.TrainRunner.__call__

    def counting(self, *args, **kwargs):
        calls["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(scvi.train.TrainRunner, "__call__", counting)
    argv = [
        "benchmark", "--quick", "--epochs", "3", "--n-top-genes", "200",
        "--methods", "finetune", "dpsgd", "sisa", "adapter_drop", "--sisa-shards", "2", "--n-pseudo-donors", "4",
        "--dp-epochs", "1", "--accelerator", "cpu", "--cache", str(tmp_path / "cache"),
    ]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    first = calls["n"]
    assert first >= 7  # the baseline, two retrains, finetune, the DP training, the SISA shards, the adapters
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert calls["n"] == first  # everything came from the cache
    a = pd.read_csv(tmp_path / "a" / "summary.csv", index_col=[0, 1])
    b = pd.read_csv(tmp_path / "b" / "summary.csv", index_col=[0, 1])
    pd.testing.assert_frame_equal(a, b)  # same models, same recorded wall times, same estimates
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    # baseline, 2 retrains, finetune, dpsgd, the ensemble and its unlearned copy, the adapters and theirs
    assert config["timings_s"]["cache_misses"] == 0 and config["timings_s"]["cache_hits"] == 9
    argv[argv.index("3")] = "4"  # another recipe: nothing reused
    assert main([*argv, "--out", str(tmp_path / "c")]) == 0
    assert calls["n"] == 2 * first


def test_pseudo_donors_are_made_only_when_the_data_has_no_donor_column(tmp_path):
    import scforget as sf
    from scforget.benchmark._config import BenchmarkConfig
    from scforget.benchmark._protocol import prepare_data

    adata = prepare_data(BenchmarkConfig(donor_key="pseudo_donor", n_pseudo_donors=4, n_top_genes=200))
    counts = adata.obs["pseudo_donor"].value_counts()
    assert sorted(counts.index) == [f"donor_{i}" for i in range(4)] and counts.max() - counts.min() <= 9
    # stratified by the label: every pseudo-donor holds about a quarter of each cell type
    share = pd.crosstab(adata.obs["cell_type"], adata.obs["pseudo_donor"]).loc["B"]
    assert share.max() - share.min() <= 1
    own = sf.datasets.pbmc3k()
    own.obs["pseudo_donor"] = "mine"
    own.write_h5ad(tmp_path / "own.h5ad")
    kept = prepare_data(BenchmarkConfig(data=str(tmp_path / "own.h5ad"), donor_key="pseudo_donor", n_top_genes=200))
    assert set(kept.obs["pseudo_donor"]) == {"mine"}


def test_benchmark_runs_a_donor_design_with_donors_never_trained_on(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = [
        "benchmark", "--quick", "--epochs", "3", "--n-top-genes", "200", "--methods", "finetune",
        "--forget", "donor:donor_1", "--donor-key", "pseudo_donor", "--n-pseudo-donors", "4",
        "--heldout-donors", "1", "--accelerator", "cpu", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    summary = pd.read_csv(out / "summary.csv", index_col=[0, 1])
    assert list(summary.index) == [("donor:donor_1", m) for m in ("baseline", "retrain", "finetune")]
    assert "plus 1 donor(s) never trained on" in capsys.readouterr().out
    assert main([*argv[:-2], "--heldout-donors", "3", "--out", str(tmp_path / "x")]) == 2
    assert "pass at most 2" in capsys.readouterr().err


def test_cache_key_changes_with_the_package_code(monkeypatch, pbmc_small, tmp_path):
    from scforget.benchmark import _cache

    digest = _cache.code_digest()
    assert digest == _cache.code_digest() and len(digest) == 64
    assert _cache.code_digest("training") != digest

    def keys():
        cache = _cache.ModelCache(tmp_path, pbmc_small)
        return [cache.key(kind=k, seed=0) for k in ("baseline", "retrain", "method")]

    before = keys()
    real = _cache.code_digest
    # as after an edit of a method's code: the full digest changes, the training scope does not
    monkeypatch.setattr(_cache, "code_digest", lambda scope="all": real(scope) if scope == "training" else "0" * 64)
    after = keys()
    assert before[:2] == after[:2] and before[2] != after[2]
    # as after an edit of the model code: every key changes
    monkeypatch.setattr(_cache, "code_digest", lambda scope="all": scope[0] * 64)
    assert all(b != a for b, a in zip(before, keys(), strict=True))


def test_training_scope_of_the_code_digest():
    from scforget.benchmark._cache import _in_training_scope

    inside = ["model/_scvi.py", "_core/_split.py", "data/_splits.py", "methods/_retrain.py", "methods/_checkpoint.py"]
    inside.append("benchmark/_baseline.py")
    outside = [
        "methods/_calibrated_neggrad.py",
        "methods/_rewind.py",
        "privacy/_lira.py",
        "fisher/_engine.py",
        "benchmark/_protocol.py",
    ]
    assert all(_in_training_scope(p) for p in inside)
    assert not any(_in_training_scope(p) for p in outside)


def test_unlearners_get_the_calibration_cells_and_never_an_audit_cell(tmp_path):
    """The benchmark hands calibration cells (carved out of the non-members) to methods that take them; the
    audit keeps the other non-members; no unlearner sees a cell it is audited on."""
    import numpy as np

    import scforget as sf
    from scforget.benchmark import BenchmarkConfig
    from scforget.benchmark._protocol import prepare_data, run_benchmark, unlearner_cells
    from scforget.methods import get_method

    config = BenchmarkConfig.quick_config(
        epochs=3,
        n_top_genes=200,
        forget=["NK"],
        methods=["matched_neggrad", "finetune"],
        accelerator="cpu",
        preflight=True,
    )
    result = run_benchmark(config, progress=False)
    adata = prepare_data(config)
    split = sf.data.structured_forget(adata, "cell_type", "NK", holdout_fraction=config.holdout_fraction, seed=0)
    holdout_nk = split.holdout.size
    split = split.carve_calibration(config.calibration_fraction, seed=config.split_seed)
    n_cal = split.calibration.size
    assert 0 < n_cal < holdout_nk
    runs = result.runs.set_index("method")
    assert runs.loc["matched_neggrad", "n_calibration_cells"] == n_cal
    assert np.isnan(runs.loc["finetune", "n_calibration_cells"])  # finetune takes no calibration cells
    for key, per_cell in result.scores.items():
        assert int((per_cell["label"] == 0).sum()) == holdout_nk - n_cal, key

    # the pre-flight check ran on the baseline, with the calibration cells, and was timed against a retrain
    pre = result.preflight.loc["NK"]
    assert pre["verdict"] in ("entangled", "partly separable", "separable")
    assert 0 <= pre["memorisation_auc"] <= 1 and pre["preflight_ratio_to_retrain"] > 0
    with pytest.raises(ValueError, match="--calibration-fraction"):
        BenchmarkConfig(calibration_fraction=1.0)

    cells = unlearner_cells(get_method("calibrated_neggrad"), split)
    np.testing.assert_array_equal(cells["calibration"], split.calibration)
    assert unlearner_cells(get_method("finetune"), split) == {}

    class Leaky:  # a split whose calibration cells include an audited non-member
        forget, holdout = split.forget, split.holdout
        calibration = np.union1d(split.calibration, split.holdout[:1])

    with pytest.raises(RuntimeError, match="1 calibration cell"):
        unlearner_cells(get_method("calibrated_neggrad"), Leaky)
