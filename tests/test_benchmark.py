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
            "--accelerator", "cpu",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    assert list(summary.index) == ["baseline", "retrain", "finetune"]
    for col in ("wall_time_s", "time_ratio_to_retrain", "heldout_nll", "forget_nll", "auc", "advantage"):
        assert col in summary.columns
    assert summary.loc["retrain", "time_ratio_to_retrain"] == pytest.approx(1.0)
    assert (summary[["heldout_nll", "forget_nll"]] > 0).all().all()
    runs = pd.read_csv(out / "runs.csv")
    assert set(runs["method"]) == {"baseline", "retrain", "finetune"}
    md = (out / "summary.md").read_text()
    assert "| method |" in md and "finetune" in md
    assert "finetune" in capsys.readouterr().out


def test_benchmark_cli_rejects_unknown_method_before_training(tmp_path, capsys):
    rc = main(["benchmark", "--quick", "--methods", "fintune", "--out", str(tmp_path)])
    assert rc == 2
    assert "Did you mean 'finetune'" in capsys.readouterr().err


def test_benchmark_cli_rejects_unknown_label_key(tmp_path, capsys):
    rc = main(["benchmark", "--quick", "--label-key", "celltype", "--out", str(tmp_path)])
    assert rc == 2
    assert "celltype" in capsys.readouterr().err


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
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    assert list(summary.index) == [
        "baseline", "retrain", "dpsgd (eps=2)", "dpsgd (eps=8)", "sisa", "adapter_drop"
    ]  # fmt: skip
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
