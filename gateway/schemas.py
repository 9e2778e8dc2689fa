"""Request and response bodies of the HTTP API. Requests reject unknown fields.

The field types here are the rules for anything a client sends, reused by every model:
captured text keeps what it can (invalid code points become U+FFFD), identifiers must be
exactly what they say (422 otherwise), datetimes must fall within what the store can keep.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from service_kit.api_keys import (
    KEY_SCOPES,
    MAX_KEY_DAYS,
    MAX_KEY_NAME_CHARS,
    KeyScope,
    checked_key_name,
    checked_scopes,
)
from service_kit.identity import MAX_USER_ID_CHARS, is_valid_user_id
from service_kit.limits import (
    MAX_BATCH_ITEMS,
    MAX_CONTEXT_TOKENS,
    MAX_FIELD_CHARS,
    MAX_HISTORY_TURNS,
    MAX_METADATA_ENTRIES,
    MAX_MODEL_CHARS,
    MAX_TEXT_CHARS,
    MAX_TOP_K,
)
from service_kit.time_zones import time_zone

# NUL and lone UTF-16 surrogates: JSON can carry them (a half-copied emoji in browser
# JavaScript is a lone surrogate), UTF-8 and protobuf cannot.
_INVALID_CODE_POINTS = re.compile("[\x00\ud800-\udfff]")
# Identifiers also refuse control characters: they name things and never hold any.
_NOT_IN_IDENTIFIERS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
REPLACEMENT_CHARACTER = "\ufffd"
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def _replace_invalid(text: str) -> str:
    """Captured text is never refused for its code points: a prompt is worth keeping."""
    return _INVALID_CODE_POINTS.sub(REPLACEMENT_CHARACTER, text)


def _identifier(text: str) -> str:
    if _NOT_IN_IDENTIFIERS.search(text):
        raise ValueError("must not contain control characters, NUL or lone surrogates")
    return text


def _user_id(text: str) -> str:
    if not is_valid_user_id(text):
        raise ValueError(f"must be 1 to {MAX_USER_ID_CHARS} printable ASCII characters")
    return text


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty or only whitespace")
    return text


def _time_zone(name: str) -> str:
    time_zone(name)
    return name


def _in_store_range(value: datetime) -> datetime:
    """In UTC (a value without offset is taken as UTC), between 1970 and 9999."""
    try:
        utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("must be between 1970-01-01 and 9999-12-31 in UTC") from None
    if not EARLIEST <= utc <= LATEST:
        raise ValueError("must be between 1970-01-01 and 9999-12-31 in UTC")
    return utc


# Text a person typed or was answered: prompts, answers, queries, metadata values.
CapturedText = Annotated[str, AfterValidator(_replace_invalid)]
Text = Annotated[
    CapturedText,
    Field(min_length=1, max_length=MAX_TEXT_CHARS),
    AfterValidator(_not_blank),
]
ShortCapturedText = Annotated[CapturedText, Field(max_length=MAX_FIELD_CHARS)]
# Names and ids: conversation and message ids, providers, URLs, metadata keys.
Identifier = Annotated[str, Field(max_length=MAX_FIELD_CHARS), AfterValidator(_identifier)]
ShortText = Identifier
UserId = Annotated[str, AfterValidator(_user_id)]
Provider = Annotated[Identifier, Field(min_length=1, max_length=64)]
Metadata = Annotated[dict[Identifier, ShortCapturedText], Field(max_length=MAX_METADATA_ENTRIES)]
TopK = Annotated[int, Field(ge=1, le=MAX_TOP_K)]
UtcDatetime = Annotated[datetime, AfterValidator(_in_store_range)]
Kind = Literal["prompt", "response"]
SearchModeName = Literal["hybrid", "semantic", "keyword"]
Score = Annotated[float, Field(ge=0, le=1)]
# The person's IANA time zone ("Europe/Berlin"): "yesterday" and the day each memory was saved
# on are that zone's in the ranking; unset, UTC.
TimeZoneName = Annotated[str, Field(min_length=1), AfterValidator(_time_zone)]


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Filters(RequestBody):
    providers: Annotated[list[Provider], Field(max_length=16)] = []
    conversation_id: ShortText | None = None
    kind: Kind | None = None
    created_after: UtcDatetime | None = None
    created_before: UtcDatetime | None = None


class SavePrompt(RequestBody):
    prompt: Text
    provider: Provider = "chatgpt"
    # Sent by older extension builds; must be the token's own subject.
    user_id: UserId | None = None
    conversation_id: ShortText | None = None
    message_id: ShortText | None = None
    url: ShortText | None = None
    metadata: Metadata | None = None


class SaveResponse(RequestBody):
    response: Text
    # The prompt answered: its memory id, or the client message id it was saved with.
    prompt_id: ShortText | None = None
    message_id: ShortText | None = None
    # This answer's own client id; makes a retried save idempotent.
    response_message_id: ShortText | None = None
    provider: Provider | None = None
    user_id: UserId | None = None
    conversation_id: ShortText | None = None
    url: ShortText | None = None
    metadata: Metadata | None = None

    @model_validator(mode="after")
    def _names_prompt(self) -> SaveResponse:
        if not self.prompt_id and not self.message_id:
            raise ValueError("name the prompt answered: prompt_id or message_id")
        return self


class BatchPrompt(SavePrompt):
    """A /save-prompt body in a batch, with the time it was first written (imports)."""

    created_at: AwareDatetime | None = None
    # Without message_id: the id the memory had in an export; kept if it is the caller's
    # own, otherwise scoped to the caller (the same on every retry).
    id: ShortText | None = None


class BatchResponse(SaveResponse):
    """A /save-response body in a batch; its prompt may be in the same batch."""

    created_at: AwareDatetime | None = None
    id: ShortText | None = None


class SaveBatch(RequestBody):
    # Checked one by one, so a bad item is refused alone instead of failing the batch.
    items: Annotated[
        list[Any],
        Field(
            min_length=1,
            max_length=MAX_BATCH_ITEMS,
            description=(
                "Each a /save-prompt body (with `prompt`) or a /save-response body (with "
                "`response`), optionally with `created_at` (timezone-aware, ISO 8601)."
            ),
        ),
    ]


class Limits(BaseModel):
    # Characters as the server counts them (code points); a JavaScript string's length is
    # never smaller.
    max_text_chars: int
    max_field_chars: int
    max_metadata_entries: int
    max_batch_items: int
    # Bytes of a request body: every route but the batch, and POST /memories/batch.
    max_body_bytes: int
    max_batch_body_bytes: int


SaveStatusName = Literal["stored", "already_present", "refused"]


class SaveResult(BaseModel):
    status: SaveStatusName
    # Stored or already present: the memory's id.
    id: str | None = None
    # Refused: why.
    reason: str | None = None


class SaveResults(BaseModel):
    results: list[SaveResult]
    stored: int
    already_present: int
    refused: int


class SearchQuery(RequestBody):
    query: Text
    top_k: TopK = 10
    mode: SearchModeName = "hybrid"
    filters: Filters | None = None
    # Only results scoring at least this much (scores are in [0, 1]).
    min_score: Score = 0.0
    # Hybrid results carry `contributions`: each ranking feature's part of the score.
    explain: bool = False
    user_id: UserId | None = None
    time_zone: TimeZoneName | None = None


class ContextQuery(RequestBody):
    prompt: Text
    top_k: TopK = 5
    max_tokens: Annotated[int, Field(ge=1, le=MAX_CONTEXT_TOKENS)] = 1000
    mode: SearchModeName = "hybrid"
    filters: Filters | None = None
    # A stricter floor than the service's relevance floor; a laxer one has no effect.
    min_score: Score = 0.0
    user_id: UserId | None = None
    time_zone: TimeZoneName | None = None


class MemoryUpdate(RequestBody):
    """A new text (embedded again) and/or metadata (replacing the old as a whole)."""

    text: Text | None = None
    metadata: Metadata | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> MemoryUpdate:
        if self.text is None and self.metadata is None:
            raise ValueError("nothing to change: give text, metadata or both")
        return self


class ChatTurn(RequestBody):
    role: Literal["user", "assistant"]
    content: Annotated[CapturedText, Field(max_length=MAX_TEXT_CHARS)]


class ChatQuery(RequestBody):
    message: Text
    top_k: TopK = 5
    # Earlier turns of this conversation, oldest first.
    history: Annotated[list[ChatTurn], Field(max_length=MAX_HISTORY_TURNS)] = []
    # An LLM API (openai, anthropic, offline) or a chat site's name; see conversions.
    provider: Provider | None = None
    model: Annotated[Identifier, Field(min_length=1, max_length=MAX_MODEL_CHARS)] | None = None
    user_id: UserId | None = None
    time_zone: TimeZoneName | None = None


class Memory(BaseModel):
    id: str
    user_id: str
    kind: Kind
    text: str
    provider: str
    conversation_id: str
    message_id: str
    url: str
    metadata: dict[str, str]
    created_at: datetime
    prompt_id: str
    response_id: str
    # When the text or metadata was last edited; null if never.
    updated_at: datetime | None = None


class ScoredMemory(Memory):
    score: float
    # With `explain` in the hybrid mode: each ranking feature's value times its weight, summed
    # before scores are scaled to [0, 1]; left out when not asked for.
    contributions: dict[str, float] | None = Field(default=None, exclude_if=lambda v: v is None)


class SearchResults(BaseModel):
    results: list[ScoredMemory]


class Context(BaseModel):
    context: str
    memories: list[ScoredMemory]
    # Estimated as characters / 4; a budget, not a tokenizer count.
    approx_tokens: int


class MemoryPage(BaseModel):
    memories: list[Memory]
    next_cursor: str | None


class Deleted(BaseModel):
    deleted: int


class ProviderCount(BaseModel):
    provider: str
    count: int


class DayCount(BaseModel):
    day: date
    count: int


class MemoryStats(BaseModel):
    """The caller's own figures, counted by the store without reading a memory."""

    total: int
    # Most memories first.
    providers: list[ProviderCount]
    # Oldest first; the last is today where the caller is.
    per_day: list[DayCount]


