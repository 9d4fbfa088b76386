"""Fleets: reference models and SISA shards on a 2-worker Dask cluster equal the sequential path."""

from __future__ import annotations

import numpy as np
import pytest

import scforget as sf
from scforget._core import check_fleet, run_jobs

from .conftest import same_tensors

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    # processes=True: each worker is its own interpreter, as on a cluster; one torch thread each, as
    # the tests' own process (conftest), so both paths sum in the same order
    with sf.local_fleet(2) as c:
        yield c


def _square_plus(offset, x):
    if x < 0:
        raise ValueError(f"negative job {x}")
    return x * x + offset


def test_run_jobs_keeps_order_and_shares_arguments(client):
    jobs = [{"x": x} for x in range(6)]
    here = run_jobs(_square_plus, jobs, shared={"offset": 1})
    there = run_jobs(_square_plus, jobs, fleet=client, shared={"offset": 1})
    assert here == there == [x * x + 1 for x in range(6)]
    with pytest.raises(ValueError, match="negative job -1"):  # a worker's error reaches the caller
        run_jobs(_square_plus, [{"x": 2}, {"x": -1}], fleet=client, shared={"offset": 0})


def test_bad_fleet_is_refused_before_work(trained_scvi, dc_split):
    with pytest.raises(TypeError, match="`fleet` must be a dask.distributed.Client"):
        check_fleet("tcp://localhost:8786")
    with pytest.raises(TypeError, match="`fleet`"):
        sf.audit(trained_scvi, members=dc_split.forget, nonmembers=dc_split.holdout, attacks=("lira",), fleet=2)
    closed = distributed.Client(processes=False, dashboard_address=None, n_workers=1)
    closed.close()
    with pytest.raises(ValueError, match="`fleet` is a Client whose status"):
        check_fleet(closed)


def test_lira_references_on_a_fleet_equal_the_sequential_ones(trained_scvi, dc_split, client):
    kw = {
        "members": dc_split.forget,
        "nonmembers": dc_split.holdout,
        "attacks": ("lira", "rmia"),
        "n_reference": 4,
        "reference_epochs": 2,
        "n_bootstrap": 0,
        "seed": 3,
        "progress_bar": False,
        "label_key": "cell_type",
    }
    before = {k: v.clone() for k, v in trained_scvi.module.state_dict().items()}
    here = sf.audit(trained_scvi, **kw)
    there = sf.audit(trained_scvi, fleet=client, **kw)
    assert here.info["n_reference"] == there.info["n_reference"] == 4
    for attack in ("lira", "rmia"):
        np.testing.assert_array_equal(there.per_cell[attack].to_numpy(), here.per_cell[attack].to_numpy())
    assert np.ptp(here.per_cell["lira"].to_numpy()) > 0  # scores that vary: a real comparison
    assert same_tensors(before, trained_scvi.module.state_dict())  # the audited model is untouched


def test_sisa_shards_on_a_fleet_equal_the_sequential_ensemble(pbmc_small, client):
    sf.model.ShardedSCVI.setup_anndata(pbmc_small)
    fits = []
    for fleet in (None, client):
        ens = sf.model.ShardedSCVI(pbmc_small, n_shards=3, n_slices=2, n_hidden=16, n_latent=4)
        ens.train(max_epochs=2, batch_size=128, train_size=0.9, seed=1, enable_progress_bar=False, fleet=fleet)
        fits.append(ens)
    here, there = fits
    for s in range(3):
        assert same_tensors(here.shards[s].module.state_dict(), there.shards[s].module.state_dict())
        assert len(here.checkpoints_[s]) == len(there.checkpoints_[s]) == 3
        for a, b in zip(here.checkpoints_[s], there.checkpoints_[s], strict=True):
            assert same_tensors(a, b)
        np.testing.assert_array_equal(here.latent_stats_[s][0], there.latent_stats_[s][0])
        np.testing.assert_array_equal(here.shards[s].train_indices, there.shards[s].train_indices)
    # the fleet-trained ensemble forgets like the sequential one (SISA resumes from its checkpoints)
    forget = here.train_indices[:10]
    a = here.unlearn(forget, method="sisa", seed=0)
    b = there.unlearn(forget, method="sisa", seed=0)
    for s in range(3):
        assert same_tensors(a.shards[s].module.state_dict(), b.shards[s].module.state_dict())


@pytest.mark.slow  # two quick benchmarks (about 40 s); the fleet's audit and SISA paths stay in the default run
def test_benchmark_on_a_fleet_equals_the_sequential_run(tmp_path):
    import pandas as pd

    from scforget.benchmark._cli import main

    argv = [
        "benchmark", "--quick", "--epochs", "3", "--n-top-genes", "200", "--methods", "sisa",
        "--sisa-shards", "2", "--accelerator", "cpu",
    ]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "here")]) == 0
    assert main([*argv, "--fleet", "local:2", "--out", str(tmp_path / "there")]) == 0
    here = pd.read_csv(tmp_path / "here" / "runs.csv")
    there = pd.read_csv(tmp_path / "there" / "runs.csv")
    timing = [c for c in here.columns if "time" in c or c.endswith("_s")]
    assert set(here["method"]) == {"baseline", "retrain", "sisa"} and (here["method"] == "retrain").sum() == 2
    # the retrain seeds and the SISA shards trained on the workers: the same models, so the same measures
    pd.testing.assert_frame_equal(there.drop(columns=timing), here.drop(columns=timing))


def test_local_fleet_starts_single_thread_workers_without_malloc_trim():
    with pytest.raises(ValueError, match="`n_workers`"):
        sf.local_fleet(True)
    with sf.local_fleet(1) as client:
        env = client.run(lambda: __import__("os").environ.get("MALLOC_TRIM_THRESHOLD_"))
        threads = client.run(lambda: __import__("torch").get_num_threads())
        assert list(env.values()) == [None] and list(threads.values()) == [1]
        assert run_jobs(_square_plus, [{"x": 3}], fleet=client, shared={"offset": 0}) == [9]


def test_fleet_spec_is_checked():
    from scforget._core import fleet_client

    with pytest.raises(ValueError, match="local:N"), fleet_client("local:two"):
        pass
    with fleet_client(None) as nothing:
        assert nothing is None
