"""The embedded store's files: copying a shard with its holes kept, copying again only what
changed, writing files back to the disk, and replacing a file durably."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def data_ranges(fd: int) -> Iterator[tuple[int, int]]:
    """The [start, end) byte ranges of an open file that hold data (not holes)."""
    size = os.fstat(fd).st_size
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:  # nothing but a hole up to the end
            return
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end
        offset = end


def copy_sparse(src: str, dst: str) -> None:
    """Copy a file's data ranges only: the engine preallocates its log and vector files,
    and a plain copy would write their holes out in full."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        for start, end in data_ranges(fin.fileno()):
            while start < end:
                copied = os.copy_file_range(fin.fileno(), fout.fileno(), end - start, start, start)
                if copied == 0:
                    raise OSError(f"{src} shrank while being copied")
                start += copied
        fout.truncate(os.fstat(fin.fileno()).st_size)
    shutil.copystat(src, dst)


def copy_modified(source: Path, target: Path, since: float) -> None:
    """Make target equal source, recopying only files modified at or after since."""
    seen: set[Path] = set()
    for root, _, files in os.walk(source):
        relative = Path(root).relative_to(source)
        (target / relative).mkdir(parents=True, exist_ok=True)
        for name in files:
            path, copy = Path(root) / name, target / relative / name
            seen.add(relative / name)
            stat = path.stat()
            if (
                not copy.exists()
                or stat.st_mtime >= since
                or stat.st_ctime >= since
                or copy.stat().st_size != stat.st_size
            ):
                copy_sparse(str(path), str(copy))
    for root, _, files in os.walk(target, topdown=False):
        relative = Path(root).relative_to(target)
        for name in files:
            if relative / name not in seen:
                (Path(root) / name).unlink()
        if not (source / relative).is_dir():
            Path(root).rmdir()


def write_back(path: Path) -> None:
    """Write every file under path to disk, off the GIL.

    The engine holds the GIL while it flushes or closes a shard, and most of that time goes
    to waiting for the disk (a flush after some writes: ~200 ms here, ~20 ms once this ran
    first). Written back first, its flush finds little left to write."""
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                fd = os.open(os.path.join(root, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)


def replace_durably(path: Path, text: str) -> None:
    """Replace the file at path with text, so that a crash leaves the old file or the new."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    # The rename is what switches shards after maintenance: make it survive a crash.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def directory_bytes(path: Path) -> int:
    """Disk blocks in use under path (sparse and preallocated files count as stored)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total