class Stats(BaseModel):
    total_memories: int
    users: int
    collection: str
    model: str
    dimension: int
    backend: str


class ChatMemory(BaseModel):
    """A memory that went into the chat's prompt."""

    id: str
    text: str
    score: float
    # The chat site the memory was captured from.
    provider: str
    created_at: datetime | None
    # Only the start of the memory fitted in the prompt.
    truncated: bool


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    # The provider did not report usage; these are chat_service's estimate.
    estimated: bool


class ChatDone(BaseModel):
    """What is known about an answer once it is complete; the last event of a stream."""

    context_used: list[ChatMemory]
    usage: ChatUsage
    # No language model answered: the text quotes the most relevant memories.
    offline: bool
    # The memories could not be searched; the answer uses none.
    context_unavailable: bool
    # A sentence for the user when offline or context_unavailable; empty otherwise.
    notice: str
    provider: str
    model: str
    finish_reason: str
    timestamp: datetime


class ChatAnswer(ChatDone):
    response: str


class ProtectedResource(BaseModel):
    """OAuth 2.0 Protected Resource Metadata (RFC 9728): where MCP clients get a token."""

    resource: str
    # The token issuer: `<GATEWAY_SUPABASE_URL>/auth/v1`, or the local issuer in local mode.
    authorization_servers: list[str]
    bearer_methods_supported: list[str]
    resource_name: str
    resource_documentation: str


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    memory: str
    chat: str


