"""API keys as the memory service keeps them: checked again here (the gateway checked them
first), stored as a hash, resolved for the gateway, each use recorded to the minute."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from memory_service.store.interface import StoreError
from memory_service.store.keys import KeyRecord, KeyStore
from service_kit.api_keys import (
    DISPLAY_PREFIX_CHARS,
    KEY_HASH_BYTES,
    KEY_PREFIX,
    MAX_KEY_DAYS,
    MAX_LIVE_KEYS_PER_USER,
    checked_key_name,
    checked_scopes,
)
from service_kit.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError
from service_kit.identity import Identity

log = logging.getLogger(__name__)

# last_used_at is written at most this often per key.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# An expiry at most this far past MAX_KEY_DAYS (the gateway computes it a moment earlier).
_EXPIRY_SLACK = timedelta(days=1)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ApiKeys:
    store: KeyStore
    clock: Callable[[], datetime] = _now

    async def create(
        self,
        who: Identity,
        *,
        name: str,
        key_hash: bytes,
        prefix: str,
        scopes: list[str],
        expires_at: datetime | None,
    ) -> KeyRecord:
        now = self.clock()
        try:
            name, valid_scopes = checked_key_name(name), checked_scopes(scopes)
        except ValueError as exc:
            raise InvalidArgumentError(str(exc)) from None
        if len(key_hash) != KEY_HASH_BYTES:
            raise InvalidArgumentError("key_hash must be a SHA-256 digest")
        if not prefix.startswith(KEY_PREFIX) or len(prefix) != DISPLAY_PREFIX_CHARS:
            raise InvalidArgumentError("prefix must be the key's first characters")
        if expires_at is not None and not (
            now < expires_at <= now + timedelta(days=MAX_KEY_DAYS) + _EXPIRY_SLACK
        ):
            raise InvalidArgumentError(f"a key expires within {MAX_KEY_DAYS} days")
        record = KeyRecord(
            id=str(uuid.uuid4()),
            user_id=who.user_id,
            name=name,
            prefix=prefix,
            key_hash=key_hash,
            scopes=valid_scopes,
            created_at=now,
            expires_at=expires_at,
        )
        await self.store.add(record, max_live=MAX_LIVE_KEYS_PER_USER, now=now)
        return record

    async def list(self, who: Identity) -> list[KeyRecord]:
        return await self.store.list(who.user_id)

    async def revoke(self, who: Identity, key_id: str) -> None:
        if not await self.store.remove(who.user_id, key_id):
            raise NotFoundError("API key not found")

    async def resolve(self, who: Identity, key_hash: bytes) -> KeyRecord:
        """The live key with this hash. Unknown, expired and malformed all read the same."""
        if not who.is_admin:
            raise PermissionDeniedError("only the gateway resolves API keys")
        now = self.clock()
        record = await self.store.find(key_hash) if len(key_hash) == KEY_HASH_BYTES else None
        if record is None or not record.live(now):
            raise NotFoundError("no such API key")
        last = record.last_used_at
        if last is None or now - last >= LAST_USED_RESOLUTION:
            used = now.replace(second=0, microsecond=0)
            # Recording the use is best effort: the request it serves goes on regardless.
            with contextlib.suppress(StoreError):
                await self.store.touch(record, used)
        return record

    async def delete_user(self, who: Identity, user_id: str) -> int:
        if not who.is_admin:
            raise PermissionDeniedError("only an admin may delete another user's keys")
        return await self.store.remove_user(user_id)
