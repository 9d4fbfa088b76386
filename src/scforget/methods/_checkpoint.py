"""The rewind checkpoint: the weights recorded early in training that ``method="rewind"`` starts from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning.pytorch.callbacks import Callback

from scforget._core import check_number

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

#: Model attribute holding the rewind checkpoint (saved with the model; dropped by every unlearning).
CHECKPOINT_ATTR = "rewind_checkpoint_"
#: Share of the training epochs after which scforget's models record their rewind checkpoint.
DEFAULT_REWIND_FRACTION = 0.03


def check_fraction(value: Any, argument: str, *, allow_none: bool = False) -> float | None:
    """``value`` as a share of the epochs strictly between 0 and 1 (``None`` if allowed)."""
    return check_number(
        value, argument, minimum=0, maximum=1, exclusive_minimum=True, exclusive_maximum=True, allow_none=allow_none
    )


class RewindCheckpoint(Callback):
    """Lightning callback recording the module's weights early in training, for ``method="rewind"``.

    After epoch ``max(1, round(fraction * max_epochs))`` it copies the module's state (weights and
    BatchNorm statistics) to the CPU; when training ends it stores that copy, the epoch, the epochs
    run and the final KL weight in ``model.rewind_checkpoint_`` (saved with the model). scforget's
    models (:class:`scforget.model.SCVI`, :class:`scforget.model.CondSCVI`) add this callback to
    their first :meth:`train` call by themselves; for a stock scvi-tools model pass it yourself.

    The checkpoint has seen the training cells for a few epochs, so it is as sensitive as the model:
    every unlearning drops it from the model it returns (a ``retrain`` records a fresh one).

    Parameters
    ----------
    model
        The scvi-tools model being trained (the checkpoint is stored on it).
    fraction
        Share of the training epochs after which to record (0 < fraction < 1).

    Examples
    --------
    >>> model = scvi.model.SCVI(adata, gene_likelihood="nb")
    >>> model.train(max_epochs=100, callbacks=[scforget.train.RewindCheckpoint(model)])
    >>> new = scforget.unlearn(model, forget, method="rewind")
    """

    def __init__(self, model: BaseModelClass, fraction: float = DEFAULT_REWIND_FRACTION):
        super().__init__()
        self.model = model
        self.fraction = check_fraction(fraction, "fraction")
        self.epoch: int | None = None
        self.state: dict[str, Any] | None = None
        self.kl_weight: float | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        """Check the callback belongs to the model being trained; fix the epoch to record."""
        if pl_module.module is not getattr(self.model, "module", None):
            raise ValueError(
                "This RewindCheckpoint was made for another model than the one being trained: pass "
                "callbacks=[scforget.train.RewindCheckpoint(model)] with the model whose train() you call."
            )
        epochs = trainer.max_epochs
        epoch = max(1, round(self.fraction * int(epochs))) if epochs is not None and epochs > 0 else None
        # a checkpoint at the last epoch would be the trained model itself, not an early state
        self.epoch = epoch if epoch is not None and epoch < epochs else None
        self.state, self.kl_weight = None, None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """Copy the module's state after the chosen epoch; keep the KL weight the epoch trained with."""
        kl = getattr(pl_module, "kl_weight", None)
        self.kl_weight = None if kl is None else float(kl)
        if int(trainer.current_epoch) + 1 == self.epoch:
            self.state = {k: v.detach().cpu().clone() for k, v in pl_module.module.state_dict().items()}

    def on_train_end(self, trainer, pl_module) -> None:
        """Store the checkpoint on the model (nothing if training stopped at or before the chosen epoch)."""
        epochs_run = int(trainer.current_epoch)
        if self.state is None or epochs_run <= int(self.epoch):
            setattr(self.model, CHECKPOINT_ATTR, None)
        else:
            checkpoint = {
                "epoch": int(self.epoch),
                "epochs_run": epochs_run,
                "kl_weight": self.kl_weight,
                "state_dict": self.state,
            }
            setattr(self.model, CHECKPOINT_ATTR, checkpoint)
        self.state = None


def rewind_checkpoint(model: Any) -> dict[str, Any] | None:
    """The model's rewind checkpoint, or ``None``."""
    return getattr(model, CHECKPOINT_ATTR, None)
