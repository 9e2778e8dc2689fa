"""Chat grounded in the caller's memories: one answer, or the answer as Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import grpc
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse

from gateway.deps import ChatClientDep, CurrentCallerDep, SettingsDep, check_user_id
from gateway.errors import grpc_error
from gateway.ratelimit import chat_rate_limit
from gateway.schemas import ChatAnswer, ChatDone, ChatQuery

log = logging.getLogger(__name__)

# Every chat route spends the operator's LLM budget, so each carries the chat limit.
router = APIRouter(tags=["chat"], dependencies=[Depends(chat_rate_limit)])

T = TypeVar("T")
# Proxies such as nginx hold event streams back in their buffers unless told not to.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Nobody reads an answer to a request whose connection is gone; 499 is what proxies log.
CLIENT_CLOSED = 499


class ClientGone(Exception):
    """The HTTP client hung up before the answer began."""


async def _disconnected(request: Request) -> None:
    # The body has been read, so the next message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """`work`, cancelled if the client hangs up first: uvicorn does not cancel a request
    whose client has gone, and an abandoned call would go on generating, and paying for,
    an answer nobody reads."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        gone.cancel()
    if task in done:
        return task.result()
    task.cancel()
    # Waited for so the gRPC call is cancelled before the request is considered finished.
    await asyncio.gather(task, return_exceptions=True)
    raise ClientGone


@router.post("/chat", response_model=ChatAnswer)
async def chat(
    body: ChatQuery, request: Request, caller: CurrentCallerDep, client: ChatClientDep
) -> ChatAnswer | Response:
    """An answer grounded in the caller's most relevant memories (`top_k` of them), with the
    memories it used. Without a configured LLM the answer quotes them (`offline`)."""
    check_user_id(caller, body.user_id)
    try:
        return await unless_client_leaves(request, client.chat(caller, body))
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)


def sse_event(event: str, payload: object) -> bytes:
    return f"event: {event}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


def _encode(item: str | ChatDone) -> bytes:
    if isinstance(item, str):
        return sse_event("delta", {"text": item})
    return sse_event("done", item.model_dump(mode="json"))


@router.post(
    "/chat/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def chat_stream(
    body: ChatQuery,
    request: Request,
    caller: CurrentCallerDep,
    client: ChatClientDep,
    settings: SettingsDep,
) -> Response:
    """The answer as Server-Sent Events: `delta` events (`{"text": ...}`) as it is
    generated, then one `done` event with the memories used and the token usage. An error
    after the first event arrives as an `error` event (`{"status", "detail"}`) that ends
    the stream; one before it is an ordinary HTTP error."""
    check_user_id(caller, body.user_id)
    events = client.stream(caller, body)
    try:
        # The status line waits for the first event, so a refused or failed chat still gets
        # its real status code (429 with Retry-After, 503, 504).
        first = await unless_client_leaves(request, anext(events))
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)
    except StopAsyncIteration:
        log.error("chat stream ended without any event")
        first = None

    async def stream() -> AsyncIterator[bytes]:
        # A disconnect cancels this generator (Starlette watches for it while streaming);
        # closing `events` then cancels the gRPC call and with it the provider request.
        try:
            if first is None:
                return
            yield _encode(first)
            async for item in events:
                yield _encode(item)
        except grpc.aio.AioRpcError as exc:
            error = grpc_error(exc, settings.retry_after_seconds)
            log.warning("chat stream failed after it began: %s", exc.code().name)
            yield sse_event("error", {"status": error.status, "detail": error.detail})
        finally:
            await events.aclose()

    return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)
