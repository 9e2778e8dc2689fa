"""Embedded store: the Qdrant engine in process (qdrant-edge), persisted under a data dir."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from memory_service.allocator import release_mapped_pages
from memory_service.models import Memory, MemoryPoint
from memory_service.models import SparseVector as Sparse
from memory_service.store import base
from memory_service.store.payload import memory_of, to_payload

MANIFEST = "memory-layer.json"
POOL_THREADS = 4
# Shards of a new store; opening one holds the GIL for ~0.3 s per million points here.
DEFAULT_SHARDS = 8
COARSE_CLOCK_SLACK_SECONDS = 1.0
# A shard is flushed once this many updates reached it since its last flush. The engine
# holds the GIL while it flushes, for as long as it takes to write what changed, so many
# small flushes pause the service less than one after a burst of writes.
FLUSH_EVERY_UPDATES = 2_000
# Writes made while maintenance worked on a copy are applied to it in slices of this long.
REPLAY_SLICE_SECONDS = 0.01
# Above any one user's vectors (KB): a search is always an exact scan of the user's points.
EXACT_SEARCH_KB = 1 << 40


def _condition(cond: base.Condition) -> Any:
    match cond:
        case base.Match(key, value):
            return qe.FieldCondition(key, match=qe.MatchValue(value))
        case base.MatchAny(key, values):
            return qe.FieldCondition(key, match=qe.MatchAny(list(values)))
        case base.Range(key, gte, lte):
            return qe.FieldCondition(key, range=qe.RangeFloat(gte=gte, lte=lte))
        case base.HasId(point_id):
            return qe.HasIdCondition({point_id})
    raise ValueError(f"unknown condition {cond!r}")


def _filter(conditions: list[base.Condition]) -> qe.Filter:
    return qe.Filter(must=[_condition(c) for c in conditions])


def _nearest_query(query: base.NearestQuery) -> Any:
    vector = query.vector
    if isinstance(vector, Sparse):
        return qe.Query.Nearest(qe.SparseVector(vector.indices, vector.values), using=query.using)
    return qe.Query.Nearest(vector, using=query.using)


def _payload(fields: list[str] | None) -> Any:
    return True if fields is None else qe.PayloadSelector.Include(fields)


def edge_config(dimension: int) -> qe.EdgeConfig:
    """The shard layout, the same for the serving shard and for maintenance over a copy."""
    # Vectors, payloads and the id tracker stay on disk (Cold) and are paged in when a
    # query touches them: every query is one user's, so resident memory follows the
    # users being served, not the size of the store. The placement is fixed when a
    # segment is created, and holds only for sealed (non-appendable) segments: the engine
    # keeps an appendable segment's indexes and id tracker in memory whatever it says.
    cold = qe.Memory.Cold
    return qe.EdgeConfig(
        vectors={
            base.DENSE_VECTOR: qe.EdgeVectorParams(
                size=dimension, distance=qe.Distance.Cosine, memory=cold
            )
        },
        sparse_vectors={
            base.SPARSE_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf, memory=cold)
        },
        payload_memory=cold,
        id_tracker_memory=cold,
        wal_enabled=True,
        # Every query is filtered to one user, whose memories the tenant index finds and
        # scores exactly; an HNSW graph over everyone's vectors would not be used for that
        # and took ~8 minutes per 100,000 points to build here. So the index built when a
        # segment is sealed has no graph (m and payload_m 0) and every search scores the
        # user's points exactly, however many they are (full_scan_threshold).
        hnsw_config=qe.HnswIndexConfig(
            m=0, ef_construct=100, full_scan_threshold=EXACT_SEARCH_KB, payload_m=0
        ),
        # The engine optimizes only when maintenance tells it to (see maintenance.py); it
        # then seals every appendable segment that holds anything, merges segments and
        # drops deleted points (~5 s per 100,000 points here).
        optimizers=qe.EdgeOptimizersConfig(
            indexing_threshold=1,
            default_segment_number=1,
            deleted_threshold=0.01,
            vacuum_min_vector_number=100,
        ),
    )


def payload_indexes() -> dict[str, Any]:
    """The payload fields that queries filter or order by, with their index parameters.

    On disk (Cold) like the rest: in a sealed segment the engine otherwise keeps each index
    in memory (~1 KB per point here for these five)."""
    cold = qe.Memory.Cold
    return {
        "user_id": qe.KeywordIndexParams(is_tenant=True, memory=cold),
        "provider": qe.KeywordIndexParams(memory=cold),
        "conversation_id": qe.KeywordIndexParams(memory=cold),
        "kind": qe.KeywordIndexParams(memory=cold),
        "created_at": qe.FloatIndexParams(memory=cold),
    }


def ensure_payload_indexes(shard: qe.EdgeShard, *, rebuild_misplaced: bool) -> None:
    """Create the payload indexes the shard lacks; with rebuild_misplaced, also rebuild
    those held in memory (a store created before they were placed on disk)."""
    schema = shard.info().payload_schema
    for key, params in payload_indexes().items():
        present = schema.get(key)
        misplaced = present is not None and getattr(present.params, "memory", None) != params.memory
        if present is None or (rebuild_misplaced and misplaced):
            shard.update(qe.UpdateOperation.create_field_index(key, params))


def _point(p: MemoryPoint) -> qe.Point:
    return qe.Point(
        p.memory.id,
        {
            base.DENSE_VECTOR: p.dense,
            base.SPARSE_VECTOR: qe.SparseVector(p.sparse.indices, p.sparse.values),
        },
        to_payload(p.memory),
    )


def _data_ranges(fd: int) -> Iterator[tuple[int, int]]:
    """The [start, end) byte ranges of an open file that hold data (not holes)."""
    size = os.fstat(fd).st_size
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:  # nothing but a hole up to the end
            return
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end
        offset = end


def _copy_sparse(src: str, dst: str) -> None:
    """Copy a file's data ranges only: the engine preallocates its log and vector files,
    and a plain copy would write their holes out in full."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        for start, end in _data_ranges(fin.fileno()):
            while start < end:
                copied = os.copy_file_range(fin.fileno(), fout.fileno(), end - start, start, start)
                if copied == 0:
                    raise OSError(f"{src} shrank while being copied")
                start += copied
        fout.truncate(os.fstat(fin.fileno()).st_size)
    shutil.copystat(src, dst)


