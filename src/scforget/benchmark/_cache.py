"""A cache of trained models for ``scforget benchmark --cache DIR``: re-runs train nothing twice.

A model is stored under a key that hashes everything it depends on: a digest of the data (counts,
cell and gene names), the design's split, the recipe (epochs, architecture, accelerator), the seed,
the method and its parameters, the versions of scforget, scvi-tools and torch, and a digest of
scforget's own source files (so that a development change to a method, without a new version,
does not bring back the old method's models; baselines and retrains hash only the files their
training runs through, so developing a method does not retrain them). A changed input gives a new key, so a stale model is
never reused. Models are saved with scvi-tools' ``save`` and
read back with :func:`scforget.model.load_model` (weights-only, allowlisted), next to a small JSON
with the wall time of the original training, which the benchmark reports instead of the load time.
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from anndata import AnnData


#: Kinds of model trained without any approximate method: their keys hold :func:`code_digest` of the
#: ``"training"`` scope, so that developing a method does not retrain every baseline and retrain.
TRAINING_KINDS = ("baseline", "retrain")
#: What the ``"training"`` scope leaves out: the audit, Fisher and plotting code, the benchmark's
#: reporting, and every method module but those retraining runs through.
_NOT_TRAINING = ("privacy/", "fisher/", "pl/", "benchmark/")
_TRAINING_METHOD_MODULES = {
    "__init__.py",
    "_checkpoint.py",  # the rewind checkpoint every scforget training records
    "_context.py",
    "_hyperparams.py",
    "_private.py",
    "_record.py",
    "_registry.py",
    "_retrain.py",
    "_unlearn.py",
}
_TRAINING_BENCHMARK_MODULES = {"benchmark/_baseline.py", "benchmark/_config.py"}


def _in_training_scope(rel: str) -> bool:
    if rel in _TRAINING_BENCHMARK_MODULES:
        return True
    if rel.startswith(_NOT_TRAINING):
        return False
    return not rel.startswith("methods/") or rel.removeprefix("methods/") in _TRAINING_METHOD_MODULES


def code_digest(scope: str = "all") -> str:
    """SHA-256 of scforget's Python source files (paths and contents, in a fixed order).

    ``scope="training"`` hashes only the files that training a baseline or a retrain runs through
    (models, core, data, the retrain method and the unlearning entry point, the baseline's training).
    """
    import scforget

    root = Path(scforget.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if scope == "training" and not _in_training_scope(rel):
            continue
        h.update(rel.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def data_digest(adata: AnnData) -> str:
    """SHA-256 of the counts (sparse or dense), the obs names and the var names."""
    import scipy.sparse as sp

    h = hashlib.sha256()
    x = adata.X
    if sp.issparse(x):
        x = sp.csr_matrix(x)
        for part in (x.data, x.indices, x.indptr):
            h.update(np.ascontiguousarray(part).tobytes())
    else:
        h.update(np.ascontiguousarray(np.asarray(x)).tobytes())
    h.update("\n".join(map(str, adata.obs_names)).encode())
    h.update("\n".join(map(str, adata.var_names)).encode())
    return h.hexdigest()


class ModelCache:
    """Trained models by content key (no-op when ``root`` is ``None``).

    Parameters
    ----------
    root
        The cache directory (created on first write).
    adata
        The benchmark's data, whose digest enters every key.
    """

    def __init__(self, root: str | Path | None, adata: AnnData):
        self.root = None if root is None else Path(root)
        self._base = {
            "data": data_digest(adata) if root is not None else "",
            "versions": {p: version(p) for p in ("scforget", "scvi-tools", "torch")},
            "code": code_digest() if root is not None else "",
        }
        self._training_code = code_digest("training") if root is not None else ""
        self.hits = 0
        self.misses = 0

    def key(self, **parts: Any) -> str:
        """The key of a model made from ``parts`` (JSON-serialisable; arrays by their SHA-256)."""

        def plain(v: Any) -> Any:
            if isinstance(v, np.ndarray):
                return hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()
            return v

        payload = {**self._base, **{k: plain(v) for k, v in parts.items()}}
        if parts.get("kind") in TRAINING_KINDS:
            payload["code"] = self._training_code
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def get(self, key: str, adata: AnnData) -> tuple[Any, float] | None:
        """The cached model (loaded on ``adata``) and its original wall time, or ``None``."""
        if self.root is None or not (self.root / key / "meta.json").exists():
            if self.root is not None:
                self.misses += 1
            return None
        from scforget.model import load_model

        meta = json.loads((self.root / key / "meta.json").read_text())
        model = load_model(self.root / key / "model", adata, accelerator=meta.get("accelerator", "auto"))
        self.hits += 1
        return model, float(meta["wall_time_s"])

    def put(self, key: str, model: Any, wall_time_s: float, *, accelerator: str = "auto") -> None:
        """Store ``model`` (without its AnnData) and its wall time."""
        if self.root is None:
            return
        where = self.root / key
        where.mkdir(parents=True, exist_ok=True)
        model.save(where / "model", overwrite=True, save_anndata=False)
        meta = {"wall_time_s": wall_time_s, "accelerator": accelerator}
        (where / "meta.json").write_text(json.dumps(meta))
