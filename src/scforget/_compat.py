"""The only module allowed to touch private scvi-tools names.

Everything here is a thin wrapper so that a change in scvi-tools breaks in one place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass


def is_minified(model: BaseModelClass) -> bool:
    """Whether the model's AnnData is minified (holds no counts)."""
    return getattr(model, "minified_data_type", None) is not None


class BackedRows:
    """Minibatches of the rows ``positions`` of a backed AnnData, in the order given, read by ranges.

    scvi-tools' ``AnnDataLoader`` hands its ``AnnTorchDataset`` the rows of every minibatch as a
    list, which a backed AnnData reads row by row (two HDF5 reads per cell), and the dataset sorts
    them for HDF5, so a minibatch of unsorted rows comes back in another order than asked. Here
    each minibatch is read from the same dataset as one ``slice`` when its rows, sorted, are a run
    (one read), else as its sorted rows, and is put back in the order of ``positions``.
    """

    def __init__(self, dataset, positions: np.ndarray, batch_size: int):
        self.dataset = dataset
        self.positions, self.batch_size = np.asarray(positions, dtype=np.int64), int(batch_size)

    def __len__(self) -> int:
        return -(-self.positions.size // self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        import torch

        for start in range(0, self.positions.size, self.batch_size):
            rows = self.positions[start : start + self.batch_size]
            order = np.argsort(rows, kind="stable")
            ranked = rows[order]
            run = ranked[-1] - ranked[0] + 1 == ranked.size and np.all(np.diff(ranked) == 1)
            batch = self.dataset[slice(int(ranked[0]), int(ranked[-1]) + 1) if run else ranked]
            batch = {k: torch.as_tensor(v) for k, v in batch.items()}
            if not np.array_equal(order, np.arange(rows.size)):
                back = torch.as_tensor(np.argsort(order))
                batch = {k: v[back] for k, v in batch.items()}
            yield batch


def make_data_loader(model: BaseModelClass, indices, batch_size: int | None = None, shuffle: bool = False, **kwargs):
    """Inference data loader over ``indices`` of ``model.adata`` (wraps ``model._make_data_loader``).

    On a backed AnnData read by scvi-tools' plain ``AnnDataLoader``, in-order minibatches come
    instead from the same ``AnnTorchDataset`` through :class:`BackedRows`: the same tensors, rows in
    the order of ``indices``, contiguous rows read at once.
    """
    from scvi import settings
    from scvi.dataloaders import AnnDataLoader

    idx = np.asarray(indices)
    if (
        not shuffle
        and not kwargs
        and model.adata.isbacked
        and model._data_loader_cls is AnnDataLoader
        and idx.dtype.kind in "iu"
        and idx.size > 0
    ):
        size = settings.batch_size if batch_size is None else batch_size
        return BackedRows(model.adata_manager.create_torch_dataset(), idx, size)
    return model._make_data_loader(adata=model.adata, indices=indices, batch_size=batch_size, shuffle=shuffle, **kwargs)


def check_if_trained(model: BaseModelClass) -> bool:
    """Whether the model has been trained, without warning."""
    return bool(getattr(model, "is_trained_", False))


def setup_args(model: BaseModelClass) -> dict:
    """The arguments the model's AnnData was set up with."""
    return dict(model.registry["setup_args"])


def setup_method_name(model: BaseModelClass) -> str:
    """Name of the setup method used for the model's data (``setup_anndata`` or ``setup_mudata``)."""
    return model.registry.get("setup_method_name", "setup_anndata")


def default_max_epochs(n_obs: int) -> int:
    """scvi-tools' heuristic number of epochs for ``n_obs`` cells (used when ``max_epochs=None``)."""
    from scvi.model._utils import get_max_epochs_heuristic

    return int(get_max_epochs_heuristic(n_obs))


def registered_anndata(model: BaseModelClass, key: str = "X"):
    """The AnnData holding the registered field ``key``: ``model.adata``, or its modality for MuData."""
    entry = model.adata_manager.data_registry.get(key, {})
    mod_key = entry.get("mod_key", None) if hasattr(entry, "get") else None
    return model.adata.mod[mod_key] if mod_key is not None else model.adata


def registered_var_names(model: BaseModelClass):
    """Gene names recorded when the model's data was set up, or ``None`` if not recorded."""
    try:
        state = model.adata_manager.get_state_registry("X")
    except (KeyError, AttributeError):
        return None
    return state.get("column_names", None)


def module_inference(module, tensors: dict, **kwargs) -> dict:
    """Run ``module.inference`` on a minibatch (wraps ``module._get_inference_input``)."""
    return dict(module.inference(**inference_input(module, tensors), **kwargs))


def module_generative(module, tensors: dict, inference_outputs: dict, **kwargs) -> dict:
    """Run ``module.generative`` on a minibatch (wraps ``module._get_generative_input``)."""
    return dict(module.generative(**generative_input(module, tensors, inference_outputs), **kwargs))


def inference_input(module, tensors: dict) -> dict:
    """Keyword arguments of ``module.inference`` for a minibatch (wraps ``module._get_inference_input``)."""
    return module._get_inference_input(tensors)


def generative_input(module, tensors: dict, inference_outputs: dict) -> dict:
    """Keyword arguments of ``module.generative`` (wraps ``module._get_generative_input``)."""
    return module._get_generative_input(tensors, inference_outputs)


@contextlib.contextmanager
def manager_in_use(model: BaseModelClass) -> Iterator[None]:
    """Make ``model``'s own data manager the one its class finds for ``model.adata`` inside the block.

    scvi-tools keeps, per model class, the most recent manager set up for each AnnData (by the uuid
    in ``adata.uns``). After ``setup_anndata`` on a *copy* of the AnnData that entry points at the
    copy, and a new model on the original AnnData fails with "Did you make a copy?". The class's
    entry is restored on exit, so the user's own registrations are left as they were
    (wraps ``_setup_adata_manager_store``).
    """
    store = type(model)._setup_adata_manager_store
    uuid = model.adata_manager.adata_uuid
    missing = object()
    previous = store.get(uuid, missing)
    store[uuid] = model.adata_manager
    try:
        yield
    finally:
        if previous is missing:
            store.pop(uuid, None)
        else:
            store[uuid] = previous


def batch_columns(module) -> list[tuple[str, int, int]]:
    """Every parameter slot that reads scvi-tools' batch one-hot: ``(parameter name, first column, n_batch)``.

    In :class:`scvi.nn.FCLayers`, a layer that receives covariates reads ``concat(x, continuous,
    one-hot of each categorical)``, the batch being the first categorical of scVI's encoders and
    decoder; so the batch columns of that layer's weight start after ``x`` and the continuous
    covariates. With ``dispersion="gene-batch"`` the dispersion ``px_r`` has one column per batch.
    This relies on that layout (scvi-tools 1.4), hence its place here.
    """
    from scvi.nn import FCLayers

    names = {id(p): n for n, p in module.named_parameters()}
    out = []
    for sub in module.modules():
        if not isinstance(sub, FCLayers) or not sub.n_cat_list or sub.n_cat_list[0] == 0:
            continue
        n_cont = sub.n_cov - sum(sub.n_cat_list)
        for i, layers in enumerate(sub.fc_layers):
            if sub.inject_into_layer(i):
                linear = layers[0]
                out.append((names[id(linear.weight)], linear.in_features - sub.n_cov + n_cont, sub.n_cat_list[0]))
    if getattr(module, "dispersion", None) == "gene-batch":
        out.append(("px_r", 0, int(module.n_batch)))
    return out


def batch_categories(model: BaseModelClass) -> list[str]:
    """The categories of the model's registered batch field, in the order of its one-hot columns."""
    from scvi import REGISTRY_KEYS

    mapping = model.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping
    return [str(c) for c in mapping]


def download(url: str, dir_path: str, file_name: str) -> None:
    """Fetch ``file_name`` into ``dir_path`` from ``url`` unless it is there (scvi-tools' ``backup_url``)."""
    from scvi.data._download import _download

    _download(url, dir_path, file_name)


@contextlib.contextmanager
def model_on(model: BaseModelClass, adata) -> Iterator[BaseModelClass]:
    """A view of ``model`` on another AnnData, set up the scvi-tools way; ``model`` itself is not changed.

    The view shares the module (the weights) and has its own identity, so scvi-tools registers the
    AnnData's transferred setup (categories mapped to the model's registry) under the view alone; that
    registration is removed on exit. ``adata`` is modified by the transfer (pass a copy).
    """
    import copy
    from uuid import uuid4

    view = copy.copy(model)
    view.id = str(uuid4())
    try:
        view.adata = adata  # validates and transfers the setup (scvi-tools' adata setter)
        yield view
    finally:
        type(model)._per_instance_manager_store.pop(view.id, None)


@contextlib.contextmanager
def unminified(model: BaseModelClass, adata) -> Iterator[BaseModelClass]:
    """The weights of a minified ``model`` (latent only) loaded on ``adata``, which holds the counts.

    scvi-tools restores a full model when a saved minified one is loaded with counts; this does that
    through a temporary directory (our own file, written just now). ``adata`` gets the setup (pass a copy).
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="scforget-unminify-") as tmp:
        model.save(tmp, overwrite=True, save_anndata=False)
        full = type(model).load(tmp, adata=adata)
        try:
            yield full
        finally:
            type(model)._per_instance_manager_store.pop(full.id, None)


def uses_distributed_sampler(strategy) -> bool:
    """Whether a Lightning ``strategy`` needs distributed samplers (scvi-tools' own rule: any DDP flavour)."""
    from scvi.model._utils import use_distributed_sampler

    return bool(use_distributed_sampler(strategy))
