"""What a method receives: the resolved, validated unlearning request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class UnlearnContext:
    """Everything a method needs to run, resolved and validated by :func:`scforget.unlearn`.

    Attributes
    ----------
    forget
        Positions of the cells to forget (all were training cells).
    retain
        Positions of the training cells used as the retain set (all training cells, none forgotten).
    validation
        Positions of never-trained validation cells (may be empty); disjoint from ``forget``.
    max_epochs
        Epoch budget (resolved from the method's default when the user gave none).
    batch_size
        Minibatch size (the training recipe's when the user gave none).
    params
        The method's own hyper-parameters, checked against its signature, types and ranges.
    seed
        Seed of the run (``seed=None`` resolved from :attr:`scvi.settings.seed`); the run is already
        seeded with it.
    accelerator, devices
        Passed to Lightning.
    trainer_kwargs
        Extra keyword arguments for :class:`scvi.train.Trainer`.
    recipe
        How the input model was trained (epochs, batch size, plan arguments, cost); see
        :func:`scforget.methods.training_recipe`.
    info
        Filled by the method with what goes into the unlearning record.
    """

    forget: np.ndarray
    retain: np.ndarray
    validation: np.ndarray
    max_epochs: int
    batch_size: int
    params: dict[str, Any]
    seed: int
    accelerator: str
    devices: Any
    trainer_kwargs: dict[str, Any]
    recipe: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
