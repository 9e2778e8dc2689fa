"""The ChatService RPCs: convert, hand to the Assistant, convert back, map errors."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc

from chat_service import conversions
from chat_service.assistant import Assistant
from chat_service.errors import (
    ChatError,
    InvalidChatRequestError,
    ProviderAuthError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from chat_service.models import TextDelta
from memory_service.identity import current_request_id, require_identity
from protos.chat.v1 import chat_pb2, chat_pb2_grpc

log = logging.getLogger(__name__)

ERROR_CODES: tuple[tuple[type[ChatError], grpc.StatusCode], ...] = (
    (InvalidChatRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (ProviderRejectedError, grpc.StatusCode.INVALID_ARGUMENT),
    (ProviderRateLimitedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ProviderUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (ProviderTimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
)
RETRY_AFTER_KEY = "retry-after"


async def abort_with(context: grpc.aio.ServicerContext, exc: ChatError) -> None:
    """End the call with the status `exc` stands for; always raises."""
    if isinstance(exc, ProviderAuthError):
        # The caller can do nothing about it; the operator has to, so it is logged loudly.
        log.error("%s", exc)
        await context.abort(grpc.StatusCode.INTERNAL, "the LLM provider is misconfigured")
    code = next((c for kind, c in ERROR_CODES if isinstance(exc, kind)), None)
    if code is None:
        log.error("chat failed: %s", exc)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error")
    if code is not grpc.StatusCode.INVALID_ARGUMENT:
        log.warning("chat failed: %s", exc)
    trailing: tuple[tuple[str, str], ...] = ()
    if isinstance(exc, ProviderRateLimitedError) and exc.retry_after:
        trailing = ((RETRY_AFTER_KEY, exc.retry_after),)
    await context.abort(code, str(exc), trailing_metadata=trailing)


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    def __init__(self) -> None:
        self._assistant: Assistant | None = None

    def ready(self, assistant: Assistant) -> None:
        self._assistant = assistant

    async def _require_ready(self, context: grpc.aio.ServicerContext) -> Assistant:
        if self._assistant is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "chat service is starting")
        assert self._assistant is not None
        return self._assistant

    async def Chat(
        self, request: chat_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.ChatResponse:
        assistant = await self._require_ready(context)
        try:
            answer = await assistant.answer(
                require_identity(),
                current_request_id.get(),
                conversions.chat_question(request),
                context.time_remaining(),
            )
        except ChatError as exc:
            await abort_with(context, exc)
            raise
        return conversions.chat_response(answer)

    async def ChatStream(
        self, request: chat_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chat_pb2.ChatStreamEvent]:
        assistant = await self._require_ready(context)
        try:
            async for event in assistant.answer_stream(
                require_identity(),
                current_request_id.get(),
                conversions.chat_question(request),
                context.time_remaining(),
            ):
                if isinstance(event, TextDelta):
                    yield conversions.delta_event(event.text)
                else:
                    yield conversions.done_event(event)
        except ChatError as exc:
            await abort_with(context, exc)
