"""Training of a benchmark baseline (kept apart so that the cache can hash exactly this code)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from scforget._core import quiet_training

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
