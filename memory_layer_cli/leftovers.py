"""What stands in the way of `memory-layer up`: its data dir locked, or its port taken, by
another process. A service left by an earlier `up` whose supervisor is gone may be taken over
(stopped with the other services of that `up`, so that this one can start); a service another
`up` still runs, or any other process, is only named and never touched."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from memory_layer_cli.ports import port_is_free
from memory_layer_cli.stack import SERVICE_MODULES, STOP_TIMEOUT_SECONDS, SUPERVISOR_VARIABLE
from memory_layer_cli.supervisor import SUPERVISOR_MODULE
from service_kit.holders import (
    DATA_DIR_LOCK,
    Holder,
    environment,
    lock_holder,
    port_holder,
    process,
)

TAKE_OVER_FLAG = "--take-over"


@dataclass(frozen=True, slots=True)
class Obstacle:
    """Something `up` needs, held by another process."""

    what: str
    # What else the person may do, e.g. "pick another with --port".
    alternative: str
    holder: Holder | None
    # For a service of an earlier `up`: that `up`, if it still runs.
    supervisor: Holder | None = None
    leftover: bool = False

    def describe(self) -> str:
        if self.holder is None:
            return f"{self.what} is in use by a process that cannot be named (another user's?)"
        if self.supervisor is not None:
            return (
                f"{self.what} is in use by {self.holder}, a service of the `memory-layer up` "
                f"still running as {self.supervisor}; stop that one first"
            )
        if self.leftover:
            return f"{self.what} is in use by {self.holder}, left by an earlier `memory-layer up`"
        return f"{self.what} is in use by {self.holder}, which is not a Memory Layer service"

    def remedy(self, take_over: bool) -> str:
        if self.leftover and take_over:
            return f"{TAKE_OVER_FLAG} stops it once nothing else holds what `up` needs"
        if self.leftover:
            return f"run again with {TAKE_OVER_FLAG} to stop it and start"
        if self.supervisor is not None or self.holder is None:
            return "it is left alone"
        return f"it is left alone; {self.alternative}"


def service_module(holder: Holder) -> str | None:
    """The Memory Layer service HOLDER runs (`python -m <service>`), if it runs one."""
    for flag, module in itertools.pairwise(holder.argv):
        if flag == "-m" and module in SERVICE_MODULES:
            return module
    return None


def _supervisor(holder: Holder) -> Holder | None:
    """The `memory-layer up` still running that started HOLDER, if any."""
    pid = environment(holder.pid).get(SUPERVISOR_VARIABLE, "")
    supervisor = process(int(pid)) if pid.isdigit() else None
    if supervisor is None or SUPERVISOR_MODULE not in supervisor.argv:
        return None
    return supervisor


def _obstacle(what: str, alternative: str, holder: Holder | None) -> Obstacle:
    if holder is None or service_module(holder) is None:
        return Obstacle(what, alternative, holder)
    supervisor = _supervisor(holder)
    return Obstacle(what, alternative, holder, supervisor, leftover=supervisor is None)


def data_dir_obstacle(memory_dir: Path) -> Obstacle | None:
    """Who holds memory_service's lock on MEMORY_DIR; None when it is free."""
    lock = memory_dir / DATA_DIR_LOCK
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pass
    else:
        return None
    finally:
        # Closing releases the probe's own lock at once.
        os.close(fd)
    return _obstacle(f"Data dir {memory_dir}", "pick another with --data-dir", lock_holder(lock))


def port_obstacle(port: int) -> Obstacle | None:
    """Who listens on the gateway's PORT; None when it is free."""
    if port_is_free(port):
        return None
    return _obstacle(f"Port {port}", "pick another with --port", port_holder(port))


def leftover_group(holder: Holder, proc: Path = Path("/proc")) -> list[Holder]:
    """HOLDER and the other services the same `up` started (they share its supervisor mark)."""
    mark = environment(holder.pid).get(SUPERVISOR_VARIABLE)
    group = [holder]
    if not mark:
        return group
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == holder.pid:
            continue
        other = process(int(entry.name))
        if (
            other is not None
            and service_module(other) is not None
            and environment(other.pid).get(SUPERVISOR_VARIABLE) == mark
        ):
            group.append(other)
    return group


def _gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(process(pid) is not None for pid in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def stop_leftovers(group: list[Holder]) -> None:
    """SIGTERM (a graceful stop: nothing acknowledged is lost), then SIGKILL for any that
    outlasts the stop timeout; returns once none of them runs."""
    pids = [holder.pid for holder in group]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if _gone(pids, STOP_TIMEOUT_SECONDS):
            return
    raise RuntimeError(f"the leftover services did not stop: {', '.join(map(str, group))}")