def _copy_modified(source: Path, target: Path, since: float) -> None:
    """Make target equal source, recopying only files modified at or after since."""
    seen: set[Path] = set()
    for root, _, files in os.walk(source):
        relative = Path(root).relative_to(source)
        (target / relative).mkdir(parents=True, exist_ok=True)
        for name in files:
            path, copy = Path(root) / name, target / relative / name
            seen.add(relative / name)
            stat = path.stat()
            if (
                not copy.exists()
                or stat.st_mtime >= since
                or stat.st_ctime >= since
                or copy.stat().st_size != stat.st_size
            ):
                _copy_sparse(str(path), str(copy))
    for root, _, files in os.walk(target, topdown=False):
        relative = Path(root).relative_to(target)
        for name in files:
            if relative / name not in seen:
                (Path(root) / name).unlink()
        if not (source / relative).is_dir():
            Path(root).rmdir()


def _replay(
    shard: qe.EdgeShard,
    ops: Sequence[qe.UpdateOperation],
    start: int = 0,
    budget_seconds: float = math.inf,
) -> int:
    """Apply ops[start:] in order until done or past budget_seconds; returns the index of
    the first op not applied."""
    started = time.perf_counter()
    # Writes on other threads may append to ops meanwhile: those are left for the next call.
    end = len(ops)
    for index in range(start, end):
        shard.update(ops[index])
        if time.perf_counter() - started >= budget_seconds:
            return index + 1
    return end


