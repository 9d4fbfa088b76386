"""Lightning DDP strategies for scVI-family modules."""

from __future__ import annotations

from typing import Any

#: Lightning's registered names of the DDP strategies and their unused-parameter variants.
_FIND_UNUSED = {
    "ddp": "ddp_find_unused_parameters_true",
    "ddp_spawn": "ddp_spawn_find_unused_parameters_true",
    "ddp_fork": "ddp_fork_find_unused_parameters_true",
    "ddp_notebook": "ddp_notebook_find_unused_parameters_true",
}


def ddp_strategy(strategy: Any) -> Any:
    """The Lightning strategy to train an scVI-family module with.

    scvi-tools' modules build parameters that a given forward leaves unused (scVI's library-size
    encoder when library sizes are observed; a forget-only head in some unlearning plans), which
    plain DDP refuses at the first step. A DDP strategy given by name therefore becomes its
    ``*_find_unused_parameters_true`` variant; anything else (a strategy object, ``"auto"``,
    another name) passes unchanged.
    """
    if isinstance(strategy, str):
        return _FIND_UNUSED.get(strategy, strategy)
    return strategy


def with_ddp_strategy(trainer_kwargs: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``trainer_kwargs`` whose ``strategy`` (if any) went through :func:`ddp_strategy`."""
    out = dict(trainer_kwargs)
    if "strategy" in out:
        out["strategy"] = ddp_strategy(out["strategy"])
    return out
