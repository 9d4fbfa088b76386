"""The unlearning record: what was done, to how many cells, without naming them."""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np

RECORDS_ATTR = "unlearning_records_"


#: How request digests are made (recorded next to them).
DIGEST = "hmac-sha256"


def _key_bytes(key: bytes | str) -> bytes:
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, bytes) or len(key) < 16:
        raise ValueError(
            "`key` must be a secret of at least 16 bytes (or characters) that you keep, e.g. "
            "secrets.token_hex(32); it is never stored in the model."
        )
    return key


def _canonical(names: Iterable[str]) -> list[str]:
    return sorted(set(map(str, names)))


def keyed_digest(names: Iterable[str], key: bytes | str) -> str:
    """HMAC-SHA256, keyed by a secret the data steward keeps, of a set of obs names (order-independent).

    Without the key nobody can test a guess of which cells a digest covers, even knowing every
    barcode of a public dataset; with it the steward can prove what a record covers.
    """
    mac = hmac.new(_key_bytes(key), digestmod=hashlib.sha256)
    for name in _canonical(names):
        mac.update(name.encode("utf-8"))
        mac.update(b"\0")
    return mac.hexdigest()


def _mask_hex(bits: np.ndarray) -> str:
    return np.packbits(np.asarray(bits, dtype=bool)).tobytes().hex()


def _mask_bits(hex_mask: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(hex_mask), dtype=np.uint8))[:n].astype(bool)


def request_fields(requested: Iterable[str], forgotten: Iterable[str], key: bytes | str | None) -> dict:
    """The parts of a record that describe the deletion request.

    Counts always. With ``key``: keyed digests of the request and of the cells actually forgotten, and
    which requested cells were forgotten (one bit per requested name in sorted order; the others were
    never training cells). Without the request and the key the bits say nothing but the counts.
    """
    req = _canonical(requested)
    gone = set(_canonical(forgotten))
    bits = np.array([n in gone for n in req], dtype=bool)
    out: dict[str, Any] = {
        "n_requested": len(req),
        "n_forget": int(bits.sum()),
        "n_never_trained": int((~bits).sum()),
        "digest": DIGEST if key is not None else None,
        "request_digest": None,
        "forgotten_digest": None,
        "forgotten_mask": None,
    }
    if key is not None:
        out["request_digest"] = keyed_digest(req, key)
        out["forgotten_digest"] = keyed_digest(sorted(gone), key)
        out["forgotten_mask"] = _mask_hex(bits)
    return out


def verify_forgotten(record: dict, names: Iterable[str], *, key: bytes | str) -> dict[str, Any]:
    """Check a deletion request against an unlearning record, with the steward's key.

    The record holds no names, only digests keyed by the steward's secret; the steward holding the
    original request (the obs names asked to be deleted) and the key can verify that this record
    answers that request, and which of the requested cells were forgotten and which had never been
    training cells.

    Parameters
    ----------
    record
        One entry of a model's ``unlearning_records_``.
    names
        The obs names of the original deletion request.
    key
        The secret passed to :func:`scforget.unlearn` as ``key``.

    Returns
    -------
    ``{"request_matches", "forgotten_matches", "forgotten", "never_trained"}``: whether the request
    and the forgotten cells match the record's digests, and (when the request matches) the requested
    names forgotten and never trained.
    """
    if record.get("request_digest") is None:
        raise ValueError("This record was made without a `key`, so it holds no digest to verify against.")
    req = _canonical(names)
    matches = hmac.compare_digest(keyed_digest(req, key), record["request_digest"])
    out: dict[str, Any] = {"request_matches": matches, "forgotten_matches": False, "forgotten": [], "never_trained": []}
    if matches:
        bits = _mask_bits(record["forgotten_mask"], len(req))
        out["forgotten"] = [n for n, b in zip(req, bits, strict=True) if b]
        out["never_trained"] = [n for n, b in zip(req, bits, strict=True) if not b]
        out["forgotten_matches"] = hmac.compare_digest(keyed_digest(out["forgotten"], key), record["forgotten_digest"])
    return out


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


#: Hyper-parameters whose value is a set of cells: recorded as a count, never as names or positions.
CELL_PARAMS = frozenset({"nonmembers", "calibration"})


def _cells_summary(value: Any) -> Any:
    return None if value is None else f"{len(value)} cells"


def make_record(
    *,
    method: str,
    kind: str,
    guarantee: str,
    params: dict,
    request: dict,
    n_retain: int,
    max_epochs: int,
    batch_size: int,
    seed: int | None,
    wall_time_s: float,
    versions: dict,
    info: dict,
) -> dict:
    """Build one plain-dict entry of ``unlearning_records_`` (``request``: from :func:`request_fields`)."""
    return _plain(
        {
            "method": method,
            "kind": kind,
            "guarantee": guarantee,
            "params": {k: _cells_summary(v) if k in CELL_PARAMS else v for k, v in params.items()},
            **request,
            "n_retain": n_retain,
            "max_epochs": max_epochs,
            "batch_size": batch_size,
            "seed": seed,
            "wall_time_s": round(wall_time_s, 4),
            "versions": versions,
            "timestamp_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            **info,
        }
    )
