"""`python -m memory_service` runs the memory service."""

import sys

import uvloop

from memory_service.server import serve
from memory_service.store import StoreError


def main() -> int:
    try:
        uvloop.run(serve())
    except (StoreError, RuntimeError) as exc:
        print(f"memory_service: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
