"""`python -m chat_service` runs the chat service."""

import sys

from chat_service.server import serve
from service_kit.grpc_server import run_main


def main() -> int:
    return run_main("chat_service", serve)


if __name__ == "__main__":
    sys.exit(main())
