"""The metrics port every service serves its Prometheus metrics on."""

from __future__ import annotations

from prometheus_client import start_http_server


def start_metrics(port: int) -> None:
    """Serve /metrics on its own port (0: any free port, negative: off)."""
    if port >= 0:
        start_http_server(port)
