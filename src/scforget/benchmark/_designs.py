"""Models built for deletion in the benchmark: the SISA ensemble and the adapter model, on the baseline's split."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from scforget._core import quiet_training

from ._config import BenchmarkConfig

if TYPE_CHECKING:
    from anndata import AnnData

    from scforget.data import ForgetSplit

#: obs column of the groups an adapter model is built on (pseudo-donors plus the forget group).
GROUP_KEY = "_scforget_benchmark_group"
FORGET_GROUP = "forget_group"


def design_data(kind: str, adata: AnnData, split: ForgetSplit, config: BenchmarkConfig, seed: int) -> AnnData:
    """A copy of ``adata`` with the groups of :func:`adapter_groups`, set up for the ``kind`` of model built for deletion."""
    import scforget as sf

    data = adata.copy()
    data.obs[GROUP_KEY] = adapter_groups(adata, split, config, seed)
    if kind == "sharded":
        sf.model.ShardedSCVI.setup_anndata(data)
    elif kind == "adapters":
        sf.model.AdapterSCVI.setup_anndata(data, donor_key=GROUP_KEY)
    else:
        raise ValueError(f"No model built for deletion of kind {kind!r}; use 'sharded' or 'adapters'.")
    return data


def train_sharded(
    data: AnnData, split: ForgetSplit, config: BenchmarkConfig, seed: int, fleet: Any = None
) -> tuple[Any, float]:
    """A :class:`~scforget.model.ShardedSCVI` trained on the baseline's training cells with the baseline's epochs.

    ``data`` comes from :func:`design_data`. Shards keep the groups of :func:`adapter_groups` whole
    (the forget group in one shard), as a steward who expects donor-level requests would shard;
    with random shards, a forget set spread over the cells hits every shard and SISA costs a full
    retraining. A ``fleet`` (:class:`distributed.Client`) trains the shards in parallel.
    """
    import scforget as sf

    ens = sf.model.ShardedSCVI(
        data,
        shard_key=GROUP_KEY,
        n_shards=config.sisa_shards,
        n_slices=config.sisa_slices,
        n_hidden=config.n_hidden,
        n_latent=config.n_latent,
    )
    start = time.perf_counter()
    with quiet_training():
        ens.train(
            max_epochs=config.epochs,
            datasplitter_kwargs=split.datasplitter_kwargs(),
            seed=seed,
            accelerator=config.accelerator,
            enable_progress_bar=False,
            fleet=fleet,
        )
    return ens, time.perf_counter() - start


def adapter_groups(adata: AnnData, split: ForgetSplit, config: BenchmarkConfig, seed: int) -> np.ndarray:
    """Groups of the adapter design: the forget label's cells form one group, the others pseudo-donors.

    pbmc3k comes from one donor, so the donors are pseudo-donors: random, equally sized groups of the
    other cells (stratified by label), with no donor effect. The forget group (forget and holdout
    cells) is mapped as one donor, so that dropping it forgets exactly the forget cells.
    """
    import scforget as sf

    groups = sf.data.pseudo_donors(adata, config.n_pseudo_donors, stratify_key=config.label_key, seed=seed)
    out = groups.astype(str).to_numpy().astype(object)
    out[np.concatenate([split.forget, split.holdout, split.calibration])] = FORGET_GROUP
    return out


def train_adapters(data: AnnData, split: ForgetSplit, config: BenchmarkConfig, seed: int) -> tuple[Any, float]:
    """An :class:`~scforget.model.AdapterSCVI`: a core on half the pseudo-donors, the others and the forget group mapped.

    ``data`` comes from :func:`design_data`. The core trains with the baseline's epochs on its
    donors' training cells; every other group is mapped in its own run of the same number of epochs.
    """
    import scforget as sf

    donors = [f"donor_{i}" for i in range(config.n_pseudo_donors)]
    core = donors[: max(1, config.n_pseudo_donors // 2)]
    model = sf.model.AdapterSCVI(data, core_donors=core, n_hidden=config.n_hidden, n_latent=config.n_latent)
    start = time.perf_counter()
    with quiet_training():
        model.train(
            max_epochs=config.epochs,
            datasplitter_kwargs=split.datasplitter_kwargs(),
            seed=seed,
            accelerator=config.accelerator,
            enable_progress_bar=False,
        )
        model.map_donors(
            [d for d in donors if d not in core] + [FORGET_GROUP],
            max_epochs=config.epochs,
            seed=seed,
            accelerator=config.accelerator,
        )
    return model, time.perf_counter() - start


#: Trainers of the models built for deletion, by the design name their methods declare.
BUILDERS = {"sharded": train_sharded, "adapters": train_adapters}
