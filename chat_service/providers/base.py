"""What the providers that call an HTTP API share: the JSON and Server-Sent Events exchange,
and the mapping of HTTP failures to provider errors."""

from __future__ import annotations

import abc
import contextlib
import json
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from chat_service.errors import (
    ProviderAuthError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from chat_service.models import Completion, Prompt

# Provider error bodies are kept short in messages: enough to name the problem.
MAX_ERROR_DETAIL_CHARS = 200
MAX_RETRY_AFTER_CHARS = 64


@contextmanager
def transport_errors(provider: str) -> Iterator[None]:
    """Turn httpx's failures into provider errors with a gRPC meaning."""
    try:
        yield
    except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        # Never reached the provider, or no connection was free: as good as down.
        raise ProviderUnavailableError(f"{provider} could not be reached in time") from exc
    except httpx.TimeoutException as exc:
        raise ProviderTimeoutError(f"{provider} did not answer in time") from exc
    except httpx.TransportError as exc:
        raise ProviderUnavailableError(
            f"{provider} connection failed: {type(exc).__name__}"
        ) from exc
    except (json.JSONDecodeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise ProviderUnavailableError(f"{provider} sent an answer that cannot be read") from exc


async def raise_for_status(provider: str, response: httpx.Response) -> None:
    """Raise the provider error that a non-2xx answer stands for."""
    status = response.status_code
    if status < 300:
        return
    await response.aread()
    detail = error_detail(response)
    if status == 429:
        retry_after = response.headers.get("retry-after")
        if retry_after is not None and (
            len(retry_after) > MAX_RETRY_AFTER_CHARS or not retry_after.isprintable()
        ):
            retry_after = None
        raise ProviderRateLimitedError(f"{provider} is rate limiting: {detail}", retry_after)
    if status in (401, 403):
        raise ProviderAuthError(f"{provider} refused the configured credentials ({status})")
    if status in (400, 404, 413, 422):
        raise ProviderRejectedError(f"{provider} rejected the request ({status}): {detail}")
    if status == 408:
        raise ProviderTimeoutError(f"{provider} did not answer in time (408)")
    raise ProviderUnavailableError(f"{provider} failed ({status}): {detail}")


def error_detail(response: httpx.Response) -> str:
    """The provider's own error message, shortened: both APIs nest it under error.message."""
    try:
        body = response.json()
        message = body["error"]["message"] if isinstance(body["error"], dict) else body["error"]
        text = str(message)
    except (ValueError, KeyError, TypeError):
        text = response.text
    text = " ".join(text.split())
    return text[:MAX_ERROR_DETAIL_CHARS] or response.reason_phrase


async def sse_data(lines: AsyncIterable[str]) -> AsyncIterator[str]:
    """The data of each Server-Sent Event in `lines`; event names and comments are dropped
    because both APIs repeat the event type inside the JSON data."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)


class JsonApiProvider(abc.ABC):
    """A provider whose API takes one JSON body, answered with JSON or a stream of
    Server-Sent Events; subclasses say how the body is built and the answer read."""

    name: str

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        headers: dict[str, str],
        temperature: float | None,
    ) -> None:
        self.client = client
        self.url = url
        self.headers = headers
        self.temperature = temperature

    @abc.abstractmethod
    def request_body(
        self, prompt: Prompt, model: str, max_tokens: int, stream: bool
    ) -> dict[str, Any]:
        """The API's request body, without the sampling options every API shares."""

    @abc.abstractmethod
    def completion(self, body: Any) -> Completion:
        """The completion a non-streamed answer's JSON body holds."""

    def payload(self, prompt: Prompt, model: str, max_tokens: int, stream: bool) -> dict[str, Any]:
        body = self.request_body(prompt, model, max_tokens, stream)
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    async def complete(self, prompt: Prompt, model: str, max_tokens: int) -> Completion:
        with transport_errors(self.name):
            response = await self.client.post(
                self.url, json=self.payload(prompt, model, max_tokens, False), headers=self.headers
            )
            await raise_for_status(self.name, response)
            return self.completion(response.json())

    @contextlib.asynccontextmanager
    async def events(
        self, prompt: Prompt, model: str, max_tokens: int
    ) -> AsyncIterator[AsyncIterator[str]]:
        """The data of the streamed answer's events; failures, the reader's too, as provider
        errors."""
        payload = self.payload(prompt, model, max_tokens, True)
        with transport_errors(self.name):
            async with self.client.stream(
                "POST", self.url, json=payload, headers=self.headers
            ) as response:
                await raise_for_status(self.name, response)
                yield sse_data(response.aiter_lines())
