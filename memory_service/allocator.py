"""Hand freed heap memory back to the OS.

glibc's malloc keeps pages freed by a burst of allocations (loading the model, replaying
the store's write-ahead log on start-up) in its per-thread arenas, where they count as
resident memory for the life of the process. `malloc_trim(0)` returns the free pages of
every arena. Elsewhere (musl, macOS) these are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from functools import cache
from typing import Any

log = logging.getLogger(__name__)


@cache
def _libc() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only
    except (OSError, AttributeError):
        return None
    return libc


def release_free_memory() -> bool:
    """Return free heap pages to the OS; False where the C library cannot."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
