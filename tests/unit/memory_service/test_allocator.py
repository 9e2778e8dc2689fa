"""Freed heap goes back to the OS after release_free_memory()."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Run in a fresh interpreter: a long-lived test process has free small chunks everywhere,
# so the layout below would not hold there.
SCRIPT = textwrap.dedent(
    """
    import ctypes
    from pathlib import Path

    from memory_service.allocator import _libc, release_free_memory

    def rss_anon_kb():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])

    libc = _libc()
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    # free() itself gives back the top of the heap past a threshold: raise it, so only
    # release_free_memory() can return what is freed here (M_TRIM_THRESHOLD is -1).
    libc.mallopt(-1, 1 << 30)
    # 200 MB in heap blocks, each followed by a small block that stays allocated.
    blocks, pins = [], []
    for _ in range(3_200):
        blocks.append(libc.malloc(64 * 1024))
        pins.append(libc.malloc(64))
        ctypes.memset(blocks[-1], 1, 64 * 1024)
    for block in blocks:
        libc.free(block)
    before = rss_anon_kb()
    assert release_free_memory()
    print(before - rss_anon_kb())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_heap_is_returned() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    released_kb = int(result.stdout.strip())
    assert released_kb > 150 * 1024
