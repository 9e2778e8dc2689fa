"""`python -m memory_service` runs the memory service."""

import sys

import uvloop
from pydantic import ValidationError

from memory_service.server import serve
from memory_service.store import StoreError
from service_kit.settings import describe_settings_error


def main() -> int:
    try:
        uvloop.run(serve())
    except ValidationError as exc:
        print(f"memory_service: invalid settings:\n{describe_settings_error(exc)}", file=sys.stderr)
        return 1
    except (StoreError, RuntimeError) as exc:
        print(f"memory_service: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
