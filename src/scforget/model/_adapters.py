"""Per-donor adapters on a frozen core scVI (mixed-privacy forgetting): a donor is forgotten by dropping its columns."""

from __future__ import annotations

import hashlib
import inspect
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import scvi
import torch

from scforget import _compat
from scforget._core import (
    check_bool,
    check_int,
    check_number,
    close_matches,
    default_max_epochs,
    quiet_training,
    resolve_seed,
    seeded,
    split_cells,
)

from ._scvi import SCVI

if TYPE_CHECKING:
    from anndata import AnnData

#: Architecture an adapter model needs, and why (refused if the caller asks for something else).
_FIXED = {
    "use_batch_norm": ("none", "BatchNorm's running statistics would move while a donor is mapped"),
    "use_layer_norm": ("both", "LayerNorm (without affine parameters) normalises without shared state"),
    "encode_covariates": (True, "the encoder needs the donor columns so that mapping can adapt it"),
    "batch_representation": ("one-hot", "a donor's parameters must be its own columns, not a shared embedding"),
    "use_observed_lib_size": (True, "a learned library prior keeps per-donor statistics of every donor's cells"),
}


def donor_seed(seed: int, donor: str) -> int:
    """Seed of the mapping run of ``donor``: depends on the run's seed and the donor's name only."""
    name = int.from_bytes(hashlib.sha256(str(donor).encode()).digest()[:8], "little")
    return int(np.random.SeedSequence([int(seed), name]).generate_state(1)[0])


def _tensor_digest(name: str, tensor: torch.Tensor) -> str:
    t = tensor.detach().cpu().contiguous()
    h = hashlib.sha256()
    h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()