class NewApiKey(RequestBody):
    name: Annotated[
        str,
        Field(max_length=MAX_KEY_NAME_CHARS, description="What the key is for, e.g. a device"),
        AfterValidator(checked_key_name),
    ]
    scopes: Annotated[
        list[KeyScope],
        Field(
            min_length=1,
            max_length=len(KEY_SCOPES),
            description="read: search, context, list, get, export, chat. "
            "write: save, batch, edit, delete.",
        ),
        AfterValidator(lambda scopes: list(checked_scopes(scopes))),
    ] = ["read", "write"]
    expires_in_days: Annotated[
        int | None,
        Field(ge=1, le=MAX_KEY_DAYS, description="Unset: the key never expires."),
    ] = None


class ApiKeyInfo(BaseModel):
    id: str
    name: str
    prefix: Annotated[str, Field(description="The key's first characters, to recognise it")]
    scopes: list[KeyScope]
    created_at: AwareDatetime
    last_used_at: Annotated[
        AwareDatetime | None, Field(description="To the minute; null if never used")
    ] = None
    expires_at: AwareDatetime | None = None


class CreatedApiKey(BaseModel):
    id: str
    name: str
    key: Annotated[str, Field(description="The key itself. Shown in this answer only.")]
    prefix: str
    scopes: list[KeyScope]
    created_at: AwareDatetime
    expires_at: AwareDatetime | None = None


class ApiKeyList(BaseModel):
    keys: list[ApiKeyInfo]


class ResolvedKey(BaseModel):
    """A live key as memory_service resolves it for the gateway: whose it is, what it may do."""

    id: str
    user_id: str
    scopes: list[KeyScope]
    expires_at: AwareDatetime | None = None
