"""Request and response bodies of the HTTP API. Requests reject unknown fields."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from service_kit.limits import (
    MAX_CONTEXT_TOKENS,
    MAX_FIELD_CHARS,
    MAX_HISTORY_TURNS,
    MAX_METADATA_ENTRIES,
    MAX_MODEL_CHARS,
    MAX_TEXT_CHARS,
    MAX_TOP_K,
)


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty or only whitespace")
    return text


Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS), AfterValidator(_not_blank)]
ShortText = Annotated[str, Field(max_length=MAX_FIELD_CHARS)]
Provider = Annotated[str, Field(min_length=1, max_length=64)]
Metadata = Annotated[dict[ShortText, ShortText], Field(max_length=MAX_METADATA_ENTRIES)]
TopK = Annotated[int, Field(ge=1, le=MAX_TOP_K)]
Kind = Literal["prompt", "response"]
SearchModeName = Literal["hybrid", "semantic", "keyword"]
Score = Annotated[float, Field(ge=0, le=1)]


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Filters(RequestBody):
    providers: Annotated[list[Provider], Field(max_length=16)] = []
    conversation_id: ShortText | None = None
    kind: Kind | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


class SavePrompt(RequestBody):
    prompt: Text
    provider: Provider = "chatgpt"
    # Sent by older extension builds; must be the token's own subject.
    user_id: ShortText | None = None
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
    user_id: ShortText | None = None
    conversation_id: ShortText | None = None
    url: ShortText | None = None
    metadata: Metadata | None = None

    @model_validator(mode="after")
    def _names_prompt(self) -> SaveResponse:
        if not self.prompt_id and not self.message_id:
            raise ValueError("name the prompt answered: prompt_id or message_id")
        return self


class SearchQuery(RequestBody):
    query: Text
    top_k: TopK = 10
    mode: SearchModeName = "hybrid"
    filters: Filters | None = None
    # Only results scoring at least this much (scores are in [0, 1]).
    min_score: Score = 0.0
    user_id: ShortText | None = None


class ContextQuery(RequestBody):
    prompt: Text
    top_k: TopK = 5
    max_tokens: Annotated[int, Field(ge=1, le=MAX_CONTEXT_TOKENS)] = 1000
    mode: SearchModeName = "hybrid"
    filters: Filters | None = None
    # A stricter floor than the service's relevance floor; a laxer one has no effect.
    min_score: Score = 0.0
    user_id: ShortText | None = None


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
    content: Annotated[str, Field(max_length=MAX_TEXT_CHARS)]


class ChatQuery(RequestBody):
    message: Text
    top_k: TopK = 5
    # Earlier turns of this conversation, oldest first.
    history: Annotated[list[ChatTurn], Field(max_length=MAX_HISTORY_TURNS)] = []
    # An LLM API (openai, anthropic, offline) or a chat site's name; see conversions.
    provider: Provider | None = None
    model: Annotated[str, Field(min_length=1, max_length=MAX_MODEL_CHARS)] | None = None
    user_id: ShortText | None = None


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


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    memory: str
    chat: str
