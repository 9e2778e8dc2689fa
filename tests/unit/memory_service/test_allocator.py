"""Freed heap goes back to the OS after release_free_memory()."""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import pytest

from memory_service.allocator import _libc, release_free_memory


def rss_anon_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_heap_is_returned() -> None:
    libc = _libc()
    assert libc is not None
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    # 200 MB in heap blocks, each followed by a small block that stays allocated: freeing
    # the big ones leaves holes that free() cannot give back, only malloc_trim can.
    blocks, pins = [], []
    for _ in range(3_200):
        blocks.append(libc.malloc(64 * 1024))
        pins.append(libc.malloc(64))
        ctypes.memset(blocks[-1], 1, 64 * 1024)
    for block in blocks:
        libc.free(block)
    before = rss_anon_kb()
    assert release_free_memory()
    after = rss_anon_kb()
    for pin in pins:
        libc.free(pin)
    assert before - after > 100 * 1024
