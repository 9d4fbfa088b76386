"""``scforget audit MODEL DATA``: flags for every choice, safe loading, one-line errors that name flags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scforget.benchmark._audit_cli import as_flags
from scforget.benchmark._cli import main

from .test_safe_load import _plant


@pytest.fixture
def files(trained_scvi, dc_split, tmp_path):
    adata = trained_scvi.adata.copy()
    role = np.full(adata.n_obs, "other", dtype=object)
    role[dc_split.forget] = "forget"
    role[dc_split.holdout] = "holdout"
    adata.obs["role"] = pd.Categorical(role.astype(str))
    for key in [c for c in adata.obs.columns if c.startswith("_scvi")]:
        del adata.obs[key]
    adata.uns.pop("_scvi_uuid", None)
    adata.uns.pop("_scvi_manager_uuid", None)
    data = tmp_path / "data.h5ad"
    adata.write_h5ad(data)
    model = tmp_path / "model"
    trained_scvi.save(model, save_anndata=False, overwrite=True)
    other = adata[dc_split.holdout].copy()
    other.obs_names = [f"elsewhere-{i}" for i in range(other.n_obs)]
    other_path = tmp_path / "other.h5ad"
    other.write_h5ad(other_path)
    return {"model": str(model), "data": str(data), "other": str(other_path), "dir": tmp_path}


BASE = ["--members-key", "role", "--members-value", "forget", "--n-bootstrap", "50", "--quiet"]


def test_audit_runs_with_chosen_attacks_and_writes_csv_and_html(files, capsys):
    out, html = files["dir"] / "s.csv", files["dir"] / "r.html"
    rc = main(
        ["audit", files["model"], files["data"], *BASE, "--nonmembers-key", "role", "--nonmembers-value", "holdout",
         "--attacks", "loss", "classifier", "--n-folds", "3", "--groupby", "cell_type", "--threads", "1",
         "--out", str(out), "--html", str(html)]
    )  # fmt: skip
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "Overall:" in printed.out and "loss:" in printed.out
    summary = pd.read_csv(out, index_col=0)
    assert list(summary.index) == ["loss", "classifier"]
    assert (summary["n_members"] == (pd.read_csv(out)["n_members"].iloc[0])).all()
    assert html.read_text().startswith("<!DOCTYPE html>")


def test_nonmembers_from_another_file(files, capsys, dc_split):
    out = files["dir"] / "s.csv"
    rc = main(["audit", files["model"], files["data"], *BASE, "--nonmembers-data", files["other"],
               "--attacks", "loss", "--out", str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    row = pd.read_csv(out, index_col=0).loc["loss"]
    assert row["n_nonmembers"] == dc_split.holdout.size and row["n_members"] == dc_split.forget.size


def test_default_attacks_train_nothing_and_progress_goes_to_stderr(files, capsys):
    out = files["dir"] / "s.csv"
    args = ["audit", files["model"], files["data"], "--members-key", "role", "--members-value", "forget"]
    rc = main(
        [*args, "--nonmembers-key", "role", "--nonmembers-value", "holdout", "--n-bootstrap", "20", "--out", str(out)]
    )
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert list(pd.read_csv(out, index_col=0).index) == ["loss", "kl", "classifier", "distance"]
    assert "auditing" in printed.err and "loading" in printed.err


def error_of(capsys, argv) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    errors = [line for line in err.splitlines() if line.startswith("scforget audit: error:")]
    assert "Traceback" not in err and len(errors) == 1, err
    return errors[0]


def test_errors_name_flags_and_show_no_traceback(files, capsys, tmp_path):
    m, d = files["model"], files["data"]
    assert "no such directory" in error_of(capsys, ["audit", str(tmp_path / "nope"), d])
    (tmp_path / "empty").mkdir()
    assert "holds no model.pt" in error_of(capsys, ["audit", str(tmp_path / "empty"), d])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.pt").write_bytes(b"not a torch file")
    assert "could not be loaded" in error_of(capsys, ["audit", str(broken), d])
    bad_h5 = tmp_path / "bad.h5ad"
    bad_h5.write_bytes(b"\x89HDF garbage")
    assert "not a readable .h5ad" in error_of(capsys, ["audit", m, str(bad_h5)])
    assert "no such file" in error_of(capsys, ["audit", m, str(tmp_path / "none.h5ad")])
    err = error_of(capsys, ["audit", m, d, "--members-key", "rol", "--members-value", "forget"])
    assert "--members-key 'rol'" in err and "role" in err  # close match suggested
    assert "marks no cell" in error_of(capsys, ["audit", m, d, "--members-key", "role", "--members-value", "x"])
    assert "go together" in error_of(capsys, ["audit", m, d, "--members-key", "role"])
    assert "--groupby" in error_of(capsys, ["audit", m, d, *BASE, "--groupby", "celltype"])
    assert "--n-folds must be at least 2" in error_of(capsys, ["audit", m, d, "--n-folds", "1"])
    # members the model never trained on: the design check, in flags
    err = error_of(capsys, ["audit", m, d, "--members-key", "role", "--members-value", "holdout", "--quiet"])
    assert "--members-key/--members-value" in err and "--no-design-checks" in err
    assert "`members`" not in err and "design_checks=False" not in err


def test_a_payload_model_is_refused(files, capsys, tmp_path):
    marker = tmp_path / "ran.txt"
    _plant(__import__("pathlib").Path(files["model"]), marker)
    err = error_of(capsys, ["audit", files["model"], files["data"], *BASE])
    assert "refused" in err and "--trusted" in err
    assert not marker.exists()


def test_as_flags_rewrites_python_arguments():
    msg = as_flags(
        "Pass `nonmembers=` or lower `n_folds`; for a null audit pass design_checks=False; use matched=True."
    )
    assert msg == (
        "Pass `--nonmembers-key/--nonmembers-value or --nonmembers-data` or lower `--n-folds`; for a null audit pass "
        "--no-design-checks; use --matched."
    )
