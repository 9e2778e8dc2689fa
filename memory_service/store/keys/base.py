"""The API key store interface and the record it keeps (never the key itself, only its hash)."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc

from service_kit.errors import ServiceError


class TooManyKeysError(ServiceError):
    """The user already has as many live keys as allowed."""

    code = grpc.StatusCode.FAILED_PRECONDITION


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    user_id: str
    name: str
    prefix: str
    key_hash: bytes
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None

    def live(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


class KeyStore(abc.ABC):
    """Keys by hash (to resolve a request's key) and by owner (to list and revoke them)."""

    backend: str

    async def open(self) -> None:  # noqa: B027 - optional for adapters
        """Load or create what the store needs."""

    async def close(self) -> None:  # noqa: B027 - optional for adapters
        """Release what open() took."""

    @abc.abstractmethod
    async def add(self, record: KeyRecord, *, max_live: int, now: datetime) -> None:
        """Store a new key; TooManyKeysError if its owner has `max_live` live keys already."""

    @abc.abstractmethod
    async def list(self, user_id: str) -> list[KeyRecord]:
        """The user's keys, oldest first."""

    @abc.abstractmethod
    async def find(self, key_hash: bytes) -> KeyRecord | None:
        """The key with this hash, whoever owns it; None if there is none."""

    @abc.abstractmethod
    async def remove(self, user_id: str, key_id: str) -> bool:
        """Delete one of the user's keys; False if the user has no key with this id."""

    @abc.abstractmethod
    async def remove_user(self, user_id: str) -> int:
        """Delete every key of the user; how many there were."""

    @abc.abstractmethod
    async def touch(self, record: KeyRecord, when: datetime) -> None:
        """Record that the key was used at `when` (nothing if it is gone meanwhile)."""


def _time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(float(value), UTC)


def _stamp(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def to_payload(record: KeyRecord) -> dict[str, Any]:
    """The record as JSON: times as Unix seconds, so a store can range-filter on them."""
    return {
        "key_id": record.id,
        "user_id": record.user_id,
        "name": record.name,
        "prefix": record.prefix,
        "key_hash": record.key_hash.hex(),
        "scopes": list(record.scopes),
        "created_at": _stamp(record.created_at),
        "expires_at": _stamp(record.expires_at),
        "last_used_at": _stamp(record.last_used_at),
    }


def from_payload(payload: dict[str, Any]) -> KeyRecord:
    created = _time(payload["created_at"])
    assert created is not None
    return KeyRecord(
        id=str(payload["key_id"]),
        user_id=str(payload["user_id"]),
        name=str(payload["name"]),
        prefix=str(payload["prefix"]),
        key_hash=bytes.fromhex(payload["key_hash"]),
        scopes=tuple(payload["scopes"]),
        created_at=created,
        expires_at=_time(payload.get("expires_at")),
        last_used_at=_time(payload.get("last_used_at")),
    )
