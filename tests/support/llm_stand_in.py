"""A real HTTP server on loopback standing in for an LLM provider: it speaks OpenAI's chat
completions and Anthropic's Messages API, streamed and not, records what it is sent, and
can be told to fail, stall or hold an answer back."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

ANSWER = ["You ", "like ", "window ", "seats."]


@dataclass
class Reply:
    """How the stand-in answers the next request."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    # Never answer: hold the connection until the client goes away.
    stall: bool = False
    # Streaming: after the first delta, wait for this before sending the rest.
    gate: asyncio.Event | None = None
    # Streaming: hang up after the first delta, as a crashing provider would.
    hang_up: bool = False


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class StandInProvider:
    """A minimal HTTP/1.1 server: one request per connection, answered per `reply`."""

    def __init__(self) -> None:
        self.reply = Reply()
        self.requests: list[Received] = []
        self.disconnected = asyncio.Event()
        self.sent_last = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._open:
            writer.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            request_line = (await reader.readline()).decode()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            raw = await reader.readexactly(int(headers.get("content-length", "0")))
            body = json.loads(raw) if raw else {}
            path = request_line.split(" ")[1]
            self.requests.append(Received(path, headers, body))
            await self._answer(reader, writer, path, body)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.disconnected.set()
        finally:
            self._open.discard(writer)
            writer.close()

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, body: Any
    ) -> None:
        reply = self.reply
        anthropic = path.endswith("/messages")
        if reply.stall:
            await self._wait_for(reader, None)
            return
        if reply.status != 200:
            error = {"error": {"type": "error", "message": f"stand-in says {reply.status}"}}
            self._head(writer, reply.status, "application/json", reply.headers)
            writer.write(json.dumps(error).encode())
            await writer.drain()
            return
        if not body.get("stream"):
            full = anthropic_message() if anthropic else openai_completion()
            self._head(writer, 200, "application/json", {})
            writer.write(json.dumps(full).encode())
            await writer.drain()
            self.sent_last.set()
            return
        self._head(writer, 200, "text/event-stream", {})
        first, rest = anthropic_events() if anthropic else openai_events()
        writer.write(first)
        await writer.drain()
        if reply.hang_up:
            return
        if reply.gate is not None and not await self._wait_for(reader, reply.gate):
            return
        writer.write(rest)
        await writer.drain()
        self.sent_last.set()

    def _head(
        self, writer: asyncio.StreamWriter, status: int, kind: str, extra: dict[str, str]
    ) -> None:
        # Connection: close and no length: the body ends when the connection does, as a
        # stream of events would.
        lines = [f"HTTP/1.1 {status} X", f"Content-Type: {kind}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in extra.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def _wait_for(self, reader: asyncio.StreamReader, gate: asyncio.Event | None) -> bool:
        """Wait for `gate` (forever if None); False, and noted, if the client hangs up first.
        The client sends nothing after its request, so a read only returns at its close."""
        hangup = asyncio.ensure_future(reader.read(1))
        opened = asyncio.ensure_future(gate.wait() if gate else asyncio.Event().wait())
        done, pending = await asyncio.wait({hangup, opened}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if hangup in done:
            self.disconnected.set()
            return False
        return True


def sse(payload: Any, event: str | None = None) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return ((f"event: {event}\n" if event else "") + f"data: {data}\n\n").encode()


def openai_completion() -> dict[str, Any]:
    return {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(ANSWER)},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 321, "completion_tokens": 4},
    }


def openai_events() -> tuple[bytes, bytes]:
    def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
        return sse({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    first = chunk({"role": "assistant"}) + chunk({"content": ANSWER[0]})
    rest = b"".join(chunk({"content": piece}) for piece in ANSWER[1:])
    rest += chunk({}, "stop")
    rest += sse({"choices": [], "usage": {"prompt_tokens": 321, "completion_tokens": 4}})
    return first, rest + sse("[DONE]")


def anthropic_message() -> dict[str, Any]:
    return {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "".join(ANSWER)}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 321, "output_tokens": 4},
    }


def anthropic_events() -> tuple[bytes, bytes]:
    def delta(text: str) -> bytes:
        body = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": text},
        }
        return sse(body, "content_block_delta")

    start = {
        "type": "message",
        "role": "assistant",
        "content": [],
        "usage": {"input_tokens": 321, "output_tokens": 1},
    }
    first = sse({"type": "message_start", "message": start}, "message_start")
    first += sse(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        "content_block_start",
    )
    first += sse({"type": "ping"}, "ping") + delta(ANSWER[0])
    rest = b"".join(delta(piece) for piece in ANSWER[1:])
    rest += sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    rest += sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 4},
        },
        "message_delta",
    )
    return first, rest + sse({"type": "message_stop"}, "message_stop")
