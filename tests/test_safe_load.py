"""Loading saved models runs no code from the file unless the caller trusts it."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import scvi
import torch

import scforget as sf
from scforget.model import UnsafeModelFileError, load_model

from .conftest import same_state, state_snapshot


class _Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _plant(model_dir: Path, marker: Path) -> None:
    """Add a payload to a saved model's attributes, as a malicious sender would."""
    path = model_dir / "model.pt"
    content = torch.load(path, weights_only=False)  # our own file, written by the test
    content["attr_dict"]["innocent_looking_"] = _Payload(str(marker))
    torch.save(content, path)


@pytest.fixture
def saved(trained_scvi, tmp_path):
    trained_scvi.save(tmp_path / "model", overwrite=True)
    return tmp_path / "model"


def test_clean_files_load_as_before(saved, trained_scvi):
    for loaded in (
        sf.model.SCVI.load(str(saved), adata=trained_scvi.adata),
        load_model(saved, adata=trained_scvi.adata),
    ):
        assert isinstance(loaded, sf.model.SCVI)
        assert same_state(loaded, state_snapshot(trained_scvi))
        np.testing.assert_array_equal(loaded.train_indices, trained_scvi.train_indices)
        assert loaded.training_recipe_ == trained_scvi.training_recipe_


def test_a_payload_is_refused_before_it_runs(saved, trained_scvi, tmp_path):
    marker = tmp_path / "ran.txt"
    _plant(saved, marker)
    with pytest.raises(UnsafeModelFileError, match="trusted=True"):
        sf.model.SCVI.load(str(saved), adata=trained_scvi.adata)
    with pytest.raises(UnsafeModelFileError):
        load_model(saved, adata=trained_scvi.adata)
    assert not marker.exists()
    # the positive control: scvi-tools' own loader (and trusted=True) does run it
    scvi.model.SCVI.load(str(saved), adata=trained_scvi.adata)
    assert marker.read_text() == "ran"
    marker.unlink()
    sf.model.SCVI.load(str(saved), adata=trained_scvi.adata, trusted=True)
    assert marker.exists()


def test_load_model_picks_the_class_and_says_what_is_wrong(tmp_path, trained_scvi):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_model(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model.pt"):
        load_model(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "model.pt").write_bytes(pickle.dumps({"no": "model"}))
    with pytest.raises((ValueError, UnsafeModelFileError)):
        load_model(tmp_path / "junk")
    with pytest.raises(TypeError, match="trusted"):
        load_model(tmp_path / "junk", trusted="yes")
