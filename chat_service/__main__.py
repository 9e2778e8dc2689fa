"""`python -m chat_service` runs the chat service."""

import sys

import uvloop
from pydantic import ValidationError

from chat_service.server import serve
from service_kit.settings import describe_settings_error


def main() -> int:
    try:
        uvloop.run(serve())
    except ValidationError as exc:
        print(f"chat_service: invalid settings:\n{describe_settings_error(exc)}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"chat_service: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
