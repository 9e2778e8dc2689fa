"""The embedded store's data dir: the lock that keeps a second process out, the manifest
that names each shard's directory in use, and where shards and their maintenance copies
live.

    DATA_DIR/.lock
    DATA_DIR/memory-layer.json            collection, model, dimension, shard directories
    DATA_DIR/collections/<base>[.<n>]     a shard; .<n> are maintenance's copies
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from memory_service.store.embedded.files import replace_durably
from memory_service.store.interface import CollectionSpec, DimensionMismatchError, StoreError
from service_kit.holders import DATA_DIR_LOCK as LOCK_FILE
from service_kit.holders import lock_holder

MANIFEST = "memory-layer.json"


class DataDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    @property
    def collections(self) -> Path:
        return self.path / "collections"

    def lock(self) -> None:
        """Create the data dir if missing and hold it for this process."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            holder = lock_holder(self.path / LOCK_FILE)
            by = f" ({holder})" if holder else ""
            raise StoreError(f"data dir {self.path} is in use by another process{by}") from exc
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def shard_names(self, spec: CollectionSpec, new_store_shards: int) -> list[tuple[str, str]]:
        """(base, directory in use) of each shard: as the manifest says, else new ones."""
        path = self.path / MANIFEST
        manifest = json.loads(path.read_text()) if path.exists() else {}
        if manifest and int(manifest["dimension"]) != spec.dimension:
            raise DimensionMismatchError(
                f"data dir {self.path} holds {manifest['dimension']}-dimensional embeddings "
                f"of model {manifest['model']!r}, but the configured model {spec.model!r} "
                f"produces {spec.dimension}-dimensional embeddings; "
                "use another MEMORY_DATA_DIR or the original model"
            )
        if manifest.get("collection") == spec.name:
            names = manifest.get("shards") or [manifest.get("shard", spec.name)]
            return [(re.sub(r"\.\d+$", "", str(n)), str(n)) for n in names]
        if (self.collections / spec.name / "segments").exists():
            # A store from before shards had their own directories: one shard.
            return [(spec.name, spec.name)]
        count = new_store_shards
        names = [spec.name] if count == 1 else [f"{spec.name}-{i}" for i in range(count)]
        return [(name, name) for name in names]

    def copies(self, base: str) -> list[Path]:
        """A shard's directories: the one in use and any maintenance copies."""
        if not self.collections.exists():
            return []
        pattern = re.compile(re.escape(base) + r"(\.\d+)?")
        return [p for p in self.collections.iterdir() if pattern.fullmatch(p.name)]

    def remove_stale_copies(self, shards: Iterable[tuple[str, str]]) -> None:
        """Remove each (base, name) shard's directories other than the one in use."""
        # A copy left by maintenance that stopped before taking over holds nothing that
        # the shard in use lacks: writes were acknowledged from the shard in use only.
        for base, name in shards:
            for path in self.copies(base):
                if path.name != name:
                    shutil.rmtree(path, ignore_errors=True)

    def next_copy_dir(self, base: str) -> Path:
        suffixes = [p.name[len(base) + 1 :] for p in self.copies(base)]
        numbers = [int(n) for n in suffixes if n.isdigit()]
        return self.collections / f"{base}.{max(numbers, default=0) + 1}"

    def write_manifest(self, spec: CollectionSpec, shard_names: list[str]) -> None:
        manifest = {
            "collection": spec.name,
            "model": spec.model,
            "dimension": spec.dimension,
            "shards": shard_names,
        }
        replace_durably(self.path / MANIFEST, json.dumps(manifest, indent=2))
