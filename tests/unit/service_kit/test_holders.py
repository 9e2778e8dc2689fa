"""Who holds a data dir's lock, read from /proc: the process holding the flock is named with
its command line, a process with the file open but no lock is not, and an exited process
(a zombie included) is gone."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

from service_kit.holders import environment, lock_holder, process

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
if sys.argv[2] == "lock":
    fcntl.flock(fd, fcntl.LOCK_EX)
print("ready", flush=True)
time.sleep(600)
"""


def hold(path: Path, how: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), how],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "HOLDER_MARK": "yes"},
    )
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    return child


def test_the_process_holding_the_lock_is_named_not_one_that_only_opened_it(
    tmp_path: Path,
) -> None:
    lock = tmp_path / ".lock"
    opener = hold(lock, "open")
    locker = hold(lock, "lock")
    try:
        holder = lock_holder(lock)
        assert holder is not None
        assert holder.pid == locker.pid
        assert holder.argv[:2] == (sys.executable, "-c")
        assert str(holder).startswith(f"pid {locker.pid}: {sys.executable} -c")
        assert environment(locker.pid)["HOLDER_MARK"] == "yes"
    finally:
        for child in (opener, locker):
            child.kill()
            child.wait()


def test_a_free_lock_has_no_holder_and_an_exited_process_is_gone(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    assert lock_holder(lock) is None
    child = hold(lock, "lock")
    child.kill()
    # Exited but not reaped: a zombie, which holds nothing.
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    assert Path(f"/proc/{child.pid}").exists()
    assert process(child.pid) is None
    child.wait()
    assert process(child.pid) is None
    assert lock_holder(lock) is None
