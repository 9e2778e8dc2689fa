"""Which process holds a file lock or listens on a port, read from Linux's /proc, so that a
refusal can name it (pid and command line) and `memory-layer up` can tell a leftover of its
own from a process it must leave alone."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
# The file in memory_service's data dir whose flock says a process serves it; `up` probes it.
DATA_DIR_LOCK = ".lock"
_TCP_LISTEN = "0A"


@dataclass(frozen=True, slots=True)
class Holder:
    pid: int
    argv: tuple[str, ...]

    @property
    def command(self) -> str:
        return " ".join(self.argv)

    def __str__(self) -> str:
        return f"pid {self.pid}: {self.command}" if self.argv else f"pid {self.pid}"


def process(pid: int, proc: Path = PROC) -> Holder | None:
    """The running process PID with its command line; None once it has exited (a zombie
    waiting for its parent counts as exited: it holds no lock and no socket)."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        argv = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    # The state follows the command name, which is in parentheses and may hold any byte.
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return None
    return Holder(pid, tuple(arg.decode(errors="replace") for arg in argv if arg))


def environment(pid: int, proc: Path = PROC) -> dict[str, str]:
    """The environment PID started with; empty when it cannot be read (another user's)."""
    try:
        raw = (proc / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    pairs = (entry.decode(errors="replace").partition("=") for entry in raw.split(b"\0"))
    return {name: value for name, sep, value in pairs if sep}


def _opened_by(pid_dir: Path, targets: set[str]) -> bool:
    try:
        return any(os.readlink(pid_dir / "fd" / fd) in targets for fd in os.listdir(pid_dir / "fd"))
    except OSError:  # another user's process, or one that just exited
        return False


def _holder_among(pids: list[int], targets: set[str], proc: Path) -> Holder | None:
    for pid in pids:
        if _opened_by(proc / str(pid), targets):
            return process(pid, proc)
    return None


def _all_pids(proc: Path) -> list[int]:
    return [int(p.name) for p in proc.iterdir() if p.name.isdigit()]


def lock_holder(path: Path, proc: Path = PROC) -> Holder | None:
    """The process holding a flock on PATH, or None when it cannot be told (another user's
    process, another pid namespace, or not Linux)."""
    try:
        inode = os.stat(path).st_ino
        lines = (proc / "locks").read_text().splitlines()
    except OSError:
        return None
    pids: list[int] = []
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 4242 08:01:131 0 EOF"; waiters are marked "->".
        fields = line.split()
        if len(fields) >= 6 and fields[1] != "->" and fields[5].rsplit(":", 1)[-1] == str(inode):
            pids.append(int(fields[4]))
    target = {str(Path(path).resolve())}
    # The pid a flock records is whoever took it; the file must still be open there.
    return _holder_among(pids, target, proc) or _holder_among(_all_pids(proc), target, proc)


def port_holder(port: int, proc: Path = PROC) -> Holder | None:
    """The process listening on PORT (any address), or None when it cannot be told."""
    inodes = _listening_inodes(port, proc)
    return _holder_among(_all_pids(proc), inodes, proc) if inodes else None


def _listening_inodes(port: int, proc: Path) -> set[str]:
    """The sockets listening on PORT, as the fd link text naming them."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _TCP_LISTEN:
                continue
            local_port = fields[1].rpartition(":")[2]
            if int(local_port, 16) == port and fields[9] != "0":
                inodes.add(f"socket:[{fields[9]}]")
    return inodes
