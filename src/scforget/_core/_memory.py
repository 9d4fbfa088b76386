"""Handing freed memory back to the operating system during long streaming loops."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _malloc_trim():
    """Glibc's ``malloc_trim``, or ``None`` where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> bool:
    """Return the C heap's free pages to the operating system; whether it could (glibc only).

    A forward pass over a minibatch of a few thousand cells allocates and frees tensors of tens of
    MB. glibc raises its mmap threshold after the first such free, so later ones come from the heap,
    where fragmentation keeps them: streaming the audit signals over a million backed cells grew
    the resident memory by 10 GB while the live data stayed under 1 GB. Trimming every few
    minibatches keeps it flat (measured on 100,000 cells: 745 MiB with, 999 MiB without, and still
    growing). There is no library call for this; Dask's workers do the same through an environment
    variable.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