class AdapterSCVI(SCVI):
    """scVI made of a frozen core and one adapter per donor, so that a donor is forgotten exactly and at no cost.

    The donor is the model's batch: every layer that reads covariates has one column per donor.
    :meth:`train` trains the core (every parameter) on the cells of ``core_donors`` only, cells that
    will never be deleted (a consented or public reference). :meth:`map_donors` then adds each other
    donor in its own training run in which only that donor's columns move (scArches-style
    query mapping, with the encoder adapted too), so a donor's parameters depend on nothing but the
    frozen core and that donor's cells. ``unlearn(cells_of_donor, method="adapter_drop")`` resets
    the donor's columns to their value before mapping: the result is bit for bit the model that
    never saw the donor. :meth:`certificate` hashes the core and each donor's parameters; mapping
    and dropping verify it and fail loudly if a shared parameter moved.

    A donor that is not mapped (or was dropped) uses the mean of the core donors' columns, so its
    cells are represented like core cells.

    Saved models load here with :meth:`load` and in plain scvi-tools as an scVI:
    ``scvi.model.SCVI.load(path, adata, allowed_classes_names_list=["AdapterSCVI"])``.

    The architecture is fixed where the guarantee needs it: LayerNorm instead of BatchNorm
    (BatchNorm's running statistics are shared state that mapping would move), covariates in the
    encoder, a one-hot donor representation and the observed library size (scVI's learned library
    prior stores statistics of every donor's cells). Asking for anything else raises.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata` (``donor_key`` is the batch).
    core_donors
        Donors (categories of ``donor_key``) whose cells form the core.
    **kwargs
        Arguments of :class:`scforget.model.SCVI` (``n_hidden``, ``n_latent``, ``dispersion``...).

    Examples
    --------
    >>> adata.obs["donor"] = sf.data.pseudo_donors(adata, 8, seed=0)
    >>> sf.model.AdapterSCVI.setup_anndata(adata, donor_key="donor")
    >>> model = sf.model.AdapterSCVI(adata, core_donors=["donor_0", "donor_1", "donor_2"])
    >>> model.train(max_epochs=100)
    >>> model.map_donors(["donor_3", "donor_4"], max_epochs=50)
    >>> forgotten = model.unlearn(adata.obs["donor"] == "donor_3", method="adapter_drop")
    """

    #: The kind of model built for deletion (methods declare the kinds they run on).
    deletion_design = "adapters"

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        donor_key: str | None = None,
        layer: str | None = None,
        labels_key: str | None = None,
        size_factor_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        *,
        batch_key: str | None = None,
        **kwargs: Any,
    ):
        """Register ``adata``: :meth:`scvi.model.SCVI.setup_anndata` with the donor column as the batch.

        Parameters
        ----------
        adata
            AnnData with raw counts.
        donor_key
            ``adata.obs`` column of the donors (or any group to delete whole).
        layer, labels_key, size_factor_key, categorical_covariate_keys, continuous_covariate_keys
            As in scvi-tools.
        batch_key
            Same as ``donor_key`` (the name scvi-tools uses; given when a saved model is loaded).
        **kwargs
            Passed to scvi-tools (e.g. ``source_registry`` when loading).
        """
        if donor_key is not None and batch_key is not None and donor_key != batch_key:
            raise ValueError(f"`donor_key`={donor_key!r} and `batch_key`={batch_key!r} differ; pass one of them.")
        key = donor_key if donor_key is not None else batch_key
        if key is None:
            raise TypeError("`donor_key` is required: the adata.obs column of the donors (e.g. donor_key='donor').")
        if key not in adata.obs.columns:
            raise KeyError(f"`donor_key`={key!r} is not a column of adata.obs.{close_matches(key, adata.obs)}")
        return super().setup_anndata(
            adata,
            layer=layer,
            batch_key=key,
            labels_key=labels_key,
            size_factor_key=size_factor_key,
            categorical_covariate_keys=categorical_covariate_keys,
            continuous_covariate_keys=continuous_covariate_keys,
            **kwargs,
        )

    def __init__(self, adata: AnnData | None = None, core_donors: Sequence[str] | None = None, **kwargs: Any):
        for key, (value, why) in _FIXED.items():
            if key in kwargs and kwargs[key] != value:
                raise ValueError(f"AdapterSCVI needs `{key}={value!r}` ({why}); got {kwargs[key]!r}.")
            kwargs[key] = value
        super().__init__(adata, **kwargs)
        self.init_params_ = _scvi_init_params(self, adata, kwargs)
        self.core_donors_: list[str] | None = None
        #: Positions of the training cells of each mapped donor.
        self.mapped_cells_: dict[str, np.ndarray] = {}
        #: How each mapped donor was mapped (epochs, batch size, plan arguments, seed).
        self.adapter_fit_: dict[str, dict] = {}
        if core_donors is not None:
            self.core_donors_ = self._check_core_donors(core_donors)

    # -- donors and their columns ----------------------------------------------------------------------
    @property
    def donors(self) -> list[str]:
        """Every donor (category of the donor column), in the order of the model's columns."""
        return _compat.batch_categories(self)

    @property
    def donor_key(self) -> str:
        """The ``adata.obs`` column of the donors."""
        return _compat.setup_args(self)["batch_key"]

    def _check_core_donors(self, core_donors: Sequence[str]) -> list[str]:
        donors = self.donors
        out = []
        for d in _names(core_donors, "core_donors"):
            if str(d) not in donors:
                raise KeyError(f"`core_donors`: {d!r} is not a donor of the model.{close_matches(str(d), donors)}")
            out.append(str(d))
        if not out:
            raise ValueError("`core_donors` is empty; name the donors whose cells form the core.")
        if len(set(out)) != len(out):
            raise ValueError("`core_donors` names a donor twice.")
        if len(out) == len(donors):
            raise ValueError("Every donor is in `core_donors`, so none could be mapped or dropped; leave some out.")
        return out

    def _slots(self) -> list[tuple[str, int, int]]:
        return _compat.batch_columns(self.module)

    def _donor_index(self) -> dict[str, int]:
        return {d: i for i, d in enumerate(self.donors)}

    def _core_columns(self) -> list[int]:
        index = self._donor_index()
        return [index[d] for d in self.core_donors_ or []]

    def _reset_columns(self, donors: Sequence[str]) -> int:
        """Set the donors' columns to the mean of the core donors' columns (their value before mapping)."""
        index, core = self._donor_index(), self._core_columns()
        params = dict(self.module.named_parameters())
        n = 0
        with torch.no_grad():
            for name, start, _ in self._slots():
                p = params[name]
                reference = p[:, [start + c for c in core]].mean(1)
                for d in donors:
                    p[:, start + index[d]] = reference
                    n += reference.numel()
        return n

    def _core_digests(self) -> dict[str, str]:
        """SHA-256 of every parameter and buffer, without the columns of the non-core donors."""
        slots = {name: (start, n) for name, start, n in self._slots()}
        keep_donors = set(self._core_columns())
        out = {}
        for name, tensor in self.module.state_dict().items():
            if name in slots:
                start, n = slots[name]
                drop = {start + i for i in range(n) if i not in keep_donors}
                keep = [j for j in range(tensor.shape[1]) if j not in drop]
                tensor = tensor[:, keep]
            out[name] = _tensor_digest(name, tensor)
        return out

    def _donor_digest(self, donor: str) -> str:
        col = self._donor_index()[donor]
        params = dict(self.module.named_parameters())
        h = hashlib.sha256()
        for name, start, _ in self._slots():
            h.update(_tensor_digest(name, params[name][:, start + col]).encode())
        return h.hexdigest()

    def certificate(self) -> dict[str, Any]:
        """SHA-256 fingerprints of the core and of each mapped donor's parameters.

        ``"core"`` covers every parameter and normalisation buffer of the module except the columns
        of the non-core donors; ``"donors"`` has one digest per mapped donor (its columns). Equal core
        digests before mapping, after mapping and after dropping prove that no shared parameter moved.

        Returns
        -------
        ``{"algorithm": "sha256", "core": ..., "donors": {donor: ...}}``.
        """
        self._require_core()
        core = hashlib.sha256("".join(f"{k}:{v};" for k, v in sorted(self._core_digests().items())).encode())
        return {
            "algorithm": "sha256",
            "core": core.hexdigest(),
            "donors": {d: self._donor_digest(d) for d in sorted(self.mapped_cells_)},
        }

    def _require_core(self) -> None:
        if self.core_donors_ is None:
            raise RuntimeError("The model has no `core_donors`; build it with AdapterSCVI(adata, core_donors=[...]).")

    # -- training ------------------------------------------------------------------------------------
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
        **trainer_kwargs: Any,
    ) -> None:
        """Train the core: every parameter, on the training cells of the core donors only.

        The cells are split into training, validation and test cells as scvi-tools does (e.g.
        ``datasplitter_kwargs=split.datasplitter_kwargs()``); the core trains on the core donors'
        training cells and validates on their validation cells. The other donors' training cells are
        the ones :meth:`map_donors` maps; validation and test cells are never trained on. Afterwards
        every non-core donor's columns are set to the mean of the core donors' columns.

        Parameters
        ----------
        max_epochs
            Epochs (default: scvi-tools' heuristic for the number of core cells).
        batch_size
            Minibatch size.
        train_size, validation_size, shuffle_set_split, datasplitter_kwargs
            How cells are split, as in :meth:`scvi.model.SCVI.train`.
        plan_kwargs
            Arguments of scvi-tools' training plan.
        seed
            Seed of the split and the training (``None`` follows :attr:`scvi.settings.seed`).
        accelerator, devices
            Passed to Lightning.
        **trainer_kwargs
            Arguments of :class:`scvi.train.Trainer`.
        """
        self._require_core()
        max_epochs = check_int(max_epochs, "max_epochs", minimum=1, allow_none=True)
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        check_bool(shuffle_set_split, "shuffle_set_split")
        seed = resolve_seed(seed)
        donors = self.adata.obs[self.donor_key].astype(str).to_numpy()
        core = np.flatnonzero(np.isin(donors, self.core_donors_))
        train, val, test = split_cells(
            self.adata_manager,
            seed=seed,
            train_size=train_size,
            validation_size=validation_size,
            shuffle_set_split=shuffle_set_split,
            datasplitter_kwargs=datasplitter_kwargs,
        )
        core_train, core_val = np.intersect1d(train, core), np.intersect1d(val, core)
        if core_train.size == 0:
            raise ValueError("No training cell belongs to a core donor; check `core_donors` and the split.")
        rest = np.setdiff1d(np.arange(self.adata.n_obs), np.union1d(core_train, core_val))
        epochs = default_max_epochs(core_train.size) if max_epochs is None else max_epochs
        with seeded(seed):
            super().train(
                rewind_fraction=None,  # adapters are dropped, not rewound
                max_epochs=epochs,
                batch_size=batch_size,
                datasplitter_kwargs={"external_indexing": [core_train, core_val, rest]},
                plan_kwargs=plan_kwargs,
                accelerator=accelerator,
                devices=devices,
                **{"enable_checkpointing": False, **trainer_kwargs},
            )
        self.training_recipe_["seed"] = seed
        self.train_indices, self.validation_indices, self.test_indices = core_train, val, test
        self.mapped_cells_, self.adapter_fit_ = {}, {}
        self._reset_columns([d for d in self.donors if d not in self.core_donors_])
        self.module.eval()

    def mapping_candidates(self, donor: str) -> np.ndarray:
        """Positions of the cells of ``donor`` that :meth:`map_donors` trains on.

        These are its cells that are neither validation nor test cells of the split made by :meth:`train`.
        """
        cells = np.flatnonzero(self.adata.obs[self.donor_key].astype(str).to_numpy() == str(donor))
        never = np.union1d(np.asarray(self.validation_indices), np.asarray(self.test_indices))
        return np.setdiff1d(cells, never)

    def map_donors(
        self,
        donors: Sequence[str],
        *,
        max_epochs: int | None = None,
        batch_size: int = 128,
        lr: float = 1e-3,
        plan_kwargs: dict | None = None,
        seed: int | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        **trainer_kwargs: Any,
    ) -> dict[str, Any]:
        """Add donors to the model, each in its own training run that moves only that donor's columns.

        Every parameter is frozen except the weights that read the donor columns, and a gradient mask
        keeps all but the mapped donor's columns at zero gradient; Adam without weight decay then
        leaves them exactly where they were. The run is seeded from ``seed`` and the donor's name
        only, so a donor's parameters depend on nothing but the frozen core and its own cells, and
        mapping donors in another order or together with others gives the same parameters. The
        certificate is checked around every run: if a shared parameter or another donor's columns
        moved, the model is restored and a ``RuntimeError`` is raised.

        Parameters
        ----------
        donors
            Donors to map (not core donors, not already mapped).
        max_epochs
            Epochs of each donor's run (default: scvi-tools' heuristic for the donor's cell count).
        batch_size
            Minibatch size.
        lr
            Learning rate of Adam.
        plan_kwargs
            Other arguments of scvi-tools' training plan (``weight_decay`` must stay 0 and
            ``optimizer`` Adam: decay or AdamW would move the frozen columns).
        seed
            Seed of the runs (``None`` follows :attr:`scvi.settings.seed`).
        accelerator, devices
            Passed to Lightning.
        **trainer_kwargs
            Arguments of :class:`scvi.train.Trainer`.

        Returns
        -------
        The certificate after mapping (see :meth:`certificate`).
        """
        # ---- validation, before any work ----
        self._require_core()
        if not _compat.check_if_trained(self):
            raise RuntimeError("The core is not trained yet; call `model.train()` first.")
        names, known = _names(donors, "donors"), self.donors
        if len(set(names)) != len(names):
            raise ValueError("`donors` names a donor twice.")
        for d in names:
            if d not in known:
                raise KeyError(f"`donors`: {d!r} is not a donor of the model.{close_matches(d, known)}")
            if d in self.core_donors_:
                raise ValueError(f"`donors`: {d!r} is a core donor; its cells are in the core already.")
            if d in self.mapped_cells_:
                raise ValueError(
                    f"`donors`: {d!r} is mapped already. To map it again without some cells, use "
                    "unlearn(those_cells, method='adapter_remap')."
                )
        cells = {d: self.mapping_candidates(d) for d in names}
        empty = [d for d, c in cells.items() if c.size == 0]
        if empty:
            raise ValueError(f"`donors`: {empty} have no training cells (all are validation or test cells).")
        max_epochs = check_int(max_epochs, "max_epochs", minimum=1, allow_none=True)
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        lr = check_number(lr, "lr", minimum=0, exclusive_minimum=True)
        plan = dict(plan_kwargs or {})
        if plan.get("weight_decay", 0.0) != 0:
            raise ValueError("`plan_kwargs['weight_decay']` must be 0: weight decay moves the frozen columns.")
        if plan.get("optimizer", "Adam") != "Adam":
            raise ValueError("`plan_kwargs['optimizer']` must be 'Adam' (AdamW decays every column).")
        if "lr" in plan:
            raise TypeError("Pass the learning rate as `lr`, not in `plan_kwargs`.")
        seed = resolve_seed(seed)

        # ---- work ----
        with quiet_training():  # one trainer run per donor: keep Lightning's per-run banners out of notebooks
            for d in names:
                epochs = default_max_epochs(cells[d].size) if max_epochs is None else max_epochs
                fit = {"max_epochs": int(epochs), "batch_size": batch_size, "lr": lr, "plan_kwargs": plan, "seed": seed}
                self._map_one(d, cells[d], fit, accelerator=accelerator, devices=devices, trainer_kwargs=trainer_kwargs)
        return self.certificate()

    def _map_one(
        self, donor: str, cells: np.ndarray, fit: dict, *, accelerator: Any, devices: Any, trainer_kwargs: dict
    ) -> float:
        """Train ``donor``'s columns on ``cells`` with everything else frozen; verify the certificate."""
        before_core, before = self._core_digests(), self.certificate()["donors"]
        snapshot = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        history, recipe = self.history_, getattr(self, "training_recipe_", None)
        split = (self.train_indices, self.validation_indices, self.test_indices)
        params = dict(self.module.named_parameters())
        flags = {n: p.requires_grad for n, p in params.items()}
        col = self._donor_index()[donor]
        hooks = []
        start = time.perf_counter()
        try:
            _freeze_to_donor(self.module, self._slots(), col, hooks)
            self.module.train()
            rest = np.setdiff1d(np.arange(self.adata.n_obs), cells)
            with seeded(donor_seed(fit["seed"], donor)):
                # scvi-tools' own training loop, without the scforget recipe recording (the recipe is the core's)
                scvi.model.SCVI.train(
                    self,
                    max_epochs=fit["max_epochs"],
                    batch_size=fit["batch_size"],
                    datasplitter_kwargs={"external_indexing": [cells, np.zeros(0, dtype=np.int64), rest]},
                    plan_kwargs={**fit["plan_kwargs"], "lr": fit["lr"], "weight_decay": 0.0, "optimizer": "Adam"},
                    accelerator=accelerator,
                    devices=devices,
                    **{"enable_checkpointing": False, "enable_progress_bar": False, **trainer_kwargs},
                )
        finally:
            for h in hooks:
                h.remove()
            for n, p in params.items():
                p.requires_grad_(flags[n])
            self.history_ = history
            self.train_indices, self.validation_indices, self.test_indices = split
            if recipe is not None:
                self.training_recipe_ = recipe
            self.module.eval()
        seconds = time.perf_counter() - start
        after_core = self._core_digests()
        moved = sorted(k for k in before_core if after_core[k] != before_core[k])
        others = {d: self._donor_digest(d) for d in before}
        moved += [f"columns of donor {d!r}" for d in before if others[d] != before[d]]
        if moved:
            self.module.load_state_dict(snapshot)
            raise RuntimeError(
                f"Mapping donor {donor!r} moved shared parameters: {', '.join(moved)}. The model was restored; "
                "the adapter guarantee does not hold for this configuration."
            )
        self.mapped_cells_[donor] = np.asarray(cells, dtype=np.int64)
        self.adapter_fit_[donor] = dict(fit)
        self.train_indices = np.union1d(np.asarray(self.train_indices), cells)
        return seconds

    def drop_donors(self, donors: Sequence[str]) -> int:
        """Reset the donors' columns and forget their cells' positions (used by ``method="adapter_drop"``).

        Use :func:`scforget.unlearn` with ``method="adapter_drop"`` instead: it validates the request,
        works on a copy and writes the unlearning record.

        Returns
        -------
        The number of parameter entries reset.
        """
        n = self._reset_columns(list(donors))
        for d in donors:
            cells = self.mapped_cells_.pop(d)
            self.adapter_fit_.pop(d, None)
            self.train_indices = np.setdiff1d(np.asarray(self.train_indices), cells)
        return n

    def remap_donor(self, donor: str, cells: np.ndarray, *, accelerator: Any = "auto", devices: Any = "auto") -> float:
        """Map ``donor`` again on ``cells`` with its original recipe (used by ``method="adapter_remap"``).

        Returns
        -------
        Wall time of the mapping run in seconds (0 if no cell is left).
        """
        fit = self.adapter_fit_[donor]
        self.drop_donors([donor])
        if len(cells) == 0:
            return 0.0
        return self._map_one(donor, np.asarray(cells), fit, accelerator=accelerator, devices=devices, trainer_kwargs={})

    def donor_of(self, positions: np.ndarray) -> np.ndarray:
        """Donor of each cell position."""
        return self.adata.obs[self.donor_key].astype(str).to_numpy()[np.asarray(positions, dtype=np.int64)]

    def adapters_summary(self) -> dict[str, Any]:
        """Core and mapped donors with their cell counts (no cell names)."""
        return {
            "core_donors": list(self.core_donors_ or []),
            "n_core_cells": int(np.setdiff1d(self.train_indices, self._mapped_positions()).size),
            "mapped": {d: int(c.size) for d, c in sorted(self.mapped_cells_.items())},
        }

    def _mapped_positions(self) -> np.ndarray:
        if not self.mapped_cells_:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate(list(self.mapped_cells_.values()))


def _scvi_init_params(model: SCVI, adata: Any, kwargs: dict) -> dict:
    """``init_params_`` as :class:`SCVI` records it, so a saved adapter model also loads as a plain scVI."""
    bound = inspect.signature(SCVI.__init__).bind(model, adata, **kwargs)
    bound.apply_defaults()
    args = {k: v for k, v in bound.arguments.items() if k not in ("self", "adata", "registry")}
    return {"kwargs": {"kwargs": dict(args.pop("kwargs", {}))}, "non_kwargs": args}


def _names(value: Any, argument: str) -> list[str]:
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise TypeError(f"`{argument}` must be a list of donor names; got {value!r}.")
    return [str(v) for v in value]


def _freeze_to_donor(module: torch.nn.Module, slots: list[tuple[str, int, int]], column: int, hooks: list[Any]) -> None:
    """Freeze every parameter except the tensors holding donor columns, masked to donor ``column``."""
    params = dict(module.named_parameters())
    for p in params.values():
        p.requires_grad_(False)
    for name, start, _ in slots:
        p = params[name]
        p.requires_grad_(True)
        mask = torch.zeros_like(p)
        mask[:, start + column] = 1.0
        hooks.append(p.register_hook(lambda grad, m=mask: grad * m))