def write_back(path: Path) -> None:
    """Write every file under path to disk, off the GIL.

    The engine holds the GIL while it flushes or closes a shard, and most of that time goes
    to waiting for the disk (a flush after some writes: ~200 ms here, ~20 ms once this ran
    first). Written back first, its flush finds little left to write."""
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                fd = os.open(os.path.join(root, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)


def _flush_for_copy(shard: qe.EdgeShard, path: Path) -> float:
    write_back(path)
    # File times come from the kernel's coarse clock: step back a little, so a write just
    # after the flush cannot carry an earlier time.
    started = time.time() - COARSE_CLOCK_SLACK_SECONDS
    shard.flush()
    return started


def _close(shard: qe.EdgeShard, path: Path) -> None:
    write_back(path)
    shard.close()


@dataclass(eq=False)
class EdgeShardSlot:
    """One of the store's shards: the directory in use and what maintenance keeps of it."""

    base: str
    name: str
    engine: qe.EdgeShard | None = None
    # While maintenance works on a copy of this shard, every write applied here is also
    # kept to be applied to the copy before it takes over.
    journal: list[qe.UpdateOperation] | None = None
    deleted_since_maintenance: int = 0
    # Of those, how many were deleted before the maintenance copy was taken: the ones after
    # it are still in the copy (applied to it as deletions) and count for the next run.
    deleted_before_copy: int = 0
    # Updates applied since its last flush.
    updates_since_flush: int = 0

    @property
    def written(self) -> bool:
        return self.updates_since_flush > 0

    @property
    def shard(self) -> qe.EdgeShard:
        if self.engine is None:
            raise base.StoreError("store is not open")
        return self.engine


class EdgeMemoryStore(base.MemoryStore):
    """Users are spread over several shards by a hash of their id, and every query is one
    user's, so it goes to one shard. The engine holds the GIL while it opens a shard
    (~0.3 s per million points here), which stalls everything in the process: maintenance
    replaces one shard at a time, so each pause is a fraction of that."""

    backend = "embedded"

    def __init__(
        self, data_dir: Path, spec: base.CollectionSpec, *, shards: int = DEFAULT_SHARDS
    ) -> None:
        self.data_dir = Path(data_dir)
        self.spec = spec
        # For a new store; an existing one keeps the shards its manifest names.
        self.new_store_shards = shards
        self.slots: list[EdgeShardSlot] = []
        self._lock_fd: int | None = None
        # The engine releases the GIL; a small pool lets reads overlap with a write.
        self._pool = ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="edge-store")
        self._writes = asyncio.Lock()

    @property
    def collections_dir(self) -> Path:
        return self.data_dir / "collections"

    def shard_dir(self, slot: EdgeShardSlot) -> Path:
        return self.collections_dir / slot.name

    @property
    def shard_dirs(self) -> list[Path]:
        return [self.shard_dir(slot) for slot in self.slots]

    @property
    def maintaining(self) -> bool:
        """Whether maintenance is working on a copy of one of the shards."""
        return any(slot.journal is not None for slot in self.slots)

    @property
    def deleted_since_maintenance(self) -> int:
        return sum(slot.deleted_since_maintenance for slot in self.slots)

    def _slot_index(self, user_id: str) -> int:
        return zlib.crc32(user_id.encode()) % len(self.slots)

    def slot_of(self, user_id: str) -> EdgeShardSlot:
        """The shard that holds the user's memories."""
        return self.slots[self._slot_index(user_id)]

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except base.StoreError:
            raise
        except Exception as exc:
            # The engine raises bare Exception for every failure (I/O, a closed shard), so
            # there is nothing narrower to catch; the caller learns the store failed.
            raise base.StoreError(f"embedded store failed: {exc}") from exc

    def _shard(self, user_id: str) -> qe.EdgeShard:
        return self.slot_of(user_id).shard

    def _shard_for(self, conditions: list[base.Condition]) -> qe.EdgeShard:
        """The shard of the user every read's conditions start from."""
        for cond in conditions:
            if isinstance(cond, base.Match) and cond.key == "user_id":
                return self._shard(cond.value)
        raise ValueError("a user id is required for every store read")

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        self.slots = [EdgeShardSlot(base, name) for base, name in self._shard_names()]
        self._remove_stale_copies()
        config = edge_config(self.spec.dimension)
        for slot in self.slots:
            path = self.shard_dir(slot)
            if (path / "segments").exists():
                try:
                    slot.engine = qe.EdgeShard.load(str(path), config)
                except Exception as exc:
                    raise base.StoreError(f"cannot open the store at {path}: {exc}") from exc
            else:
                path.mkdir(parents=True, exist_ok=True)
                slot.engine = qe.EdgeShard.create(str(path), config)
            ensure_payload_indexes(slot.engine, rebuild_misplaced=False)
        self._write_manifest()
        # Nothing else runs on the store yet.
        release_mapped_pages(self.collections_dir)

    def _lock_data_dir(self) -> None:
        fd = os.open(self.data_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise base.StoreError(
                f"data dir {self.data_dir} is in use by another memory_service process"
            ) from exc
        self._lock_fd = fd

    def _shard_names(self) -> list[tuple[str, str]]:
        """(base, directory in use) of each shard: as the manifest says, else new ones."""
        path = self.data_dir / MANIFEST
        manifest = json.loads(path.read_text()) if path.exists() else {}
        if manifest and int(manifest["dimension"]) != self.spec.dimension:
            raise base.DimensionMismatchError(
                f"data dir {self.data_dir} holds {manifest['dimension']}-dimensional embeddings "
                f"of model {manifest['model']!r}, but the configured model {self.spec.model!r} "
                f"produces {self.spec.dimension}-dimensional embeddings; "
                "use another MEMORY_DATA_DIR or the original model"
            )
        if manifest.get("collection") == self.spec.name:
            names = manifest.get("shards") or [manifest.get("shard", self.spec.name)]
            return [(re.sub(r"\.\d+$", "", str(n)), str(n)) for n in names]
        if (self.collections_dir / self.spec.name / "segments").exists():
            # A store from before shards had their own directories: one shard.
            return [(self.spec.name, self.spec.name)]
        count = self.new_store_shards
        bases = [self.spec.name] if count == 1 else [f"{self.spec.name}-{i}" for i in range(count)]
        return [(base, base) for base in bases]

    def shard_copies(self, slot: EdgeShardSlot) -> list[Path]:
        """A shard's directories: the one in use and any maintenance copies."""
        if not self.collections_dir.exists():
            return []
        pattern = re.compile(re.escape(slot.base) + r"(\.\d+)?")
        return [p for p in self.collections_dir.iterdir() if pattern.fullmatch(p.name)]

    def _remove_stale_copies(self) -> None:
        # A copy left by maintenance that stopped before taking over holds nothing that
        # the shard in use lacks: writes were acknowledged from the shard in use only.
        for slot in self.slots:
            for path in self.shard_copies(slot):
                if path.name != slot.name:
                    shutil.rmtree(path, ignore_errors=True)

    def next_copy_dir(self, slot: EdgeShardSlot) -> Path:
        suffixes = [p.name[len(slot.base) + 1 :] for p in self.shard_copies(slot)]
        numbers = [int(n) for n in suffixes if n.isdigit()]
        return self.collections_dir / f"{slot.base}.{max(numbers, default=0) + 1}"

    def _write_manifest(self) -> None:
        manifest = {
            "collection": self.spec.name,
            "model": self.spec.model,
            "dimension": self.spec.dimension,
            "shards": [slot.name for slot in self.slots],
        }
        tmp = self.data_dir / (MANIFEST + ".tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(manifest, indent=2))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.data_dir / MANIFEST)
        # The rename is what switches shards after maintenance: make it survive a crash.
        dir_fd = os.open(self.data_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    async def close(self) -> None:
        for slot in self.slots:
            if slot.engine is not None:
                engine, slot.engine = slot.engine, None
                await self._run(engine.close)
        self._pool.shutdown(wait=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def _write(self, fn: Any, *args: Any) -> Any:
        async with self._writes:
            result = await self._run(fn, *args)
        # Outside the write lock, as flush_written: other writes need not wait for the disk.
        # None while maintenance works on a copy: what it copied is in the copy, later
        # writes are in the log, and the optimizer writing the copy keeps the disk busy, so
        # a flush (which holds the GIL) would wait for the disk (~120 ms here) and stall the
        # service meanwhile. The first write after the copy takes over flushes again.
        if not self.maintaining:
            for slot in self.slots:
                if slot.updates_since_flush >= FLUSH_EVERY_UPDATES:
                    await self._flush(slot)
        return result

    async def _flush(self, slot: EdgeShardSlot) -> None:
        slot.updates_since_flush = 0
        await self._run(_flush_for_copy, slot.shard, self.shard_dir(slot))

    def _apply(self, slot: EdgeShardSlot, op: qe.UpdateOperation) -> None:
        # The update returns once the operation is in the shard's write-ahead log.
        slot.shard.update(op)
        slot.updates_since_flush += 1
        if slot.journal is not None:
            slot.journal.append(op)

    def _upsert(self, points: Sequence[MemoryPoint], mode: qe.UpdateMode | None = None) -> None:
        # One update per shard the points belong to; the call returns once every one is in
        # its shard's log. A failure part way fails the whole call, and a retry writes the
        # same ids again.
        groups: dict[int, list[MemoryPoint]] = {}
        for p in points:
            groups.setdefault(self._slot_index(p.memory.user_id), []).append(p)
        for index, group in groups.items():
            op = qe.UpdateOperation.upsert_points([_point(p) for p in group], update_mode=mode)
            self._apply(self.slots[index], op)

    async def upsert(self, points: Sequence[MemoryPoint]) -> None:
        await self._write(self._upsert, points)

    async def insert_new(self, points: Sequence[MemoryPoint]) -> list[Memory]:
        return list(await self._write(self._insert_new, points))

    def _retrieve_everywhere(self, ids: list[qe.PointId], with_payload: bool) -> list[qe.Record]:
        # An id may be any user's, so every shard is asked.
        return [r for slot in self.slots for r in slot.shard.retrieve(ids, with_payload, False)]

    def _insert_new(self, points: Sequence[MemoryPoint]) -> list[Memory]:
        # An id lookup in the same call as the write: no filtered scroll, no second thread
        # hop, and no other write in between.
        ids: list[qe.PointId] = list(dict.fromkeys(p.memory.id for p in points))
        fresh, result = base.stored_or_own(points, self._retrieve_everywhere(ids, True))
        if fresh:
            self._upsert(fresh, qe.UpdateMode.InsertOnly)
        return result

    async def copy_for_maintenance(self, slot: EdgeShardSlot, target: Path) -> None:
        """Copy the shard to target as of one instant, then keep every later write for it.

        A copy taken while the engine writes could be torn, so it goes in two passes. The
        first copies everything while writes go on, after a flush has written every
        mapped page back: from then on the first write to any page of a file marks the
        file modified. The second runs with writes held: flush again, then copy once more
        only what was modified since the first flush. Writes wait only for that second,
        short pass; reads never wait.
        """
        source = self.shard_dir(slot)
        since = await self._run(_flush_for_copy, slot.shard, source)
        with contextlib.suppress(shutil.Error):
            # Files the engine replaces meanwhile fail to copy here; the second pass
            # copies whatever they became.
            await self._run(shutil.copytree, source, target, False, None, _copy_sparse)
        async with self._writes:
            await self._run(_flush_for_copy, slot.shard, source)
            await self._run(_copy_modified, source, target, since)
            slot.journal = []
            slot.deleted_before_copy = slot.deleted_since_maintenance

    def abandon_copy(self, slot: EdgeShardSlot, target: Path) -> None:
        """Drop a maintenance copy that will not take over (never the shard in use)."""
        slot.journal = None
        if target.name != slot.name:
            shutil.rmtree(target, ignore_errors=True)

    async def take_over(self, slot: EdgeShardSlot, target: Path) -> None:
        """Serve the shard from the maintained copy at target: open it, apply the writes
        made since it was copied, switch the manifest to it, and release the old one."""
        journal = slot.journal
        if journal is None:
            raise base.StoreError("no maintenance copy is being kept up to date")
        # Opening writes to the copy's files: written back first, off the GIL, none of
        # their pages is still on its way to the disk then.
        await self._run(write_back, target)
        shard = await self._run(qe.EdgeShard.load, str(target), edge_config(self.spec.dimension))
        try:
            # Catch up outside the write lock while writes keep coming, so the final step
            # under the lock is short. The engine holds the GIL for each update, and a loop
            # of them would leave every other thread waiting for it at each switch (a
            # search needs it dozens of times): replay in slices, with pauses as long.
            done = 0
            while len(journal) - done > 64:
                done = await self._run(_replay, shard, journal, done, REPLAY_SLICE_SECONDS)
                await asyncio.sleep(REPLAY_SLICE_SECONDS)
            async with self._writes:
                await self._run(_replay, shard, journal, done)
                # No flush: what was replayed is in the copy's write-ahead log, like any
                # acknowledged write, and a flush here would hold the GIL.
                old, old_name = slot.shard, slot.name
                slot.name = target.name
                try:
                    # fsync can take a while on a busy disk: off the event loop.
                    await self._run(self._write_manifest)
                except BaseException:
                    # Writes go on to the old shard, so the manifest must name it.
                    slot.name = old_name
                    await self._run(self._write_manifest)
                    raise
                slot.engine, slot.journal = shard, None
        except BaseException:
            slot.journal = None
            await self._run(shard.close)
            raise
        slot.deleted_since_maintenance -= slot.deleted_before_copy
        slot.deleted_before_copy = 0
        await self._drain_pool()
        await self._run(_close, old, self.collections_dir / old_name)
        await self._run(shutil.rmtree, self.collections_dir / old_name)
        async with self._writes:
            # Opening the copy read through its log; with writes held (and this the only
            # maintenance), nothing unmaps the store's files meanwhile.
            await self._run(release_mapped_pages, self.shard_dir(slot))

    async def _drain_pool(self) -> None:
        """Wait for every store call started before now to finish."""
        # Tasks leave the pool's queue in order: once every worker is inside the barrier,
        # nothing submitted earlier is still running.
        barrier = threading.Barrier(POOL_THREADS)
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, barrier.wait) for _ in range(POOL_THREADS))
        )

    async def flush_written(self) -> None:
        """Flush the shards written to since their last flush, files first written back off
        the GIL. Not needed for durability (writes are in the log); it keeps the work the
        engine does under the GIL at the next flush, e.g. when maintenance copies the
        shard, to what was written in between."""
        for slot in self.slots:
            if slot.written:
                await self._flush(slot)

    async def appendable_points(self, slot: EdgeShardSlot) -> int:
        """At least how many points the shard's appendable segments hold (maintenance
        seals them)."""
        info = await self._run(slot.shard.info)
        # Every point has both vectors. The engine counts a sparse vector as indexed in any
        # segment and a dense one only in a sealed segment, where a deleted point still
        # counts until the segment is rewritten; hence "at least".
        return max(0, 2 * int(info.points_count) - int(info.indexed_vectors_count))

    async def shard_points(self, slot: EdgeShardSlot) -> int:
        # From the shard's info, which the engine keeps: an exact count walks every point
        # and holds the GIL while it does (~26 ms at 200,000 points).
        info = await self._run(slot.shard.info)
        return int(info.points_count)

    async def get(self, user_id: str, memory_id: str) -> Memory | None:
        # By id, then the owner checked here: a read filtered on both walks the user's
        # tenant index (~4 ms for a user with 100,000 memories), this takes ~0.03 ms.
        shard = self._shard(user_id)
        records = await self._run(shard.retrieve, [memory_id], True, False)
        for record in records:
            if (record.payload or {}).get("user_id") == user_id:
                return memory_of(record)
        return None

    async def _query(
        self, conditions: list[base.Condition], queries: Sequence[base.NearestQuery]
    ) -> list[list[qe.ScoredPoint]]:
        flt = _filter(conditions)
        batch = qe.QueryBatchRequest(
            [
                qe.QueryRequest(
                    limit=q.limit,
                    query=_nearest_query(q),
                    filter=flt,
                    with_payload=_payload(q.fields),
                )
                for q in queries
            ]
        )
        return list(await self._run(self._shard_for(conditions).query_batch, batch))

    async def _retrieve(
        self, memory_ids: Sequence[str], owner: str | None = None
    ) -> list[qe.Record]:
        if owner is not None:
            # A search's hits and get_many's ids are checked against their owner anyway:
            # only the owner's shard can hold them. One engine call instead of one a shard.
            return list(await self._run(self._shard(owner).retrieve, list(memory_ids), True, False))
        return list(await self._run(self._retrieve_everywhere, list(memory_ids), True))

    async def _rrf(
        self, conditions: list[base.Condition], prefetches: Sequence[base.NearestQuery], limit: int
    ) -> list[qe.ScoredPoint]:
        flt = _filter(conditions)
        request = qe.QueryRequest(
            limit=limit,
            prefetches=[
                qe.Prefetch(limit=q.limit, query=_nearest_query(q), filter=flt) for q in prefetches
            ],
            query=qe.Fusion.Rrf(k=base.RRF_K),  # type: ignore[arg-type]
            filter=flt,
            with_payload=True,
        )
        return list(await self._run(self._shard_for(conditions).query, request))

    async def _newest(
        self, conditions: list[base.Condition], start: float | None, window: int
    ) -> list[qe.Record]:
        request = qe.ScrollRequest(
            limit=window,
            filter=_filter(conditions),
            with_payload=True,
            order_by=qe.OrderBy("created_at", qe.Direction.Desc, start),
        )
        records, _ = await self._run(self._shard_for(conditions).scroll, request)
        return list(records)

    async def count(self, user_id: str | None = None) -> int:
        if user_id is None:
            return sum([await self.shard_points(slot) for slot in self.slots])
        request = qe.CountRequest(exact=True, filter=_filter(base.tenant_conditions(user_id)))
        return int(await self._run(self._shard(user_id).count, request))

    async def count_users(self) -> int:
        # Each user's memories are in one shard only.
        request = qe.FacetRequest(key="user_id", limit=1_000_000, exact=False)
        total = 0
        for slot in self.slots:
            response = await self._run(slot.shard.facet, request)
            total += len(response.hits)
        return total

    async def delete(self, user_id: str, memory_id: str) -> bool:
        if await self.get(user_id, memory_id) is None:
            return False
        # The memory is the user's, and an id never changes owner (a new memory never takes
        # an id in use): deleted by id, without the filter walking the user's index.
        slot = self.slot_of(user_id)
        await self._write(self._apply, slot, qe.UpdateOperation.delete_points([memory_id]))
        slot.deleted_since_maintenance += 1
        return True

    async def delete_user(self, user_id: str) -> int:
        slot = self.slot_of(user_id)
        flt = _filter(base.tenant_conditions(user_id))
        count = int(await self._run(slot.shard.count, qe.CountRequest(exact=True, filter=flt)))
        await self._write(self._apply, slot, qe.UpdateOperation.delete_points_by_filter(flt))
        slot.deleted_since_maintenance += count
        return count

    async def set_fields(self, user_id: str, memory_id: str, fields: dict[str, Any]) -> None:
        conditions = base.memory_conditions(user_id, memory_id)
        await self._write(
            self._apply,
            self.slot_of(user_id),
            qe.UpdateOperation.set_payload_by_filter(_filter(conditions), fields),
        )
