"""Generated requests, valid and invalid, for every operation in the gateway's OpenAPI
document, sent over real HTTP with a valid token: no 5xx, and every answer matches the
schema the gateway publishes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from pydantic import SecretStr
from schemathesis import GenerationMode, checks
from schemathesis.core.result import Ok
from schemathesis.openapi import from_url

from chat_service.config import ChatSettings
from chat_service.server import create_server as create_chat_server
from tests.support.reliability import bearer, client_for, gateway_settings
from tests.support.stack import (
    SERVICE_TOKEN,
    GatewayServer,
    LoopThread,
    start_memory_in_process,
    stop_memory_in_process,
)

FUZZ_USER = "fuzz-admin"
EXAMPLES_PER_OPERATION = 25
CHECKS = [
    checks.not_a_server_error,
    checks.response_schema_conformance,
    checks.content_type_conformance,
]
CALLS: Counter[str] = Counter()
STATUSES: Counter[int] = Counter()
UNSATISFIABLE: list[str] = []


@pytest.fixture(scope="module")
def gateway_url(encoder: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    loop = LoopThread()
    memory, embedder = start_memory_in_process(loop, encoder, Path(tmp_path_factory.mktemp("fuzz")))

    async def start_chat() -> Any:
        # No provider configured: the offline mode answers, so /chat is fuzzed end to end.
        server = await create_chat_server(
            ChatSettings(
                host="127.0.0.1",
                port=0,
                metrics_port=-1,
                memory_addr=f"127.0.0.1:{memory.port}",
                service_token=SecretStr(SERVICE_TOKEN),
            )
        )
        await server.start_serving()
        return server

    chat = loop.run(start_chat())
    gateway = GatewayServer(
        loop,
        gateway_settings(
            memory.port,
            chat_addr=f"127.0.0.1:{chat.port}",
            admin_user_ids=[FUZZ_USER],
            rate_limit_chat="1000000/minute",
        ),
    ).start()
    yield gateway.url
    gateway.stop()
    loop.run(chat.stop(0))
    stop_memory_in_process(loop, memory, embedder)
    loop.close()


def _fuzz(operation: Any, mode: GenerationMode, url: str, failures: list[str]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call_and_validate(
            base_url=url, headers=bearer(FUZZ_USER), checks=CHECKS, timeout=30
        )
        STATUSES[response.status_code] += 1
        CALLS[f"{case.method} {case.path}"] += 1

    try:
        run()
    except Unsatisfiable:
        # Nothing in this operation can be made invalid (no body, no constrained parameter).
        UNSATISFIABLE.append(f"{operation.label} ({mode.value})")
    except (Exception, BaseExceptionGroup) as exc:
        failures.append(f"{operation.label} ({mode.value}): {_summary(exc)}")


def _summary(exc: BaseException) -> str:
    """The failure's title and the response that showed it, without the long traces."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_summary(inner) for inner in exc.exceptions)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " | ".join(lines[:2] + [line for line in lines if line.startswith(("[", "curl"))])


@pytest.mark.slow
def test_every_operation_answers_without_5xx_and_as_documented(gateway_url: str) -> None:
    schema = from_url(f"{gateway_url}/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        # The gateway's own document must be valid: an invalid operation is an error here.
        assert isinstance(result, Ok), result
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, gateway_url, failures)
    print(
        f"\nOpenAPI fuzzing: {CALLS.total()} cases over {operations} operations "
        f"(positive and negative, up to {EXAMPLES_PER_OPERATION} each), "
        f"statuses {dict(sorted(STATUSES.items()))}, {len(failures)} failing; "
        f"no invalid input possible for {len(UNSATISFIABLE)}"
    )
    assert operations >= 15
    assert not [status for status in STATUSES if status >= 500]
    assert failures == [], "\n\n".join(failures)


def test_a_blank_filter_value_is_a_4xx_not_a_server_error(gateway_url: str) -> None:
    # Found by the fuzzing above: the filter model rejected the blank value inside the route.
    with client_for(gateway_url, FUZZ_USER) as client:
        for path in ("/memories", "/export"):
            response = client.get(path, params={"provider": ""})
            assert response.status_code == 422, (path, response.status_code, response.text)
