"""SISA for scVI: an ensemble of shard models, each trained slice by slice, that forgets by retraining shards."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from scforget._core import (
    check_bool,
    check_counts,
    check_fleet,
    check_int,
    close_matches,
    default_max_epochs,
    fresh_model,
    from_payload,
    model_payload,
    quiet_training,
    record_cell_order,
    record_training_call,
    resolve_seed,
    run_jobs,
    seeded,
    split_cells,
)
from scforget.data import as_positions
from scforget.methods import unlearn as _unlearn

from ._scvi import SCVI

if TYPE_CHECKING:
    from anndata import AnnData

    from scforget.data import CellSpec

_MANIFEST = "sharded.json"
_CHECKPOINTS = "checkpoints.pt"


def stage_seed(seed: int, shard: int, stage: int) -> int:
    """Seed of training stage ``stage`` of shard ``shard`` (stage ``-1``: the shard's initial weights)."""
    return int(np.random.SeedSequence([int(seed), int(shard), int(stage) + 1]).generate_state(1)[0])


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _shard_job(ensemble: ShardedSCVI, shard: int) -> dict[str, Any]:
    """Train shard ``shard`` of ``ensemble`` from scratch: its weights, stage checkpoints and latent statistics.

    The fleet job of :meth:`ShardedSCVI.train` (the same function runs in this process and on a
    cluster's workers).
    """
    ensemble._new_shard(shard)
    return {
        "payload": model_payload(ensemble.shards[shard]),
        "checkpoints": ensemble.checkpoints_[shard],
        "latent_stats": ensemble.latent_stats_[shard],
    }


def _logmeanexp(values: np.ndarray, axis: int = 0) -> np.ndarray:
    top = values.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(values - top).mean(axis=axis, keepdims=True))).squeeze(axis)


