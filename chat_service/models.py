"""Domain types of the chat service; protobuf messages are converted to these at the edge."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class Role(enum.StrEnum):
    USER = "user"
    ASSISTANT = "assistant"


@dataclass(frozen=True, slots=True)
class Turn:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class ChatQuestion:
    """What the caller asks: a message, the conversation so far and optional choices."""

    message: str
    top_k: int = 0
    history: tuple[Turn, ...] = ()
    provider: str | None = None
    model: str | None = None
    # The asker's IANA time zone for the memory search; "" for UTC.
    time_zone: str = ""


@dataclass(frozen=True, slots=True)
class ContextMemory:
    id: str
    text: str
    score: float
    provider: str = ""
    created_at: datetime | None = None
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False


@dataclass(frozen=True, slots=True)
class Prompt:
    """What is sent to a model: system instructions (with the memories) and the turns,
    the last of which is the question."""

    system: str
    turns: tuple[Turn, ...]
    memories: tuple[ContextMemory, ...]
    history_kept: int
    estimated_tokens: int
    memories_unavailable: bool = False


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    usage: Usage | None = None
    finish_reason: str = ""


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The provider finished a streamed answer."""

    usage: Usage | None = None
    finish_reason: str = ""


@dataclass(slots=True)
class AnswerDetails:
    context_used: list[ContextMemory] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    offline: bool = False
    context_unavailable: bool = False
    notice: str = ""
    provider: str = ""
    model: str = ""
    finish_reason: str = ""


@dataclass(slots=True)
class ChatAnswer:
    text: str
    details: AnswerDetails
