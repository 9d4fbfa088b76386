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
