"""`memory-layer mcp`: an MCP server on stdin/stdout, for desktop apps that only launch local
servers, that forwards every message to a gateway's /mcp and writes back what it answers.

The gateway holds the tools; the bridge only carries JSON-RPC. Whatever stops a message on
the way (gateway down, token refused, rate limit) comes back to the app as the JSON-RPC error
of that request, with a sentence saying what happened, and the bridge keeps running.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Generator

import anyio
import httpx
from anyio.abc import ObjectSendStream
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp_types import ErrorData, JSONRPCError, JSONRPCRequest, JSONRPCResponse
from mcp_types.jsonrpc import INTERNAL_ERROR, JSONRPCMessage, jsonrpc_message_adapter
from pydantic import ValidationError

from gateway.tokens import mint_token

log = logging.getLogger(__name__)

PROTOCOL_VERSION_HEADER = "MCP-Protocol-Version"
# A tool call waits on the model and the store; the gateway's own deadlines come first.
REQUEST_TIMEOUT_SECONDS = 60.0
LOCAL_TOKEN_SECONDS = 3600
# A minted token is replaced this long before it expires, so none expires in flight.
LOCAL_TOKEN_MARGIN_SECONDS = 300


class LocalTokens(httpx.Auth):
    """Bearer tokens for one user, minted with the local secret `memory-layer up` created and
    renewed before they expire: a desktop app keeps its bridge running for days."""

    def __init__(
        self, secret: str, user: str, issuer: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.secret = secret
        self.user = user
        self.issuer = issuer
        self.clock = clock
        self._token = ""
        self._expires = 0.0

    def token(self) -> str:
        now = self.clock()
        if now >= self._expires - LOCAL_TOKEN_MARGIN_SECONDS:
            self._token = mint_token(
                self.secret,
                self.user,
                issuer=self.issuer,
                ttl_seconds=LOCAL_TOKEN_SECONDS,
                now=now,
            )
            self._expires = now + LOCAL_TOKEN_SECONDS
        return self._token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        yield request


class StaticToken(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


def _refusal(response: httpx.Response, url: str) -> str:
    """What the app should be told about an HTTP error that carries no JSON-RPC error."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    status = response.status_code
    if status == 401:
        return (
            f"The gateway at {url} refused the token (401); give a valid --token, or --user "
            "with the --data-dir of the running `memory-layer up`."
        )
    if status == 429:
        wait = response.headers.get("Retry-After", "a few")
        return f"Rate limited by the gateway; retry in {wait} s."
    return f"The gateway answered {status}: {detail or response.reason_phrase}"


class Bridge:
    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http = http
        self.url = url.rstrip("/")
        self.endpoint = f"{self.url}/mcp"
        # Sent on every request after initialize, as Streamable HTTP requires.
        self.protocol_version: str | None = None

    async def forward(self, message: JSONRPCMessage, out: ObjectSendStream[SessionMessage]) -> None:
        request_id = message.id if isinstance(message, JSONRPCRequest) else None
        try:
            async for reply in self._post(message):
                self._note_version(message, reply)
                await out.send(SessionMessage(reply))
        except _Refused as refused:
            log.warning("%s", refused.reason)
            if request_id is not None:
                error = ErrorData(code=INTERNAL_ERROR, message=refused.reason)
                await out.send(
                    SessionMessage(JSONRPCError(jsonrpc="2.0", id=request_id, error=error))
                )

    def _note_version(self, sent: JSONRPCMessage, reply: JSONRPCMessage) -> None:
        initialize = isinstance(sent, JSONRPCRequest) and sent.method == "initialize"
        if initialize and isinstance(reply, JSONRPCResponse):
            version = reply.result.get("protocolVersion")
            self.protocol_version = version if isinstance(version, str) else None

    async def _post(self, message: JSONRPCMessage) -> AsyncIterator[JSONRPCMessage]:
        headers = {"Accept": "application/json, text/event-stream"}
        if self.protocol_version:
            headers[PROTOCOL_VERSION_HEADER] = self.protocol_version
        body = message.model_dump(by_alias=True, mode="json", exclude_unset=True)
        try:
            async with self.http.stream("POST", self.endpoint, json=body, headers=headers) as resp:
                if resp.status_code == 202:
                    return
                content_type = resp.headers.get("content-type", "")
                if content_type.startswith("text/event-stream") and resp.status_code < 400:
                    async for data in _sse_data(resp):
                        yield _decode(data)
                    return
                raw = await resp.aread()
                if resp.status_code >= 400:
                    # A JSON-RPC error in the body says more than the status does.
                    error = _json_rpc_error(raw)
                    if error is None:
                        raise _Refused(_refusal(resp, self.url))
                    yield error
                    return
                yield _decode(raw)
        except httpx.HTTPError as exc:
            raise _Refused(f"Cannot reach the gateway at {self.url}: {exc!r}") from exc


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _decode(raw: bytes | str) -> JSONRPCMessage:
    try:
        return jsonrpc_message_adapter.validate_json(raw, by_name=False)
    except ValidationError as exc:
        raise _Refused("The gateway's answer is not a JSON-RPC message") from exc


def _json_rpc_error(raw: bytes) -> JSONRPCMessage | None:
    try:
        message = jsonrpc_message_adapter.validate_json(raw, by_name=False)
    except ValidationError:
        return None
    return message if isinstance(message, JSONRPCError) else None


async def _sse_data(response: httpx.Response) -> AsyncIterator[str]:
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            yield "\n".join(data)
            data = []
    if data:
        yield "\n".join(data)


async def serve_bridge(url: str, auth: httpx.Auth) -> None:
    """Forward stdin's messages to `url`/mcp until stdin closes; each concurrently, so a slow
    tool call does not hold back the next message."""
    async with (
        stdio_server() as (incoming, outgoing),
        httpx.AsyncClient(auth=auth, timeout=REQUEST_TIMEOUT_SECONDS) as http,
        anyio.create_task_group() as tasks,
    ):
        bridge = Bridge(http, url)
        async for item in incoming:
            if isinstance(item, Exception):
                log.warning("ignoring a line that is not a JSON-RPC message: %s", item)
                continue
            tasks.start_soon(bridge.forward, item.message, outgoing)
