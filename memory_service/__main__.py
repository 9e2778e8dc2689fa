"""`python -m memory_service` runs the memory service."""

import sys

from memory_service.embedding.model_dir import ModelError
from memory_service.server import serve
from memory_service.store import StoreError
from service_kit.grpc_server import run_main


def main() -> int:
    return run_main("memory_service", serve, (StoreError, ModelError, RuntimeError))


if __name__ == "__main__":
    sys.exit(main())
