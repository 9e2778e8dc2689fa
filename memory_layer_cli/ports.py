"""Loopback ports for the local stack: a free one for each service, and whether the gateway's
port can be bound (service_kit.holders names the process holding it when it cannot)."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


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
