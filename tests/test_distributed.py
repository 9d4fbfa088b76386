"""Lightning DDP over CPU processes gives the parameters a single process gives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scforget._core import ddp_strategy, is_multiprocess, with_ddp_strategy

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("ddp", "ddp_find_unused_parameters_true"),
        ("ddp_spawn", "ddp_spawn_find_unused_parameters_true"),
        ("ddp_notebook", "ddp_notebook_find_unused_parameters_true"),
        ("auto", "auto"),
        ("ddp_find_unused_parameters_true", "ddp_find_unused_parameters_true"),
    ],
)
def test_ddp_strategy_names(given, expected):
    assert ddp_strategy(given) == expected


def test_with_ddp_strategy_copies():
    kwargs = {"strategy": "ddp", "devices": 2}
    out = with_ddp_strategy(kwargs)
    assert out["strategy"] == "ddp_find_unused_parameters_true"
    assert kwargs["strategy"] == "ddp"  # the caller's dict is left as it was
    assert with_ddp_strategy({"devices": 1}) == {"devices": 1}


@pytest.mark.parametrize(
    ("devices", "strategy", "expected"),
    [
        ("auto", None, False),
        (1, None, False),
        (1, "auto", False),
        ([0], None, False),
        ("1", None, False),
        (2, None, True),
        (-1, None, True),
        ([0, 1], None, True),
        ("0,1", None, True),
        ("2", None, True),
        ("-1", None, True),
        (1, "ddp", True),
        ("auto", "ddp_spawn_find_unused_parameters_true", True),
        ("auto", "fsdp", True),
    ],
    ids=repr,
)
def test_is_multiprocess(devices, strategy, expected):
    assert is_multiprocess(devices, strategy) is expected


def test_is_multiprocess_on_strategy_objects():
    from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

    assert is_multiprocess(1, DDPStrategy())
    assert not is_multiprocess(1, SingleDeviceStrategy("cpu"))


def _run(devices: int, out: Path) -> dict[str, np.ndarray]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(devices), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


def test_two_process_ddp_matches_one_process(tmp_path):
    # Without the distributed sampler each rank would walk all cells in batches of half the
    # size (twice the steps per epoch), so the parameters would not agree.
    one = _run(1, tmp_path / "one.npz")
    two = _run(2, tmp_path / "two.npz")
    assert one.keys() == two.keys()
    phases = {k.split("/")[0] for k in one}
    assert phases == {"train", "neggrad_plus", "retrain", "sisa0", "sisa1", "dpsgd", "record"}
    # DP-SGD: the same mechanism and accounting, only spread over two processes
    assert int(one.pop("record/processes")) == 1 and int(two.pop("record/processes")) == 2
    for field in ("epsilon", "noise_multiplier", "sample_rate", "expected_batch_size", "steps"):
        key = f"record/{field}"
        assert float(two.pop(key)) == float(one.pop(key)), field
    for key in one:
        # float32 all-reduce of the same mean in another summation order: ~1e-8 measured
        np.testing.assert_allclose(two[key], one[key], rtol=0, atol=1e-6, err_msg=key)
