"""Server key store: a small payload-only collection in the Qdrant server that holds the
memories, so every memory_service replica sees the same keys. A point's id is derived from
the key's hash, so resolving a key is one lookup by id.

Qdrant has no transactions, so the per-user limit is kept by a lock: adding a key counts the
user's live keys and writes the new one while holding a lock point of that user, taken with a
conditional upsert (it replaces the point only when its lease has run out) and read back to
see who got it. Every replica takes the same point, so two adds for one user never count at
once, whichever replicas serve them."""

from __future__ import annotations

import asyncio
import hmac
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from memory_service.store.interface import StoreError, StoreUnavailableError
from memory_service.store.keys.base import (
    KeyRecord,
    KeyStore,
    TooManyKeysError,
    from_payload,
    to_payload,
)

_PAGE = 256
# How long a user's lock is held at most: far beyond an add (a count and a write, each
# bounded by the store's timeout), so it only frees the lock of a replica that died holding it.
LOCK_LEASE_SECONDS = 30.0
# Waiting for a user's lock held by another replica: retry after a random pause this long.
_LOCK_RETRY_SECONDS = (0.005, 0.025)
_LOCK_IDS = uuid.UUID("9b6f3a52-43f4-4a53-9c55-6b0e7f3d2a17")
# Adds on this replica wait here first, so replicas contend for the lock point, not requests.
_LOCAL_STRIPES = 64


def point_id(key_hash: bytes) -> str:
    return str(uuid.UUID(bytes=key_hash[:16]))


def lock_point_id(user_id: str) -> str:
    return str(uuid.uuid5(_LOCK_IDS, user_id))


def _match(key: str, value: str) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


class ServerKeyStore(KeyStore):
    backend = "server"

    def __init__(self, client: AsyncQdrantClient, collection: str, *, timeout: float = 3.0) -> None:
        # The client belongs to the memory store, which closes it.
        self.client = client
        self.collection = collection
        self.timeout = timeout
        self._local = [asyncio.Lock() for _ in range(_LOCAL_STRIPES)]

    @asynccontextmanager
    async def _translated(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self.timeout):
                yield
        except TimeoutError as exc:
            raise StoreUnavailableError(f"Qdrant did not answer within {self.timeout:g} s") from exc
        except (ResponseHandlingException, OSError) as exc:
            raise StoreUnavailableError(f"cannot reach Qdrant: {exc}") from exc
        except UnexpectedResponse as exc:
            if exc.status_code == 429 or (exc.status_code or 0) >= 500:
                raise StoreUnavailableError(f"Qdrant answered {exc.status_code}") from exc
            raise StoreError(f"Qdrant refused a request: {exc.status_code}") from exc

    async def open(self) -> None:
        async with self._translated():
            if not await self.client.collection_exists(self.collection):
                await self.client.create_collection(self.collection, vectors_config={})
            for key in ("user_id", "key_id", "holder"):
                await self.client.create_payload_index(
                    self.collection, key, models.PayloadSchemaType.KEYWORD, wait=True
                )

    async def _scroll(self, conditions: list[Any]) -> list[tuple[Any, dict[str, Any]]]:
        found: list[tuple[Any, dict[str, Any]]] = []
        offset = None
        while True:
            points, offset = await self.client.scroll(
                self.collection,
                scroll_filter=models.Filter(must=conditions),
                limit=_PAGE,
                offset=offset,
                with_payload=True,
            )
            found.extend((p.id, p.payload or {}) for p in points)
            if offset is None:
                return found

    @asynccontextmanager
    async def _user_locked(self, user_id: str) -> AsyncIterator[None]:
        """Hold the user's lock point (the caller translates the store's failures)."""
        point = lock_point_id(user_id)
        holder = uuid.uuid4().hex
        while True:
            now = time.time()
            claim = models.PointStruct(
                id=point,
                vector={},
                # No user_id field: the user's keys are found by it, the lock is not one.
                payload={"lock_of": user_id, "holder": holder, "until": now + LOCK_LEASE_SECONDS},
            )
            # Written if the point is absent or its lease is over; left as it is otherwise.
            lease_over = models.Filter(
                must=[models.FieldCondition(key="until", range=models.Range(lt=now))]
            )
            await self.client.upsert(
                self.collection, points=[claim], update_filter=lease_over, wait=True
            )
            found = await self.client.retrieve(self.collection, [point], with_payload=True)
            if found and (found[0].payload or {}).get("holder") == holder:
                break
            await asyncio.sleep(random.uniform(*_LOCK_RETRY_SECONDS))
        try:
            yield
        finally:
            mine = models.Filter(
                must=[models.HasIdCondition(has_id=[point]), _match("holder", holder)]
            )
            await self.client.delete(
                self.collection, points_selector=models.FilterSelector(filter=mine), wait=True
            )

    async def add(self, record: KeyRecord, *, max_live: int, now: datetime) -> None:
        stripe = self._local[hash(record.user_id) % _LOCAL_STRIPES]
        async with stripe, self._translated(), self._user_locked(record.user_id):
            live = models.Filter(
                must=[_match("user_id", record.user_id)],
                should=[
                    models.IsNullCondition(is_null=models.PayloadField(key="expires_at")),
                    models.FieldCondition(key="expires_at", range=models.Range(gt=now.timestamp())),
                ],
            )
            counted = await self.client.count(self.collection, count_filter=live, exact=True)
            if counted.count >= max_live:
                raise TooManyKeysError(
                    f"at most {max_live} live API keys per user; revoke one first"
                )
            point = models.PointStruct(
                id=point_id(record.key_hash), vector={}, payload=to_payload(record)
            )
            await self.client.upsert(self.collection, points=[point], wait=True)

    async def list(self, user_id: str) -> list[KeyRecord]:
        async with self._translated():
            found = await self._scroll([_match("user_id", user_id)])
        records = [from_payload(payload) for _, payload in found]
        return sorted(records, key=lambda r: (r.created_at, r.id))

    async def find(self, key_hash: bytes) -> KeyRecord | None:
        async with self._translated():
            points = await self.client.retrieve(
                self.collection, [point_id(key_hash)], with_payload=True
            )
        if not points or not points[0].payload:
            return None
        record = from_payload(points[0].payload)
        # The point id holds half the hash; the whole hash must match.
        return record if hmac.compare_digest(record.key_hash, key_hash) else None

    async def remove(self, user_id: str, key_id: str) -> bool:
        async with self._translated():
            found = await self._scroll([_match("user_id", user_id), _match("key_id", key_id)])
            if not found:
                return False
            ids = [pid for pid, _ in found]
            await self.client.delete(
                self.collection, points_selector=models.PointIdsList(points=ids), wait=True
            )
            return True

    async def remove_user(self, user_id: str) -> int:
        async with self._translated():
            found = await self._scroll([_match("user_id", user_id)])
            if found:
                ids = [pid for pid, _ in found]
                await self.client.delete(
                    self.collection, points_selector=models.PointIdsList(points=ids), wait=True
                )
            return len(found)

    async def touch(self, record: KeyRecord, when: datetime) -> None:
        async with self._translated():
            await self.client.set_payload(
                self.collection,
                payload={"last_used_at": when.timestamp()},
                points=[point_id(record.key_hash)],
                wait=True,
            )
