"""Read saved scvi-tools models without running code from the file.

scvi-tools saves a model as a pickle (``model.pt``) and loads it with ``torch.load(weights_only=False)``,
which runs whatever the pickle asks for: a model file someone else made can execute code. Here the
file is first read with an unpickler that resolves only allowlisted globals: tensors, plain containers and a
short allowlist of the data types scvi-tools and scforget save (numpy arrays, pandas tables of the
training history) and refuses everything else before anything runs. Only a file that passes is
handed, byte for byte from a private copy, to scvi-tools' own loader; so scvi-tools' full unpickler
only ever sees content the restricted one accepted.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import shutil
import tempfile
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Model file name scvi-tools uses (after an optional prefix).
MODEL_FILE = "model.pt"
#: Data files scvi-tools may save next to the model.
DATA_FILES = ("adata.h5ad", "mdata.h5mu")


class UnsafeModelFileError(ValueError):
    """A saved model holds objects outside the allowlist: loading it would run code from the file."""


def _allowlist() -> dict[str, Any]:
    """``"module.name"`` -> object for every global a saved model may name.

    torch's own weights-only allowlist (tensors, storages, dtypes, plain containers) plus the data
    types scvi-tools and scforget save: numpy arrays and dtypes, pandas tables (the training
    history), ``defaultdict`` and the builtin containers. Each of these only builds data from its
    arguments. torch's list comes from a private function; it is the definition torch itself uses.
    """
    import collections

    import numpy as np
    import pandas as pd
    import torch
    from numpy import dtypes as npd
    from pandas._libs import internals as pd_internals
    from pandas.core.indexes import base as pd_index_base
    from pandas.core.internals import managers as pd_managers

    allowed = dict(torch._weights_only_unpickler._get_allowed_globals())
    extra = {
        "numpy._core.multiarray._reconstruct": np._core.multiarray._reconstruct,
        "numpy.core.multiarray._reconstruct": np._core.multiarray._reconstruct,  # numpy 1.x files
        "numpy._core.multiarray.scalar": np._core.multiarray.scalar,
        "numpy.core.multiarray.scalar": np._core.multiarray.scalar,
        "numpy.ndarray": np.ndarray,
        "numpy.dtype": np.dtype,
        "builtins.bytes": bytes,
        "builtins.dict": dict,
        "builtins.list": list,
        "builtins.set": set,
        "builtins.frozenset": frozenset,
        "builtins.tuple": tuple,
        "builtins.slice": slice,
        "collections.OrderedDict": collections.OrderedDict,
        "collections.defaultdict": collections.defaultdict,
        "pandas.core.frame.DataFrame": pd.DataFrame,
        "pandas.core.series.Series": pd.Series,
        "pandas.core.indexes.base.Index": pd.Index,
        "pandas.core.indexes.range.RangeIndex": pd.RangeIndex,
        "pandas.core.indexes.base._new_Index": pd_index_base._new_Index,
        "pandas.core.internals.managers.BlockManager": pd_managers.BlockManager,
        "pandas.core.internals.managers.SingleBlockManager": pd_managers.SingleBlockManager,
        "pandas._libs.internals._unpickle_block": pd_internals._unpickle_block,
    }
    extra.update({f"numpy.dtypes.{n}": getattr(npd, n) for n in dir(npd) if n.endswith("DType")})
    allowed.update(extra)
    return allowed


_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class _RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allowlist (as opposed to bytes that are no pickle at all)."""


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allowlisted globals (the standard "restricting globals" recipe)."""

    _allowed: dict[str, Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)  # torch saves with protocol 2, which names Python 2 modules
        key = f"{module}.{name}"
        if key in self._allowed:
            return self._allowed[key]
        raise _RefusedGlobal(f"{key} is not one of the types a saved model may hold")


def _restricted_pickle_module() -> types.ModuleType:
    mod = types.ModuleType("scforget_restricted_pickle")
    unpickler = type("Unpickler", (_RestrictedUnpickler,), {"_allowed": _allowlist()})
    mod.Unpickler = unpickler  # type: ignore[attr-defined]
    mod.load = lambda f, **kw: unpickler(f, **kw).load()  # type: ignore[attr-defined]
    mod.loads = lambda b, **kw: unpickler(io.BytesIO(b), **kw).load()  # type: ignore[attr-defined]
    mod.__version__ = "restricted"  # type: ignore[attr-defined]
    return mod


def read_model_file(data: bytes | str | os.PathLike, *, trusted: bool = False, map_location: Any = "cpu") -> Any:
    """The content of a saved ``model.pt``, read without running code from it (unless ``trusted``).

    Raises
    ------
    UnsafeModelFileError
        When the file holds anything outside the allowlist (the error names it).
    """
    import torch

    if trusted:
        source = io.BytesIO(data) if isinstance(data, bytes) else data
        return torch.load(source, map_location=map_location, weights_only=False)
    source = io.BytesIO(data if isinstance(data, bytes) else Path(data).read_bytes())
    try:
        # torch's zip reader and tensor rebuilding, with our unpickler for every global in the pickle
        return torch.load(
            source, map_location=map_location, weights_only=False, pickle_module=_restricted_pickle_module()
        )
    except _RefusedGlobal as e:
        raise UnsafeModelFileError(
            "The model file holds objects outside what scvi-tools and scforget save, so loading it could run "
            f"code from the file; it was not loaded ({e}). Load it with trusted=True only if you made the file "
            "yourself or trust whoever did."
        ) from e
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile) as e:
        raise ValueError(
            f"The model file could not be read ({e}); it is corrupt or not a model saved by scvi-tools."
        ) from e


@contextlib.contextmanager
def checked_model_dir(
    dir_path: str | os.PathLike, *, prefix: str | None = None, trusted: bool = False
) -> Iterator[str]:
    """A directory scvi-tools can load from, holding a ``model.pt`` that passed :func:`read_model_file`.

    The checked bytes are written to a private temporary directory (so the file cannot change between
    the check and the load) next to links to the saved data files; with ``trusted=True`` the original
    directory is used as it is.
    """
    path = Path(dir_path)
    name = f"{prefix or ''}{MODEL_FILE}"
    if not (path / name).is_file():
        raise FileNotFoundError(f"{path} holds no {name}; it is not a saved scvi-tools model.")
    if trusted:
        yield str(path)
        return
    data = (path / name).read_bytes()
    read_model_file(data)  # raises before anything runs
    tmp = tempfile.mkdtemp(prefix="scforget_load_")
    try:
        (Path(tmp) / name).write_bytes(data)
        for extra in DATA_FILES:
            src = path / f"{prefix or ''}{extra}"
            if src.exists():
                os.symlink(src.resolve(), Path(tmp) / src.name)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
