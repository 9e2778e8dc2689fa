"""Freed heap goes back to the OS after release_free_memory()."""

from __future__ import annotations

import mmap
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from memory_service.memory_release import release_mapped_pages

# Run in a fresh interpreter: a long-lived test process has free small chunks everywhere,
# so the layout below would not hold there.
SCRIPT = textwrap.dedent(
    """
    import ctypes
    from pathlib import Path

    from memory_service.memory_release import _libc, release_free_memory

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


def resident_kb(path: Path) -> int:
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and ":" not in fields[0]:
            inside = len(fields) > 5 and fields[5] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise on /proc/self/maps")
def test_mapped_file_pages_are_released_and_keep_their_data(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(bytes(range(256)) * 4096 * 16)  # 16 MiB
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mapped:
        assert sum(mapped[i] for i in range(0, len(mapped), 4096)) == 0
        mapped[5] = 77
        assert resident_kb(path) >= 16 * 1024

        assert release_mapped_pages(tmp_path) == 16 * 1024 * 1024

        assert resident_kb(path) < 64
        assert mapped[5] == 77 and mapped[4096 * 10 + 3] == 3
        mapped.flush()
    assert path.read_bytes()[5] == 77
