"""Loopback ports for the local stack: a free one for each service, whether the gateway's
port can be bound, and which process holds it when it cannot."""

from __future__ import annotations

import os
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"

_TCP_LISTEN = "0A"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether the gateway can listen on PORT. The probe binds as uvicorn does, with
    SO_REUSEADDR, so the connections of a gateway that just stopped, waiting out TIME_WAIT,
    do not count; a socket listening on the port does."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def port_holder(port: int, proc: Path = Path("/proc")) -> str | None:
    """The process listening on PORT, as "pid N: command line", or None when it cannot be
    told (not Linux, or the process belongs to another user)."""
    inodes = _listening_inodes(port, proc)
    if not inodes:
        return None
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            fds = os.listdir(pid_dir / "fd")
            held = any(os.readlink(pid_dir / "fd" / fd) in inodes for fd in fds)
            if held:
                argv = (pid_dir / "cmdline").read_bytes().split(b"\0")
                command = " ".join(arg.decode(errors="replace") for arg in argv if arg)
                return f"pid {pid_dir.name}: {command}" if command else f"pid {pid_dir.name}"
        except OSError:  # another user's process, or one that just exited
            continue
    return None


def _listening_inodes(port: int, proc: Path) -> set[str]:
    """The sockets listening on PORT (any address), as the fd link text naming them."""
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
