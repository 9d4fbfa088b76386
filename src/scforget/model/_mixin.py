"""UnlearningMixin: adds ``unlearn()`` and recipe recording to scvi-tools model classes."""

from __future__ import annotations

import inspect
import time
from typing import TYPE_CHECKING, Any

from scforget import _compat
from scforget._core import (
    check_bool,
    checked_model_dir,
    copy_bookkeeping,
    init_kwargs,
    record_cell_order,
    record_training_call,
    training_positions,
    with_ddp_strategy,
)
from scforget.methods import unlearn as _unlearn
from scforget.methods._checkpoint import (
    CHECKPOINT_ATTR,
    DEFAULT_REWIND_FRACTION,
    RewindCheckpoint,
    check_fraction,
)

if TYPE_CHECKING:
    from typing import Self

    from scvi.model.base import BaseModelClass

    from scforget.data import CellSpec


class UnlearningMixin:
    """Mixin for scvi-tools model classes that adds :meth:`unlearn` and :meth:`from_scvi_model`.

    It also records the arguments of :meth:`train` in ``training_recipe_`` (saved with the model),
    with the training's wall time and number of training cells, so that the ``retrain`` reference
    uses exactly the same recipe and its cost can be estimated without training; and a digest of the
    AnnData's cell order (``obs_order_digest_``), so that a model loaded with its cells in another
    order is refused instead of pointing its positional indices at other cells.
    """

    #: The scvi-tools class this scforget class extends (set by subclasses).
    _scvi_parent: type

    def train(self, *args: Any, rewind_fraction: float | None = DEFAULT_REWIND_FRACTION, **kwargs: Any):
        """Train the model (see the parent class); record the recipe and a rewind checkpoint.

        Takes every argument of the parent class's ``train``, plus:

        Parameters
        ----------
        rewind_fraction
            On the first training of the model, record its weights after this share of the epochs in
            ``rewind_checkpoint_`` (see :class:`scforget.train.RewindCheckpoint`), which
            ``unlearn(method="rewind")`` starts from; ``None`` records nothing. Training an already
            trained model again drops the checkpoint (it no longer precedes the final weights).
        """
        rewind_fraction = check_fraction(rewind_fraction, "rewind_fraction", allow_none=True)
        parent_train = super().train  # type: ignore[misc]
        bound = inspect.signature(parent_train).bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        for name, p in inspect.signature(parent_train).parameters.items():
            if p.kind == p.VAR_KEYWORD:
                arguments.update(arguments.pop(name, {}) or {})
        if arguments.get("max_epochs") is None:
            arguments["max_epochs"] = _compat.default_max_epochs(self.adata.n_obs)  # type: ignore[attr-defined]
        arguments["rewind_fraction"] = rewind_fraction
        first = not getattr(self, "is_trained_", False)
        setattr(self, CHECKPOINT_ATTR, None)
        callbacks = list(kwargs.get("callbacks") or [])
        if first and rewind_fraction is not None and not any(isinstance(c, RewindCheckpoint) for c in callbacks):
            kwargs["callbacks"] = [*callbacks, RewindCheckpoint(self, rewind_fraction)]
        kwargs = with_ddp_strategy(kwargs)
        start = time.perf_counter()
        out = parent_train(*args, **kwargs)
        seconds = time.perf_counter() - start
        n_train = int(training_positions(self).size)  # type: ignore[arg-type]
        record_training_call(self, arguments, seconds=seconds, n_train_cells=n_train)  # type: ignore[arg-type]
        record_cell_order(self)  # type: ignore[arg-type]
        return out

    @classmethod
    def load(
        cls,
        dir_path: str,
        adata: Any = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        prefix: str | None = None,
        backup_url: str | None = None,
        *,
        trusted: bool = False,
        **kwargs: Any,
    ) -> Self:
        """Load a saved model as scvi-tools does, without running code from the file.

        scvi-tools unpickles ``model.pt`` with ``torch.load(weights_only=False)``, so a model file made
        by someone else can run code. Here the file is read first with torch's weights-only
        unpickler and an allowlist of what scvi-tools and scforget save (tensors, numpy arrays,
        pandas tables, plain containers); anything else raises
        :class:`~scforget.model.UnsafeModelFileError` before it runs. ``trusted=True`` skips the check,
        for files you made yourself.

        Parameters
        ----------
        dir_path, adata, accelerator, device, prefix, backup_url, **kwargs
            As in :meth:`scvi.model.base.BaseModelClass.load`.
        trusted
            Load with scvi-tools' full unpickler, unchecked.
        """
        trusted = check_bool(trusted, "trusted")
        if backup_url is not None:
            _compat.download(backup_url, dir_path, f"{prefix or ''}model.pt")
        with checked_model_dir(dir_path, prefix=prefix, trusted=trusted) as checked:
            return super().load(  # type: ignore[misc]
                checked, adata=adata, accelerator=accelerator, device=device, prefix=prefix, **kwargs
            )

    def unlearn(self, forget: CellSpec, method: str = "finetune", **kwargs: Any) -> Self:
        """Remove cells from the model: :func:`scforget.unlearn` on this model.

        Takes every argument of :func:`scforget.unlearn` (``inplace``, ``retain``, ``seed``,
        ``max_epochs``, ``batch_size``, ``plan_kwargs``, ``accelerator``, ``devices``, the method's
        hyper-parameters and Trainer arguments), with the same defaults and checks.

        Returns
        -------
        The unlearned model: a new object of the same class unless ``inplace=True``.
        """
        return _unlearn(self, forget, method, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_scvi_model(cls, scvi_model: BaseModelClass) -> Self:
        """Convert a trained stock scvi-tools model into this class without retraining.

        The AnnData is registered for this class with the same setup arguments (the stock model
        keeps working), the weights, training indices and history are copied, and the new model is
        put in eval mode, so its latent representation equals the source model's.

        Parameters
        ----------
        scvi_model
            A trained model of the parent scvi-tools class.

        Returns
        -------
        The converted model.
        """
        if not isinstance(scvi_model, cls._scvi_parent):
            raise TypeError(
                f"`scvi_model` must be a {cls._scvi_parent.__module__}.{cls._scvi_parent.__name__}; "
                f"got {type(scvi_model).__name__}."
            )
        if not _compat.check_if_trained(scvi_model):
            raise RuntimeError("`scvi_model` is not trained yet; call `scvi_model.train()` first.")
        if _compat.setup_method_name(scvi_model) != "setup_anndata":
            raise ValueError("Only models set up with `setup_anndata` can be converted.")
        adata = scvi_model.adata
        cls.setup_anndata(adata, **_compat.setup_args(scvi_model))  # type: ignore[attr-defined]
        new = cls(adata, **init_kwargs(scvi_model))  # type: ignore[call-arg]
        new.module.load_state_dict(scvi_model.module.state_dict())
        copy_bookkeeping(scvi_model, new)
        record_cell_order(new)
        new.to_device(scvi_model.device)
        new.module.eval()
        return new
