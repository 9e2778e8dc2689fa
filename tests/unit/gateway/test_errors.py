"""How service status codes become HTTP statuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import grpc

from gateway.errors import HTTP_STATUS, grpc_error


def rpc_error(code: grpc.StatusCode, *trailing: tuple[str, str]) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing))


def test_grpc_codes_map_to_the_documented_statuses() -> None:
    assert {code.name: status for code, status in HTTP_STATUS.items()} == {
        "INVALID_ARGUMENT": 400,
        "OUT_OF_RANGE": 400,
        "NOT_FOUND": 404,
        "ALREADY_EXISTS": 409,
        "FAILED_PRECONDITION": 409,
        "PERMISSION_DENIED": 403,
        "UNAUTHENTICATED": 401,
        "RESOURCE_EXHAUSTED": 429,
        "UNAVAILABLE": 503,
        "DEADLINE_EXCEEDED": 504,
    }
    assert grpc.StatusCode.INTERNAL not in HTTP_STATUS


def test_a_429_carries_the_providers_retry_after_when_it_is_usable() -> None:
    def retry_after(code: grpc.StatusCode, *trailing: tuple[str, str]) -> str | None:
        headers = grpc_error(rpc_error(code, *trailing), retry_after=2).headers
        return None if headers is None else headers["Retry-After"]

    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
    in_30s = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert retry_after(exhausted, ("retry-after", "17")) == "17"
    assert retry_after(exhausted, ("retry-after", "0.2")) == "1"
    assert 28 <= int(retry_after(exhausted, ("retry-after", in_30s)) or 0) <= 31
    assert retry_after(exhausted, ("retry-after", "99999999")) == "3600"
    assert retry_after(exhausted, ("retry-after", "soon")) == "2"
    assert retry_after(exhausted, ("retry-after", "nan")) == "2"
    assert retry_after(exhausted) == "2"
    # Only a rate limit speaks for the provider's pace; an outage gets the gateway's own.
    assert retry_after(grpc.StatusCode.UNAVAILABLE, ("retry-after", "17")) == "2"
    assert retry_after(grpc.StatusCode.DEADLINE_EXCEEDED) is None
