"""The one seed policy of scforget: ``seed=None`` follows :attr:`scvi.settings.seed`."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

from ._validate import check_int

#: Seeds are non-negative integers below this bound (numpy's legacy global RNG accepts no more).
SEED_BOUND = 2**32


def resolve_seed(seed: int | None, argument: str = "seed") -> int:
    """The integer seed of a run.

    An explicit ``seed`` is used as given. ``None`` means :attr:`scvi.settings.seed`; when that is
    unset too (scvi-tools' default), a fresh seed is drawn from the operating system's entropy, so the
    run is random but still reproducible from the seed it records. No global random state is read or
    changed.

    Parameters
    ----------
    seed
        A non-negative integer or ``None``.
    argument
        Name of the user-facing argument, for error messages.

    Returns
    -------
    The seed.
    """
    if seed is None:
        import scvi

        seed = scvi.settings.seed
        if seed is None:
            return int(np.random.SeedSequence().entropy % SEED_BOUND)
        argument = "scvi.settings.seed"
    return check_int(seed, argument, minimum=0, maximum=SEED_BOUND - 1)


def rng_devices() -> list[int]:
    """Every CUDA device, so that forking the random state covers all of them (empty without CUDA)."""
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


@contextlib.contextmanager
def fork_rng() -> Iterator[None]:
    """Run the block on a copy of the global random states (torch on CPU and every CUDA device, numpy, random)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    with torch.random.fork_rng(devices=rng_devices()):
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch (CPU and every CUDA device), numpy's and Python's global RNGs inside the block.

    The caller's random states are restored afterwards, so a seeded call never changes what the
    caller's code draws next.

    Parameters
    ----------
    seed
        A resolved seed (see :func:`resolve_seed`).
    """
    with fork_rng():
        torch.manual_seed(int(seed))
        np.random.seed(int(seed) % SEED_BOUND)
        random.seed(int(seed))
        yield
