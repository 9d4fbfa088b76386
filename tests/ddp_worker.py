"""Train, unlearn, shard-train and DP-train a tiny scVI with Lightning on ``devices`` CPU processes; save the parameters.

Run as a script (Lightning's DDP launcher re-executes it once per extra process)::

    python tests/ddp_worker.py DEVICES OUT.npz

Used by ``tests/test_distributed.py``: with one process and a global batch of 64 cells, and with
two processes (gloo) of 32 cells each, the parameters after each phase must agree. The data are
sized so that every epoch is one step over all training cells (a mean over the same cells in any
order; for unlearning one over the 64 retain cells paired with one over the 20 forget cells); dropout and BatchNorm are off and the latent draw is replaced
by the posterior mean, so the only difference between the runs is DDP's gradient averaging.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

N_RETAIN, N_FORGET, N_GENES = 64, 20, 200


def _posterior_mean(self, sample_shape=torch.Size()):  # noqa: B008 - torch's own default
    return self.loc.expand(self._extended_shape(sample_shape))


def main(devices: int, out: str) -> None:
    """Run the phases on ``devices`` processes and write the parameters after each (rank 0)."""
    torch.set_num_threads(1)
    # a draw of z differs between one process sampling 64 cells and two sampling 32 each
    torch.distributions.Normal.rsample = _posterior_mean

    import scvi

    import scforget as sf

    scvi.settings.seed = 0
    adata = sf.datasets.pbmc3k()
    adata = adata[adata.obs["qc_pass"].to_numpy()][: N_RETAIN + N_FORGET].copy()
    top = np.argsort(-np.asarray(adata.X.sum(axis=0)).ravel())[:N_GENES]
    adata = adata[:, np.sort(top)].copy()
    sf.model.SCVI.setup_anndata(adata)
    model = sf.model.SCVI(adata, n_hidden=16, n_latent=4, dropout_rate=0.0, use_batch_norm="none")
    batch = 64 // devices  # per process, as in scvi-tools: the global batch is 64 either way
    dist = {"accelerator": "cpu", "devices": devices}
    if devices > 1:
        dist["strategy"] = "ddp"
    params = {}

    def keep(name: str, m) -> None:
        for key, value in m.module.state_dict().items():
            params[f"{name}/{key}"] = value.detach().cpu().numpy().copy()

    model.train(
        max_epochs=3,
        batch_size=(N_RETAIN + N_FORGET) // devices,  # one step per epoch over all training cells
        train_size=1.0,
        plan_kwargs={"lr": 1e-3},
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        **dist,
    )
    keep("train", model)
    forget = np.arange(N_RETAIN, N_RETAIN + N_FORGET)
    retain = np.arange(N_RETAIN)
    new = model.unlearn(forget, method="neggrad_plus", max_epochs=3, batch_size=batch, seed=0, **dist)
    keep("neggrad_plus", new)
    again = model.unlearn(forget, method="retrain", max_epochs=3, batch_size=batch, seed=0, retain=retain, **dist)
    keep("retrain", again)
    # SISA: two shards of 42 cells, each stage one step over its shard
    ens = sf.model.ShardedSCVI(
        adata, n_shards=2, n_slices=1, n_hidden=16, n_latent=4, dropout_rate=0.0, use_batch_norm="none"
    )
    ens.train(
        max_epochs=2,
        batch_size=(N_RETAIN + N_FORGET) // 2 // devices,
        train_size=1.0,
        seed=0,
        plan_kwargs={"lr": 1e-3},
        enable_progress_bar=False,
        enable_model_summary=False,
        **dist,
    )
    for s, shard in enumerate(ens.shards):
        keep(f"sisa{s}", shard)
    # DP-SGD: every cell is in every step (one step per epoch, q = 1), so both runs clip the same
    # per-cell gradients; the noise (same seed) must be drawn once, not once per process
    scvi.settings.seed = 0  # the same initial weights in both runs (the phases above drew differently)
    private = sf.model.SCVI(adata, n_hidden=16, n_latent=4, dropout_rate=0.0, use_batch_norm="none")
    record = private.train_private(
        50.0,
        max_epochs=3,
        batch_size=(N_RETAIN + N_FORGET) // devices,
        train_size=1.0,
        seed=0,
        plan_kwargs={"lr": 1e-3},
        enable_progress_bar=False,
        **dist,
    )
    keep("dpsgd", private)
    for field in ("epsilon", "noise_multiplier", "sample_rate", "expected_batch_size", "steps", "processes"):
        params[f"record/{field}"] = np.asarray(record[field])
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0:
        np.savez(out, **params)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