class ShardedSCVI:
    """SISA for scVI (Bourtoule et al. 2021): ``n_shards`` scVI models on disjoint shards of the cells.

    Every training cell belongs to one shard; each shard model sees its own cells only. A shard is
    trained in ``n_slices`` stages: stage ``r`` trains (continuing from stage ``r - 1``) on the shard's
    slices ``0..r``, and its weights are checkpointed after every stage. To forget cells,
    ``unlearn(forget, method="sisa")`` resumes each affected shard from the checkpoint before the first
    stage that saw a forgotten cell and retrains the later stages without those cells, with the same
    seeds; untouched shards are kept bit for bit. The result is exactly the ensemble that training
    without the forgotten cells would have produced (same shards, slices and seeds).

    Downstream, the ensemble behaves like one model: :meth:`get_latent_representation` concatenates
    the shards' latents, each standardised by its own training cells' statistics;
    :meth:`get_normalized_expression` averages the shards; :meth:`get_marginal_ll` is the mixture
    likelihood (log-mean-exp over shards). :func:`scforget.audit` audits the ensemble through these.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata` (scforget's :meth:`SCVI.setup_anndata`).
    n_shards
        Number of shards ``S``; deleting a cell retrains about ``1 / S`` of the ensemble.
    n_slices
        Number of slices ``R`` per shard; deleting a cell retrains the stages from its slice on
        (on average about half of a shard's training when ``R`` is large).
    shard_key
        ``adata.obs`` column whose groups (e.g. donors) are kept whole within one shard, so deleting a
        group retrains one shard; by default cells are assigned at random.
    **model_kwargs
        Arguments of every shard's :class:`scforget.model.SCVI` (``n_hidden``, ``n_latent``...).

    Examples
    --------
    >>> sf.model.ShardedSCVI.setup_anndata(adata)
    >>> ensemble = sf.model.ShardedSCVI(adata, n_shards=4, shard_key="donor")
    >>> ensemble.train(max_epochs=100)
    >>> forgotten = ensemble.unlearn(adata.obs["donor"] == "d3", method="sisa")
    """

    #: The kind of model built for deletion (methods declare the kinds they run on).
    deletion_design = "sharded"
    setup_anndata = SCVI.setup_anndata

    def __init__(
        self, adata: AnnData, n_shards: int = 4, n_slices: int = 1, shard_key: str | None = None, **model_kwargs: Any
    ):
        self.n_shards = check_int(n_shards, "n_shards", minimum=1)
        self.n_slices = check_int(n_slices, "n_slices", minimum=1)
        if shard_key is not None and shard_key not in adata.obs.columns:
            raise KeyError(
                f"`shard_key`={shard_key!r} is not a column of adata.obs.{close_matches(shard_key, adata.obs)}"
            )
        self.shard_key = shard_key
        self.model_kwargs = dict(model_kwargs)
        self.shards = [SCVI(adata, **model_kwargs) for _ in range(self.n_shards)]
        self.adata = adata
        self.init_params_ = {
            "non_kwargs": {"n_shards": self.n_shards, "n_slices": self.n_slices, "shard_key": shard_key},
            "kwargs": {"model_kwargs": dict(model_kwargs)},
        }
        self.is_trained_ = False
        self.train_indices = self.validation_indices = self.test_indices = None
        self.history_: dict = {}
        #: ``slices_[s][r]``: positions of the training cells in slice ``r`` of shard ``s``.
        self.slices_: list[list[np.ndarray]] = []
        #: ``checkpoints_[s][r]``: shard ``s``'s weights before stage ``r`` (``r = n_slices``: final).
        self.checkpoints_: list[list[dict[str, torch.Tensor]]] = []
        self.stage_epochs_: list[int] = []
        self.latent_stats_: list[tuple[np.ndarray, np.ndarray]] = []
        self._fit: dict[str, Any] = {}

    # -- bookkeeping shared with scvi-tools models -----------------------------------------------
    @property
    def adata_manager(self):
        """The data manager of the shards (they share one AnnData registration)."""
        return self.shards[0].adata_manager

    @property
    def device(self):
        """Device of the shard models."""
        return self.shards[0].device

    @property
    def registry(self) -> dict:
        """The AnnData registry of the shards."""
        return self.shards[0].registry

    @property
    def is_minified(self) -> bool:
        return False

    def __repr__(self) -> str:
        state = "trained" if self.is_trained_ else "untrained"
        return f"ShardedSCVI({self.n_shards} shards x {self.n_slices} slices, {state}, shard_key={self.shard_key!r})"

    # -- training ------------------------------------------------------------------------------------
    def _assign(self, train: np.ndarray, rng: np.random.Generator) -> list[list[np.ndarray]]:
        """Shards (random, or whole ``shard_key`` groups balanced by size) and random slices within them."""
        if self.shard_key is None:
            shard_of = rng.permutation(np.arange(train.size) % self.n_shards)
        else:
            groups = self.adata.obs[self.shard_key].astype(str).to_numpy()[train]
            names, counts = np.unique(groups, return_counts=True)
            load, shard_of_group = np.zeros(self.n_shards), {}
            for g in names[np.lexsort((names, -counts))]:  # largest groups first, ties by name
                target = int(np.argmin(load))
                shard_of_group[g] = target
                load[target] += counts[names == g][0]
            shard_of = np.array([shard_of_group[g] for g in groups])
        slices = []
        for s in range(self.n_shards):
            cells = rng.permutation(train[shard_of == s])
            slices.append([np.sort(part) for part in np.array_split(cells, self.n_slices)])
        return slices

    def _train_shard(self, s: int, from_stage: int) -> None:
        """Train shard ``s`` from the checkpoint before stage ``from_stage`` to the end, checkpointing each stage."""
        fit = self._fit
        shard = self.shards[s]
        shard.module.load_state_dict(self.checkpoints_[s][from_stage])
        n_obs = self.adata.n_obs
        del self.checkpoints_[s][from_stage + 1 :]
        for r in range(from_stage, self.n_slices):
            cells = np.sort(np.concatenate(self.slices_[s][: r + 1]))
            if cells.size == 0:  # every cell of these slices was forgotten: the stage has nothing to learn
                self.checkpoints_[s].append(_state(shard.module))
                continue
            rest = np.setdiff1d(np.arange(n_obs), cells)
            splitter = {"external_indexing": [cells, np.zeros(0, dtype=np.int64), rest]}
            if 0 < cells.size % fit["batch_size"] < 3 and cells.size > fit["batch_size"]:
                splitter["drop_last"] = True  # a last minibatch of 1-2 cells breaks BatchNorm
            shard.module.train()  # a stage continues training; Lightning expects a module in train mode
            with seeded(stage_seed(fit["seed"], s, r)):
                shard.train(
                    rewind_fraction=None,  # a shard's stages are its own checkpoints
                    max_epochs=self.stage_epochs_[r],
                    batch_size=fit["batch_size"],
                    plan_kwargs=dict(fit["plan_kwargs"]),
                    datasplitter_kwargs=splitter,
                    accelerator=fit["accelerator"],
                    devices=fit["devices"],
                    **fit["trainer_kwargs"],
                )
            self.checkpoints_[s].append(_state(shard.module))
        shard.train_indices = np.sort(np.concatenate(self.slices_[s]))
        shard.module.eval()
        self._update_latent_stats(s)

    def _update_latent_stats(self, s: int) -> None:
        """Mean and sd of shard ``s``'s posterior means over its own training cells (for the ensemble latent)."""
        cells = np.sort(np.concatenate(self.slices_[s]))
        z = self.shards[s].get_latent_representation(indices=cells) if cells.size else np.zeros((1, 1))
        stats = (z.mean(0).astype(np.float32), np.maximum(z.std(0), 1e-8).astype(np.float32))
        if len(self.latent_stats_) <= s:
            self.latent_stats_.append(stats)
        else:
            self.latent_stats_[s] = stats

    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int = 128,
        train_size: float | None = None,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        datasplitter_kwargs: dict | None = None,
        plan_kwargs: dict | None = None,
        seed: int | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        fleet: Any = None,
        **trainer_kwargs: Any,
    ) -> None:
        """Split the cells, assign training cells to shards and slices, and train every shard stage by stage.

        Training, validation and test cells are chosen as scvi-tools' :meth:`~scvi.model.SCVI.train`
        does (e.g. ``datasplitter_kwargs=split.datasplitter_kwargs()``). The ``max_epochs`` are shared
        out over the ``n_slices`` stages. Each stage is seeded from ``seed`` (``None`` follows
        :attr:`scvi.settings.seed`), the shard and the stage, so a shard retrained after a deletion
        repeats exactly what its training did.

        Parameters
        ----------
        max_epochs
            Epochs of each shard's whole training (default: scvi-tools' heuristic).
        batch_size
            Minibatch size.
        train_size, validation_size, shuffle_set_split, datasplitter_kwargs
            How cells are split into training, validation and test cells (as in scvi-tools).
        plan_kwargs
            Arguments of scvi-tools' training plan.
        seed
            Seed of the assignment and of every stage.
        accelerator, devices
            Passed to Lightning (``devices=2, strategy="ddp"`` trains each shard with DDP).
        fleet
            A :class:`distributed.Client` (``pip install 'scforget[fleet]'``): the shards, independent
            jobs, train in parallel on its workers (each receives the ensemble and its AnnData once).
            The ensemble equals that of ``fleet=None`` for the same seed, up to float32 summation
            order when the workers run torch on another number of threads than this process.
        **trainer_kwargs
            Arguments of :class:`scvi.train.Trainer` (e.g. ``enable_progress_bar``).
        """
        fleet = check_fleet(fleet)
        max_epochs = check_int(max_epochs, "max_epochs", minimum=1, allow_none=True)
        batch_size = check_int(batch_size, "batch_size", minimum=2)
        check_bool(shuffle_set_split, "shuffle_set_split")
        seed = resolve_seed(seed)
        check_counts(self)
        epochs = default_max_epochs(self.adata.n_obs) if max_epochs is None else max_epochs
        if epochs < self.n_slices:
            raise ValueError(
                f"`max_epochs`={epochs} must be at least `n_slices`={self.n_slices} (one epoch per stage)."
            )
        start = time.perf_counter()
        train, self.validation_indices, self.test_indices = split_cells(
            self.adata_manager,
            seed=seed,
            train_size=train_size,
            validation_size=validation_size,
            shuffle_set_split=shuffle_set_split,
            datasplitter_kwargs=datasplitter_kwargs,
        )
        train = np.sort(train)  # the assignment depends on the cells, not on the splitter's order
        self.slices_ = self._assign(train, np.random.default_rng(seed))
        self.stage_epochs_ = [len(part) for part in np.array_split(np.arange(epochs), self.n_slices)]
        self._fit = {
            "seed": seed,
            "batch_size": batch_size,
            "plan_kwargs": dict(plan_kwargs or {}),
            "accelerator": accelerator,
            "devices": devices,
            "trainer_kwargs": {"enable_checkpointing": False, **trainer_kwargs},
        }
        self.checkpoints_ = [[] for _ in range(self.n_shards)]
        self.latent_stats_ = [None] * self.n_shards
        shared = {"ensemble": self} if fleet is None else {"ensemble": self._for_workers()}
        with quiet_training():  # S x R trainer runs: keep Lightning's per-run banners out of notebooks
            results = run_jobs(_shard_job, [{"shard": s} for s in range(self.n_shards)], fleet=fleet, shared=shared)
        for s, result in enumerate(results):
            if fleet is not None:  # without a fleet the jobs trained this ensemble's own shards in place
                self.shards[s] = from_payload(self.shards[s], result["payload"])
            self.checkpoints_[s] = result["checkpoints"]
            self.latent_stats_[s] = result["latent_stats"]
        self.train_indices = train
        self.is_trained_ = True
        seconds = time.perf_counter() - start
        arguments = {"max_epochs": epochs, "batch_size": batch_size, "plan_kwargs": dict(plan_kwargs or {})}
        record_training_call(self, arguments, seconds=seconds, n_train_cells=train.size)
        self.training_recipe_["seed"] = seed
        record_cell_order(self)

    def _new_shard(self, s: int) -> None:
        """Initialise shard ``s`` (seeded) and train it from its first stage."""
        with seeded(stage_seed(self._fit["seed"], s, -1)):
            self.shards[s] = fresh_model(self.shards[s])
        self.checkpoints_[s] = [_state(self.shards[s].module)]
        self._train_shard(s, 0)

    def _for_workers(self) -> ShardedSCVI:
        """A shallow copy without the other shards' checkpoints, to send to a fleet's workers."""
        new = copy.copy(self)
        new.checkpoints_ = [[] for _ in range(self.n_shards)]
        new.latent_stats_ = [None] * self.n_shards
        new.shards = list(self.shards)
        return new

    def retrain_shard(self, shard: int, from_stage: int) -> None:
        """Retrain ``shard`` from the checkpoint before ``from_stage`` on its current slices (used by SISA)."""
        self._train_shard(int(shard), int(from_stage))
        self.train_indices = np.sort(np.concatenate([c for slices in self.slices_ for c in slices]))

    # -- unlearning ----------------------------------------------------------------------------------
    def unlearn(self, forget: CellSpec, method: str = "sisa", **kwargs: Any) -> ShardedSCVI:
        """Forget cells: :func:`scforget.unlearn` on the ensemble (``method="sisa"``, exact).

        Returns
        -------
        The ensemble without the cells: a new object unless ``inplace=True``.
        """
        return _unlearn(self, forget, method, **kwargs)

    def copy(self) -> ShardedSCVI:
        """An independent copy (shards, slices, checkpoints and bookkeeping) on the same AnnData."""
        new = object.__new__(ShardedSCVI)
        shards = self.shards
        for attr, value in vars(self).items():
            if attr not in ("shards", "adata"):
                setattr(new, attr, copy.deepcopy(value))
        new.adata = self.adata
        new.shards = []
        for shard in shards:
            clone = SCVI(self.adata, **self.model_kwargs)
            clone.module.load_state_dict(copy.deepcopy(shard.module.state_dict()))
            for attr in ("is_trained_", "train_indices", "validation_indices", "test_indices", "history_"):
                setattr(clone, attr, copy.deepcopy(getattr(shard, attr, None)))
            clone.module.eval()
            new.shards.append(clone)
        return new

    def fresh(self) -> ShardedSCVI:
        """A new, untrained ensemble with the same configuration on the same AnnData."""
        return ShardedSCVI(
            self.adata, n_shards=self.n_shards, n_slices=self.n_slices, shard_key=self.shard_key, **self.model_kwargs
        )

    # -- the ensemble as one model ---------------------------------------------------------------------
    def _positions(self, indices) -> np.ndarray:
        """Positions of ``indices`` in the order given, as scvi-tools' models return their rows."""
        if indices is None:
            return np.arange(self.adata.n_obs)
        as_positions(indices, self.adata.obs_names, argument="indices")  # validates
        arr = np.asarray(indices).ravel()
        if arr.dtype.kind in "iu":
            return arr.astype(np.int64)
        if arr.dtype.kind in "OUS":
            return self.adata.obs_names.get_indexer(arr.astype(str)).astype(np.int64)
        return as_positions(indices, self.adata.obs_names, argument="indices")  # a mask: obs order

    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: CellSpec | None = None,
        give_mean: bool = True,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Concatenated posterior means, each shard's standardised by its training cells' mean and sd.

        Each block is on the same scale whatever the shard, and the representation of a cell depends
        only on the shards (and their training cells), not on the other cells queried.
        """
        if adata is not None and adata is not self.adata:
            raise ValueError("Pass cells of the ensemble's own AnnData as `indices`.")
        if not check_bool(give_mean, "give_mean"):
            raise ValueError("The ensemble's latent representation is made of posterior means; pass give_mean=True.")
        pos = self._positions(indices)
        blocks = []
        for shard, (mean, sd) in zip(self.shards, self.latent_stats_, strict=True):
            blocks.append((shard.get_latent_representation(indices=pos, batch_size=batch_size) - mean) / sd)
        return np.hstack(blocks)

    def get_normalized_expression(self, indices: CellSpec | None = None, **kwargs: Any) -> pd.DataFrame:
        """Mean over shards of each shard's :meth:`~scvi.model.SCVI.get_normalized_expression`."""
        pos = self._positions(indices)
        frames = [shard.get_normalized_expression(indices=pos, **kwargs) for shard in self.shards]
        return sum(frames[1:], frames[0]) / len(frames)

    def get_marginal_ll(self, indices: CellSpec | None = None, n_mc_samples: int = 100, **kwargs: Any) -> np.ndarray:
        """Per-cell mixture log-likelihood: ``log mean_s p_s(x)`` over the shard models."""
        pos = self._positions(indices)
        per_shard = np.stack(
            [
                np.asarray(shard.get_marginal_ll(indices=pos, n_mc_samples=n_mc_samples, return_mean=False, **kwargs))
                for shard in self.shards
            ]
        )
        return _logmeanexp(per_shard)

    def audit_signals(self, positions: np.ndarray, *, encoder_only: bool = False, **kwargs: Any) -> dict:
        """Per-cell audit signals of the ensemble (used by :func:`scforget.audit`).

        The reconstruction log-likelihood is the mixture's, ``log mean_s p_s(x | z_s)``; the KL is the
        mean over shards; the posterior mean and variance are the concatenated, standardised shard
        posteriors (as in :meth:`get_latent_representation`).
        """
        from scforget.privacy._signals import compute_raw

        raws = [compute_raw(shard, positions, encoder_only=encoder_only, **kwargs) for shard in self.shards]
        out = {
            "mean": np.hstack([(r["mean"] - m) / sd for r, (m, sd) in zip(raws, self.latent_stats_, strict=True)]),
            "var": np.hstack([r["var"] / sd**2 for r, (_, sd) in zip(raws, self.latent_stats_, strict=True)]),
        }
        if encoder_only:
            return out
        out["recon_ll"] = _logmeanexp(np.stack([r["recon_ll"] for r in raws]))
        out["kl"] = np.mean([r["kl"] for r in raws], axis=0)
        out["n_counts"] = raws[0]["n_counts"]
        if "marginal_ll" in raws[0]:
            out["marginal_ll"] = _logmeanexp(np.stack([r["marginal_ll"] for r in raws]))
        return out

    def shard_of(self, cells: CellSpec) -> pd.Series:
        """Shard and slice of each training cell among ``cells`` (a table; cells are positions)."""
        pos = as_positions(cells, self.adata.obs_names, argument="cells")
        rows = [(int(p), s, r) for s, slices in enumerate(self.slices_) for r, part in enumerate(slices) for p in part]
        table = pd.DataFrame(rows, columns=["position", "shard", "slice"]).set_index("position")
        return table.loc[table.index.intersection(pos)]

    # -- saving ------------------------------------------------------------------------------------------
    def save(self, dir_path: str | Path, overwrite: bool = False, save_anndata: bool = False) -> None:
        """Save every shard (as a plain scVI model, loadable by scvi-tools), the manifest and the checkpoints.

        The manifest is JSON and the checkpoints are tensors only (loaded with ``weights_only=True``),
        so loading runs no code from the files.
        """
        path = Path(dir_path)
        if path.exists() and any(path.iterdir()) and not overwrite:
            raise FileExistsError(f"{path} exists and is not empty; pass overwrite=True.")
        path.mkdir(parents=True, exist_ok=True)
        for s, shard in enumerate(self.shards):
            shard.save(path / f"shard_{s}", overwrite=True, save_anndata=save_anndata and s == 0)
        manifest = {
            "n_shards": self.n_shards,
            "n_slices": self.n_slices,
            "shard_key": self.shard_key,
            "model_kwargs": self.model_kwargs,
            "slices": [[part.tolist() for part in slices] for slices in self.slices_],
            "stage_epochs": self.stage_epochs_,
            "fit": {k: v for k, v in self._fit.items() if k != "trainer_kwargs"},
            "indices": {
                k: (None if getattr(self, k) is None else np.asarray(getattr(self, k)).tolist())
                for k in ("train_indices", "validation_indices", "test_indices")
            },
            "latent_stats": [[m.tolist(), sd.tolist()] for m, sd in self.latent_stats_],
            "attributes": {
                k: v
                for k, v in vars(self).items()
                if k.endswith("_")
                and not k.startswith("_")
                and k not in ("slices_", "checkpoints_", "latent_stats_", "init_params_", "stage_epochs_")
            },
        }
        (path / _MANIFEST).write_text(json.dumps(manifest, default=_plain))
        flat = {f"{s}/{r}": state for s, states in enumerate(self.checkpoints_) for r, state in enumerate(states)}
        torch.save(flat, path / _CHECKPOINTS)

    @classmethod
    def load(
        cls,
        dir_path: str | Path,
        adata: AnnData,
        accelerator: str = "auto",
        device: int | str = "auto",
        *,
        trusted: bool = False,
    ) -> ShardedSCVI:
        """Load an ensemble saved by :meth:`save` on ``adata`` (the AnnData it was trained on).

        Nothing in the files runs: the manifest is JSON, the checkpoints are read weights-only and
        each shard is loaded by :meth:`scforget.model.SCVI.load`, which checks its model file
        (``trusted=True`` skips that check).
        """
        path = Path(dir_path)
        if not (path / _MANIFEST).exists():
            raise FileNotFoundError(f"{path} holds no {_MANIFEST}; it is not a saved ShardedSCVI.")
        manifest = json.loads((path / _MANIFEST).read_text())
        new = object.__new__(cls)
        new.n_shards, new.n_slices = int(manifest["n_shards"]), int(manifest["n_slices"])
        new.shard_key, new.model_kwargs = manifest["shard_key"], dict(manifest["model_kwargs"])
        new.adata = adata
        new.shards = [
            SCVI.load(str(path / f"shard_{s}"), adata=adata, accelerator=accelerator, device=device, trusted=trusted)
            for s in range(new.n_shards)
        ]
        new.init_params_ = {
            "non_kwargs": {"n_shards": new.n_shards, "n_slices": new.n_slices, "shard_key": new.shard_key},
            "kwargs": {"model_kwargs": dict(new.model_kwargs)},
        }
        new.slices_ = [[np.asarray(p, dtype=np.int64) for p in slices] for slices in manifest["slices"]]
        new.stage_epochs_ = [int(e) for e in manifest["stage_epochs"]]
        new._fit = {**manifest["fit"], "trainer_kwargs": {"enable_checkpointing": False, "enable_progress_bar": False}}
        for k, v in manifest["indices"].items():
            setattr(new, k, None if v is None else np.asarray(v, dtype=np.int64))
        # float32 -> JSON (float64 repr) -> float32 is exact
        new.latent_stats_ = [
            (np.asarray(m, dtype=np.float32), np.asarray(sd, dtype=np.float32)) for m, sd in manifest["latent_stats"]
        ]
        for k, v in manifest["attributes"].items():
            setattr(new, k, v)
        flat = torch.load(path / _CHECKPOINTS, weights_only=True)
        new.checkpoints_ = [[flat[f"{s}/{r}"] for r in range(new.n_slices + 1)] for s in range(new.n_shards)]
        return new

    def shards_summary(self) -> pd.DataFrame:
        """Training cells per shard and slice."""
        return pd.DataFrame(
            [[part.size for part in slices] for slices in self.slices_],
            index=pd.Index(range(self.n_shards), name="shard"),
            columns=pd.Index(range(self.n_slices), name="slice"),
        )


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return repr(value)
