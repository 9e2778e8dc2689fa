"""`python -m gateway` runs the gateway with settings from GATEWAY_* variables."""

from __future__ import annotations

import sys

import uvicorn
from pydantic import ValidationError

from gateway.app import create_app
from gateway.config import GatewaySettings
from service_kit.heap import freeze_startup_heap
from service_kit.logs import configure_logging
from service_kit.metrics import start_metrics
from service_kit.settings import describe_settings_error


def main() -> int:
    try:
        settings = GatewaySettings()
    except ValidationError as exc:
        print(f"gateway: invalid settings:\n{describe_settings_error(exc)}", file=sys.stderr)
        return 1
    configure_logging("gateway", settings.log_level)
    # Metrics on a port of their own, as the other services do: the API port is public.
    start_metrics(settings.metrics_port)
    app = create_app(settings)
    freeze_startup_heap()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=settings.keepalive_seconds,
        timeout_graceful_shutdown=10,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
