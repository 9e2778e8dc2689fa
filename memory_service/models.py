"""Domain types of the memory service; protobuf messages are converted to these at the edge."""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import datetime

# Point ids of memories saved with a client message id are derived from (user, message id),
# so a retried save lands on the same point.
MESSAGE_ID_NAMESPACE = uuid.UUID("5b8f2c1e-7d43-5a1f-9e0b-6c2d4a8f1e37")
# Every other id is in its user's own id space (see user_scoped_id).
_USER_SPACE = b"memory-layer user id space\x1f"
_SEED_BYTES = 8


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


def user_scoped_id(user_id: str, seed: bytes) -> str:
    """An id in the user's own space: 8 bytes of seed, then 8 of a hash of user and seed.
    Whether an id is in a user's space needs no store and no secret, and only that user's
    memories are ever given one, so no id a client brings can reach another user's point,
    and whether another user holds an id never shows."""
    if len(seed) < _SEED_BYTES:
        raise ValueError("an id seed is 8 bytes")
    # Shaped as a UUIDv4 (version nibble in the seed, variant bits in the hash) before the
    # hash is taken, so the id's own first half gives the same hash back.
    head = bytearray(seed[:_SEED_BYTES])
    head[6] = (head[6] & 0x0F) | 0x40
    tail = bytearray(hashlib.sha256(_USER_SPACE + user_id.encode() + b"\x1f" + head).digest())
    tail[0] = (tail[0] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(head + tail[:_SEED_BYTES])))


def in_users_space(user_id: str, memory_id: str) -> bool:
    try:
        bytes_ = uuid.UUID(memory_id).bytes
    except ValueError:
        return False
    return user_scoped_id(user_id, bytes_[:_SEED_BYTES]) == str(uuid.UUID(memory_id))


def _seed(*parts: str) -> bytes:
    return hashlib.sha256("\x1f".join(parts).encode()).digest()


def memory_point_id(
    user_id: str,
    message_id: str,
    kind: MemoryKind = MemoryKind.PROMPT,
    text: str = "",
    *,
    text_key: bytes = b"",
) -> str:
    """The point id for a save: stable for a client message id (UUIDv5 of user and message
    id); without one, stable for the user, kind and normalised text, in the user's space,
    its seed keyed with `text_key` (the server's id key) so that nobody else can tell from an
    id which text it stands for."""
    if message_id:
        return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, f"{user_id}\x1f{message_id}"))
    if not text_key:
        raise ValueError("an id derived from text needs the server's id key")
    said = "\x1f".join(("text", user_id, kind.value, normalised_text(text))).encode()
    return user_scoped_id(user_id, hmac.digest(text_key, said, hashlib.sha256))


def new_memory_id(user_id: str) -> str:
    """A fresh random id in the user's space."""
    return user_scoped_id(user_id, os.urandom(_SEED_BYTES))


def scoped_client_id(user_id: str, client_id: str) -> str:
    """Where an id a client brings points when it is not one of the user's own: derived from
    user and id, in the user's space, the same every time it is brought."""
    return user_scoped_id(user_id, _seed("client id", user_id, client_id))
