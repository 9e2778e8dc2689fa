"""Domain types of the memory service; protobuf messages are converted to these at the edge."""

from __future__ import annotations

import enum
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import datetime

# Point ids of memories saved with a client message id are derived from (user, message id),
# so a retried save lands on the same point.
MESSAGE_ID_NAMESPACE = uuid.UUID("5b8f2c1e-7d43-5a1f-9e0b-6c2d4a8f1e37")
# Saves without one are derived from (user, kind, normalised text): saying the same thing
# twice lands on one point.
TEXT_NAMESPACE = uuid.UUID("0f6a7c1d-2b9e-5d4a-8c3f-71e2b5a9d604")


class MemoryKind(enum.StrEnum):
    PROMPT = "prompt"
    RESPONSE = "response"


class SearchMode(enum.StrEnum):
    HYBRID = "hybrid"
    SEMANTIC = "semantic"
    KEYWORD = "keyword"
    # Plain reciprocal-rank fusion of dense and BM25, the hybrid ranking before score fusion;
    # kept as the baseline the benchmark measures against. Its scores are not calibrated.
    RRF = "rrf"


@dataclass(slots=True)
class Memory:
    id: str
    user_id: str
    kind: MemoryKind
    text: str
    created_at: datetime
    provider: str = ""
    conversation_id: str = ""
    message_id: str = ""
    url: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    prompt_id: str = ""
    response_id: str = ""
    # Set when the text or metadata was last edited; None if never.
    updated_at: datetime | None = None
    # How many times this text was saved (without a message id); see Memories.save.
    seen_count: int = 1


@dataclass(slots=True)
class ScoredMemory:
    memory: Memory
    score: float
    # Asked for with explain, hybrid only: each ranking feature's share of the score before
    # scaling (ranking.FEATURES); None when not asked for.
    contributions: dict[str, float] | None = None


@dataclass(frozen=True, slots=True)
class SearchFilters:
    providers: tuple[str, ...] = ()
    conversation_id: str = ""
    created_after: datetime | None = None
    created_before: datetime | None = None
    kind: MemoryKind | None = None


@dataclass(frozen=True, slots=True)
class SparseVector:
    indices: list[int]
    values: list[float]


@dataclass(slots=True)
class MemoryPoint:
    """A memory with the vectors it is stored under."""

    memory: Memory
    dense: list[float]
    sparse: SparseVector


def normalised_text(text: str) -> str:
    """The form under which two saves count as the same thing said: NFC, case-folded,
    whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def memory_point_id(
    user_id: str, message_id: str, kind: MemoryKind = MemoryKind.PROMPT, text: str = ""
) -> str:
    """The point id for a save: stable for a client message id; without one, stable for the
    user, kind and normalised text."""
    if message_id:
        return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, f"{user_id}\x1f{message_id}"))
    key = f"{user_id}\x1f{kind.value}\x1f{normalised_text(text)}"
    return str(uuid.uuid5(TEXT_NAMESPACE, key))
