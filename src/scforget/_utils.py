"""Small shared helpers: seeding, keyword validation, version strings."""

from __future__ import annotations

import contextlib
import difflib
import inspect
import random
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Seed torch, numpy and random inside the block and restore the caller's RNG state after.

    With ``seed=None`` nothing is seeded or restored, so the caller's global seed
    (:attr:`scvi.settings.seed`) governs the run.
    """
    if seed is None:
        yield
        return
    np_state = np.random.get_state()
    py_state = random.getstate()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []):
        torch.manual_seed(seed)
        np.random.seed(seed % (2**32))
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def close_matches(name: str, options: Iterable[str], n: int = 3) -> str:
    """A sentence suggesting close matches of ``name`` among ``options`` (empty if none)."""
    matches = difflib.get_close_matches(name, list(options), n=n, cutoff=0.6)
    if not matches:
        return ""
    return " Did you mean " + " or ".join(repr(m) for m in matches) + "?"


def accepted_keywords(*callables: Callable) -> tuple[set[str], bool]:
    """Union of keyword parameters of ``callables`` and whether any accepts ``**kwargs``."""
    names: set[str] = set()
    var_kw = False
    for fn in callables:
        for p in inspect.signature(fn).parameters.values():
            if p.kind == p.VAR_KEYWORD:
                var_kw = True
            elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                names.add(p.name)
    names.discard("self")
    return names, var_kw


def check_keywords(given: dict, allowed: Iterable[str], argument: str, where: str) -> None:
    """Raise a ``TypeError`` naming each unknown key of ``given`` and its close matches."""
    allowed = set(allowed)
    for key in given:
        if key not in allowed:
            raise TypeError(
                f"Unknown keyword {key!r} in `{argument}` for {where}.{close_matches(key, allowed)} "
                f"Accepted keywords: {', '.join(sorted(allowed))}."
            )


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine an unlearning result."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("scforget", "scvi-tools", "torch", "lightning", "anndata", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:  # pragma: no cover - editable installs without metadata
            out[pkg] = "unknown"
    return out
