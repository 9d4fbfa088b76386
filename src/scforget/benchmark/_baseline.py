"""Training of a benchmark baseline and its retrain references (kept apart so that the cache can hash exactly this code)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from scforget._core import model_payload, quiet_training

if TYPE_CHECKING:
    from anndata import AnnData

    from scforget.data import ForgetSplit

    from ._config import BenchmarkConfig


def train_baseline(adata: AnnData, split: ForgetSplit, config: BenchmarkConfig, seed: int) -> tuple[Any, float]:
    """A :class:`scforget.model.SCVI` trained on ``split.train`` with the run's recipe; returns it and its wall time."""
    import scvi

    import scforget as sf

    scvi.settings.seed = seed
    model = sf.model.SCVI(adata, n_hidden=config.n_hidden, n_latent=config.n_latent, gene_likelihood="nb")
    start = time.perf_counter()
    with quiet_training():
        model.train(
            max_epochs=config.epochs,
            datasplitter_kwargs=split.datasplitter_kwargs(),
            accelerator=config.accelerator,
            enable_progress_bar=False,
        )
    return model, time.perf_counter() - start


def retrain_job(model: Any, forget: np.ndarray, accelerator: str, seed: int) -> dict[str, Any]:
    """One retrain reference: ``model`` retrained without ``forget`` (seed ``seed``); its payload and wall time.

    A fleet job (:func:`scforget._core.run_jobs`): the same function runs here and on a cluster's workers.
    """
    start = time.perf_counter()
    with quiet_training():
        new = model.unlearn(forget, method="retrain", seed=seed, accelerator=accelerator, enable_progress_bar=False)
    return {"payload": model_payload(new), "seconds": time.perf_counter() - start}
