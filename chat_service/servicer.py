"""The ChatService RPCs: convert, hand to the Assistant, convert back; errors carry their
own status to the interceptor."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from chat_service import conversions
from chat_service.assistant import Assistant
from chat_service.models import TextDelta
from protos.chat.v1 import chat_pb2, chat_pb2_grpc
from service_kit.grpc_server import SetAtStartup
from service_kit.identity import current_request_id, require_identity


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    assistant = SetAtStartup[Assistant]("chat service is starting")

    async def Chat(
        self, request: chat_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.ChatResponse:
        answer = await self.assistant.answer(
            require_identity(),
            current_request_id.get(),
            conversions.chat_question(request),
            context.time_remaining(),
        )
        return conversions.chat_response(answer)

    async def ChatStream(
        self, request: chat_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chat_pb2.ChatStreamEvent]:
        async for event in self.assistant.answer_stream(
            require_identity(),
            current_request_id.get(),
            conversions.chat_question(request),
            context.time_remaining(),
        ):
            if isinstance(event, TextDelta):
                yield conversions.delta_event(event.text)
            else:
                yield conversions.done_event(event)
