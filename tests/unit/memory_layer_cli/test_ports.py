"""The gateway's port as `memory-layer up` checks it: free while only the connections of a
stopped gateway wait out TIME_WAIT, taken while a process listens on it, and that process
named (service_kit.holders)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from memory_layer_cli.ports import LOOPBACK, free_port, port_is_free
from service_kit.holders import port_holder


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_listening_port_is_taken_and_its_process_named(listener: int) -> None:
    assert not port_is_free(listener)
    holder = port_holder(listener)
    assert holder is not None
    assert str(holder).startswith(f"pid {os.getpid()}: ")
    assert holder.pid == os.getpid() and "python" in holder.command


def test_a_port_with_only_time_wait_connections_is_free() -> None:
    with socket.socket() as server:
        # As uvicorn listens; a connection's TIME_WAIT keeps the flag of its socket.
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((LOOPBACK, 0))
        server.listen()
        port = int(server.getsockname()[1])
        with socket.create_connection((LOOPBACK, port)) as client:
            accepted, _ = server.accept()
            # The server closes first, as a stopping gateway closes its keep-alive
            # connections: the server's side of the connection enters TIME_WAIT.
            accepted.close()
            assert client.recv(1) == b""
    # A plain bind still refuses the port; the server, binding with SO_REUSEADDR, would not.
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind((LOOPBACK, port))
    assert port_is_free(port)
    assert port_holder(port) is None


def test_a_free_port_has_no_holder() -> None:
    port = free_port()
    assert port_is_free(port)
    assert port_holder(port) is None
