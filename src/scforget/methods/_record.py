"""The unlearning record: what was done, to how many cells, without naming them."""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np

RECORDS_ATTR = "unlearning_records_"


def digest_names(names: Iterable[str], salt: str) -> str:
    """Salted SHA-256 of a set of obs names (order-independent)."""
    h = hashlib.sha256()
    h.update(bytes.fromhex(salt))
    for name in sorted(set(map(str, names))):
        h.update(name.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def verify_forgotten(record: dict, names: Iterable[str]) -> bool:
    """Whether ``names`` are exactly the cells forgotten in ``record``.

    The record stores only a salted digest of the forgotten obs names, so a data steward holding
    the deletion request can prove which cells a model forgot without the model ever storing them.

    Parameters
    ----------
    record
        One entry of a model's ``unlearning_records_``.
    names
        The obs names of the cells whose deletion was requested.

    Returns
    -------
    ``True`` when the digest matches.
    """
    return digest_names(names, record["forget_digest_salt"]) == record["forget_digest"]


def _plain(value: Any) -> Any:
    """Turn a value into plain Python (so saved models never unpickle scforget classes)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return value
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def make_record(
    *,
    method: str,
    kind: str,
    guarantee: str,
    params: dict,
    forget_names: Iterable[str],
    n_forget: int,
    n_retain: int,
    max_epochs: int,
    batch_size: int,
    seed: int | None,
    wall_time_s: float,
    versions: dict,
    info: dict,
) -> dict:
    """Build one plain-dict entry of ``unlearning_records_``."""
    salt = secrets.token_hex(16)
    return _plain(
        {
            "method": method,
            "kind": kind,
            "guarantee": guarantee,
            "params": params,
            "n_forget": n_forget,
            "n_retain": n_retain,
            "forget_digest": digest_names(forget_names, salt),
            "forget_digest_salt": salt,
            "max_epochs": max_epochs,
            "batch_size": batch_size,
            "seed": seed,
            "wall_time_s": round(wall_time_s, 4),
            "versions": versions,
            "timestamp_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            **info,
        }
    )
