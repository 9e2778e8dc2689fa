"""Embedded key store: one JSON file under MEMORY_DATA_DIR, held in memory, rewritten whole
on every change (temp file, fsync, rename, directory fsync), so a crash leaves either the
old file or the new one. A person has at most a few dozen keys, so the file stays small."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from memory_service.store.keys.base import (
    KeyRecord,
    KeyStore,
    TooManyKeysError,
    from_payload,
    to_payload,
)

FILE_NAME = "api_keys.json"
_VERSION = 1


def _write_atomically(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class EmbeddedKeyStore(KeyStore):
    backend = "embedded"

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / FILE_NAME
        self._by_hash: dict[bytes, KeyRecord] = {}
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            document = json.loads(await asyncio.to_thread(self.path.read_bytes))
            if document.get("version") != _VERSION:
                raise RuntimeError(f"{self.path}: unknown key file version")
            records = [from_payload(entry) for entry in document["keys"]]
            self._by_hash = {record.key_hash: record for record in records}

    async def _save(self, by_hash: dict[bytes, KeyRecord]) -> None:
        """Write the new set of keys, then make it the one served (the lock is held)."""
        document = {"version": _VERSION, "keys": [to_payload(r) for r in by_hash.values()]}
        data = json.dumps(document, separators=(",", ":")).encode()
        await asyncio.to_thread(_write_atomically, self.path, data)
        self._by_hash = by_hash

    async def add(self, record: KeyRecord, *, max_live: int, now: datetime) -> None:
        async with self._lock:
            live = sum(
                1 for r in self._by_hash.values() if r.user_id == record.user_id and r.live(now)
            )
            if live >= max_live:
                raise TooManyKeysError(
                    f"at most {max_live} live API keys per user; revoke one first"
                )
            await self._save({**self._by_hash, record.key_hash: record})

    async def list(self, user_id: str) -> list[KeyRecord]:
        mine = [r for r in self._by_hash.values() if r.user_id == user_id]
        return sorted(mine, key=lambda r: (r.created_at, r.id))

    async def find(self, key_hash: bytes) -> KeyRecord | None:
        return self._by_hash.get(key_hash)

    async def remove(self, user_id: str, key_id: str) -> bool:
        async with self._lock:
            kept = {
                h: r
                for h, r in self._by_hash.items()
                if not (r.user_id == user_id and r.id == key_id)
            }
            if len(kept) == len(self._by_hash):
                return False
            await self._save(kept)
            return True

    async def remove_user(self, user_id: str) -> int:
        async with self._lock:
            kept = {h: r for h, r in self._by_hash.items() if r.user_id != user_id}
            removed = len(self._by_hash) - len(kept)
            if removed:
                await self._save(kept)
            return removed

    async def touch(self, record: KeyRecord, when: datetime) -> None:
        async with self._lock:
            current = self._by_hash.get(record.key_hash)
            if current is None or current.id != record.id:
                return
            await self._save(
                {**self._by_hash, record.key_hash: replace(current, last_used_at=when)}
            )
