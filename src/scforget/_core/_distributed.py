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


def process_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of this process in the running ``torch.distributed`` group; ``(0, 1)`` outside one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank()), int(dist.get_world_size())
    return 0, 1


#: Strategies that run the training in processes other than the caller's (results come back as weights only).
_CHILD_PROCESS = ("spawn", "fork", "notebook")


def spawns_children(strategy: Any) -> bool:
    """Whether ``strategy`` (a Lightning name) trains in child processes rather than in the calling one."""
    return isinstance(strategy, str) and any(name in strategy for name in _CHILD_PROCESS)


def is_multiprocess(devices: Any, strategy: Any = None) -> bool:
    """Whether Lightning would train with several processes for these ``devices`` and ``strategy``.

    ``devices="auto"`` counts as one process here; callers that must run in one process pass
    ``devices=1`` to Lightning instead of ``"auto"`` (which takes every GPU of the machine).
    """
    if isinstance(strategy, str):
        if any(name in strategy for name in ("ddp", "fsdp", "deepspeed")):
            return True
    elif strategy is not None:
        from lightning.pytorch.strategies import ParallelStrategy

        if isinstance(strategy, ParallelStrategy):
            return True
    if isinstance(devices, bool):
        return False
    if isinstance(devices, int):
        return devices > 1 or devices == -1
    if isinstance(devices, list | tuple):
        return len(devices) > 1
    if isinstance(devices, str) and devices != "auto":
        parts = [p for p in devices.split(",") if p.strip()]
        return len(parts) > 1 or (
            len(parts) == 1 and parts[0].strip().lstrip("-").isdigit() and int(parts[0]) not in (0, 1)
        )
    return False
