import numpy as np
import pandas as pd
import pytest

import scforget as sf
from scforget.data import as_positions

NAMES = pd.Index([f"c{i}" for i in range(10)])


@pytest.mark.parametrize(
    "spec",
    [
        [3, 1, 7],
        np.array([7, 3, 1], dtype=np.int32),
        np.array([1.0, 3.0, 7.0]),
        np.isin(np.arange(10), [1, 3, 7]),
        ["c1", "c3", "c7"],
        pd.Index(["c7", "c1", "c3"]),
        pd.Series(np.isin(np.arange(10), [1, 3, 7]), index=NAMES)[::-1],  # aligned by name, any order
    ],
    ids=["list", "int32", "integral-float", "mask", "names", "index", "series"],
)
def test_as_positions_accepts_every_spec(spec):
    np.testing.assert_array_equal(as_positions(spec, NAMES), [1, 3, 7])


def test_as_positions_duplicates_warn_and_dedupe():
    with pytest.warns(UserWarning, match="more than once"):
        pos = as_positions([3, 3, 1], NAMES)
    np.testing.assert_array_equal(pos, [1, 3])


@pytest.mark.parametrize(
    ("spec", "exc", "match"),
    [
        ([], ValueError, "selects no cells"),
        (np.zeros(10, dtype=bool), ValueError, "selects no cells"),
        ([1, 10], ValueError, "out of range"),
        ([-1, 2], ValueError, "negative"),
        ([1.5], TypeError, "non-integer"),
        ([np.nan, 1.0], ValueError, "NaN"),
        (["c1", "nope"], ValueError, "not in the AnnData"),
        (np.ones(9, dtype=bool), ValueError, "length 9"),
        (pd.Series(True, index=[f"x{i}" for i in range(10)]), ValueError, "not aligned"),
        (None, TypeError, "None"),
        (slice(0, 3), TypeError, "slice"),
    ],
    ids=[
        "empty",
        "empty-mask",
        "out-of-range",
        "negative",
        "non-integer",
        "nan",
        "unknown-name",
        "mask-length",
        "misaligned-series",
        "none",
        "slice",
    ],
)
def test_as_positions_rejects_bad_specs(spec, exc, match):
    with pytest.raises(exc, match=match):
        as_positions(spec, NAMES, argument="forget")


def test_as_positions_names_argument_in_message():
    with pytest.raises(ValueError, match="`members`"):
        as_positions([99], NAMES, argument="members")


def test_structured_forget_roles_are_disjoint_and_cover(pbmc_small):
    split = sf.data.structured_forget(pbmc_small, "cell_type", "DC", holdout_fraction=0.5, seed=0)
    n_dc = int((pbmc_small.obs["cell_type"] == "DC").sum())
    assert len(split.forget) + len(split.holdout) == n_dc
    assert abs(len(split.forget) - len(split.holdout)) <= 1
    assert split.n_obs == pbmc_small.n_obs
    assert (pbmc_small.obs["cell_type"].iloc[split.forget] == "DC").all()
    assert (pbmc_small.obs["cell_type"].iloc[split.retain] != "DC").all()
    np.testing.assert_array_equal(split.train, np.union1d(split.forget, split.retain))
    # frozen dataclass with read-only arrays
    with pytest.raises(ValueError, match="read-only"):
        split.forget[0] = 0
    train, val, test = split.datasplitter_kwargs()["external_indexing"]
    assert len(train) + len(val) + len(test) == pbmc_small.n_obs


def test_carve_calibration_moves_non_members_and_keeps_the_training_set(pbmc_small):
    split = sf.data.structured_forget(pbmc_small, "cell_type", "NK", holdout_fraction=0.5, seed=0)
    carved = split.carve_calibration(0.25, seed=1)
    assert carved.calibration.size == round(0.25 * split.holdout.size) > 0
    # the calibration cells come from the non-members only, which lose exactly them
    assert set(carved.calibration) <= set(split.holdout)
    np.testing.assert_array_equal(np.union1d(carved.holdout, carved.calibration), split.holdout)
    assert np.intersect1d(carved.holdout, carved.calibration).size == 0
    # nothing else moves: the same cells are trained, validated and tested, so models trained on either
    # split are the same
    for role in ("forget", "retain", "unseen", "validation"):
        np.testing.assert_array_equal(getattr(carved, role), getattr(split, role))
    for a, b in zip(
        split.datasplitter_kwargs()["external_indexing"], carved.datasplitter_kwargs()["external_indexing"], strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert carved.n_obs == split.n_obs and split.calibration.size == 0  # the original is unchanged
    assert "calibration" in carved.summary().index and "calibration=" in repr(carved)
    assert not np.array_equal(carved.calibration, split.carve_calibration(0.25, seed=2).calibration)
    assert split.carve_calibration(0.0).calibration.size == 0


@pytest.mark.parametrize(
    ("fraction", "match"),
    [(1.0, "`fraction`"), (-0.1, "`fraction`"), (0.995, "no non-member for the audit"), (0.005, "rounds to no")],
)
def test_carve_calibration_bad_input(pbmc_small, fraction, match):
    split = sf.data.structured_forget(pbmc_small, "cell_type", "NK", holdout_fraction=0.5, seed=0)
    with pytest.raises(ValueError, match=match):
        split.carve_calibration(fraction)
    with pytest.raises(ValueError, match="already has calibration cells"):
        split.carve_calibration(0.25).carve_calibration(0.25)


def test_structured_forget_seed_changes_assignment(pbmc_small):
    a = sf.data.structured_forget(pbmc_small, "cell_type", "DC", seed=0)
    b = sf.data.structured_forget(pbmc_small, "cell_type", "DC", seed=1)
    c = sf.data.structured_forget(pbmc_small, "cell_type", "DC", seed=0)
    np.testing.assert_array_equal(a.forget, c.forget)
    assert not np.array_equal(a.forget, b.forget)


def test_structured_forget_bad_input(pbmc_small):
    with pytest.raises(KeyError, match="cell_typ"):
        sf.data.structured_forget(pbmc_small, "cell_typo", "DC")
    with pytest.raises(ValueError, match="does not occur"):
        sf.data.structured_forget(pbmc_small, "cell_type", "Dendritic")
    with pytest.raises(ValueError, match="holdout_fraction"):
        sf.data.structured_forget(pbmc_small, "cell_type", "DC", holdout_fraction=1.0)


def test_structured_forget_several_groups(pbmc_small):
    split = sf.data.structured_forget(pbmc_small, "cell_type", ["DC", "Platelet"], holdout_fraction=0.0)
    assert len(split.holdout) == 0
    assert set(pbmc_small.obs["cell_type"].iloc[split.forget]) == {"DC", "Platelet"}


def test_scattered_forget(pbmc_small):
    split = sf.data.scattered_forget(pbmc_small, 40, seed=3)
    assert len(split.forget) == 40 and len(split.holdout) == 40
    assert split.n_obs == pbmc_small.n_obs
    with pytest.raises(ValueError, match="`n`"):
        sf.data.scattered_forget(pbmc_small, 0)


def test_heldout_split_stratified(pbmc_small):
    split = sf.data.heldout_split(pbmc_small, 0.2, stratify_key="cell_type", seed=0)
    assert len(split.forget) == 0
    frac = pbmc_small.obs["cell_type"].iloc[split.unseen].value_counts() / pbmc_small.obs["cell_type"].value_counts()
    assert np.allclose(frac.dropna(), 0.2, atol=0.05)
