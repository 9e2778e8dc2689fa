"""`python -m chat_service` runs the chat service."""

import sys

import uvloop
from pydantic import ValidationError

from chat_service.server import serve


def main() -> int:
    try:
        uvloop.run(serve())
    except ValidationError as exc:
        # Only the messages: the input pydantic would echo may hold the API key.
        for error in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(part) for part in error["loc"]) or "settings"
            print(f"chat_service: {where}: {error['msg']}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"chat_service: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
