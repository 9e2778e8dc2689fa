"""Embedded store: the Qdrant engine in process (qdrant-edge), persisted under a data dir."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from memory_service.models import Memory, MemoryPoint
from memory_service.models import SparseVector as Sparse
from memory_service.store import base
from memory_service.store.payload import memory_of, to_payload

MANIFEST = "memory-layer.json"
POOL_THREADS = 4
COARSE_CLOCK_SLACK_SECONDS = 1.0


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
    # segment is created.
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
        # and took ~8 minutes per 100,000 points to build here. Optimization therefore only
        # merges segments and drops deleted points (~3.5 s per 100,000).
        optimizers=qe.EdgeOptimizersConfig(
            indexing_threshold=0,
            default_segment_number=1,
            deleted_threshold=0.01,
            vacuum_min_vector_number=100,
        ),
    )


def _point(p: MemoryPoint) -> qe.Point:
    return qe.Point(
        p.memory.id,
        {
            base.DENSE_VECTOR: p.dense,
            base.SPARSE_VECTOR: qe.SparseVector(p.sparse.indices, p.sparse.values),
        },
        to_payload(p.memory),
    )


def _copy_sparse(src: str, dst: str) -> None:
    """Copy a file's data ranges only: the engine preallocates its log and vector files,
    and a plain copy would write their holes out in full."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        size = os.fstat(fin.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fin.fileno(), offset, os.SEEK_DATA)
            except OSError:  # nothing but a hole up to the end
                break
            end = os.lseek(fin.fileno(), start, os.SEEK_HOLE)
            while start < end:
                copied = os.copy_file_range(fin.fileno(), fout.fileno(), end - start, start, start)
                if copied == 0:
                    raise OSError(f"{src} shrank while being copied")
                start += copied
            offset = end
        fout.truncate(size)
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


def _replay(shard: qe.EdgeShard, ops: Sequence[qe.UpdateOperation]) -> None:
    for op in ops:
        shard.update(op)


class EdgeMemoryStore(base.MemoryStore):
    backend = "embedded"

    def __init__(self, data_dir: Path, spec: base.CollectionSpec) -> None:
        self.data_dir = Path(data_dir)
        self.spec = spec
        self._shard: qe.EdgeShard | None = None
        self._lock_fd: int | None = None
        # The engine releases the GIL; a small pool lets reads overlap with a write.
        self._pool = ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="edge-store")
        self._writes = asyncio.Lock()
        # While maintenance works on a copy, every write applied here is also kept to be
        # applied to the copy before it takes over.
        self._journal: list[qe.UpdateOperation] | None = None
        # Maintenance replaces the shard with an optimized copy in a sibling directory;
        # the manifest names the one in use.
        self._shard_name = spec.name
        self.deleted_since_maintenance = 0

    @property
    def collections_dir(self) -> Path:
        return self.data_dir / "collections"

    @property
    def shard_dir(self) -> Path:
        return self.collections_dir / self._shard_name

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except base.StoreError:
            raise
        except Exception as exc:
            # The engine raises bare Exception for every failure (I/O, a closed shard), so
            # there is nothing narrower to catch; the caller learns the store failed.
            raise base.StoreError(f"embedded store failed: {exc}") from exc

    @property
    def shard(self) -> qe.EdgeShard:
        if self._shard is None:
            raise base.StoreError("store is not open")
        return self._shard

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        self._check_manifest()
        self._remove_stale_copies()
        config = edge_config(self.spec.dimension)
        if (self.shard_dir / "segments").exists():
            try:
                self._shard = qe.EdgeShard.load(str(self.shard_dir), config)
            except Exception as exc:
                raise base.StoreError(f"cannot open the store at {self.shard_dir}: {exc}") from exc
        else:
            self.shard_dir.mkdir(parents=True, exist_ok=True)
            self._shard = qe.EdgeShard.create(str(self.shard_dir), config)
        schema = self._shard.info().payload_schema
        if "user_id" not in schema:
            self._shard.update(
                qe.UpdateOperation.create_field_index(
                    "user_id", qe.KeywordIndexParams(is_tenant=True)
                )
            )
        for key in ("provider", "conversation_id", "kind"):
            if key not in schema:
                self._shard.update(
                    qe.UpdateOperation.create_field_index(key, qe.PayloadSchemaType.Keyword)
                )
        if "created_at" not in schema:
            self._shard.update(
                qe.UpdateOperation.create_field_index("created_at", qe.PayloadSchemaType.Float)
            )
        self._write_manifest()

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

    def _check_manifest(self) -> None:
        path = self.data_dir / MANIFEST
        if not path.exists():
            return
        manifest = json.loads(path.read_text())
        if int(manifest["dimension"]) != self.spec.dimension:
            raise base.DimensionMismatchError(
                f"data dir {self.data_dir} holds {manifest['dimension']}-dimensional embeddings "
                f"of model {manifest['model']!r}, but the configured model {self.spec.model!r} "
                f"produces {self.spec.dimension}-dimensional embeddings; "
                "use another MEMORY_DATA_DIR or the original model"
            )
        if manifest.get("collection") == self.spec.name:
            self._shard_name = str(manifest.get("shard", self.spec.name))

    def shard_copies(self) -> list[Path]:
        """This collection's shard directories: the one in use and any maintenance copies."""
        if not self.collections_dir.exists():
            return []
        pattern = re.compile(re.escape(self.spec.name) + r"(\.\d+)?")
        return [p for p in self.collections_dir.iterdir() if pattern.fullmatch(p.name)]

    def _remove_stale_copies(self) -> None:
        # A copy left by maintenance that stopped before taking over holds nothing that
        # the shard in use lacks: writes were acknowledged from the shard in use only.
        for path in self.shard_copies():
            if path.name != self._shard_name:
                shutil.rmtree(path, ignore_errors=True)

    def next_copy_dir(self) -> Path:
        numbers = [int(p.suffix[1:]) for p in self.shard_copies() if p.suffix[1:].isdigit()]
        return self.collections_dir / f"{self.spec.name}.{max(numbers, default=0) + 1}"

    def _write_manifest(self) -> None:
        manifest = {
            "collection": self.spec.name,
            "model": self.spec.model,
            "dimension": self.spec.dimension,
            "shard": self._shard_name,
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
        if self._shard is not None:
            shard, self._shard = self._shard, None
            await self._run(shard.close)
        self._pool.shutdown(wait=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def _write(self, fn: Any, *args: Any) -> Any:
        async with self._writes:
            return await self._run(fn, *args)

    def _apply(self, op: qe.UpdateOperation) -> None:
        # The update returns once the operation is in the write-ahead log.
        self.shard.update(op)
        if self._journal is not None:
            self._journal.append(op)

    async def upsert(self, points: Sequence[MemoryPoint]) -> None:
        op = qe.UpdateOperation.upsert_points([_point(p) for p in points])
        await self._write(self._apply, op)

    async def insert_new(self, points: Sequence[MemoryPoint]) -> list[Memory]:
        return list(await self._write(self._insert_new, points))

    def _insert_new(self, points: Sequence[MemoryPoint]) -> list[Memory]:
        # An id lookup in the same call as the write: no filtered scroll, no second thread
        # hop, and no other write in between.
        ids: list[qe.PointId] = list(dict.fromkeys(p.memory.id for p in points))
        fresh, result = base.stored_or_own(points, self.shard.retrieve(ids, True, False))
        if fresh:
            self._apply(
                qe.UpdateOperation.upsert_points(
                    [_point(p) for p in fresh], update_mode=qe.UpdateMode.InsertOnly
                )
            )
        return result

    async def copy_for_maintenance(self, target: Path) -> None:
        """Copy the shard to target as of one instant, then keep every later write for it.

        A copy taken while the engine writes could be torn, so it goes in two passes. The
        first copies everything while writes go on, after a flush has written every
        mapped page back: from then on the first write to any page of a file marks the
        file modified. The second runs with writes held: flush again, then copy once more
        only what was modified since the first flush. Writes wait only for that second,
        short pass; reads never wait.
        """
        since = await self._run(self._flush_for_copy)
        with contextlib.suppress(shutil.Error):
            # Files the engine replaces meanwhile fail to copy here; the second pass
            # copies whatever they became.
            await self._run(shutil.copytree, self.shard_dir, target, False, None, _copy_sparse)
        async with self._writes:
            await self._run(self._flush_for_copy)
            await self._run(_copy_modified, self.shard_dir, target, since)
            self._journal = []

    def _flush_for_copy(self) -> float:
        # File times come from the kernel's coarse clock: step back a little, so a
        # write just after the flush cannot carry an earlier time.
        started = time.time() - COARSE_CLOCK_SLACK_SECONDS
        self.shard.flush()
        return started

    def abandon_copy(self, target: Path) -> None:
        """Drop a maintenance copy that will not take over (never the shard in use)."""
        self._journal = None
        if target.name != self._shard_name:
            shutil.rmtree(target, ignore_errors=True)

    async def take_over(self, target: Path) -> None:
        """Serve from the maintained copy at target: open it, apply the writes made since
        it was copied, switch the manifest to it, and release the old shard."""
        journal = self._journal
        if journal is None:
            raise base.StoreError("no maintenance copy is being kept up to date")
        shard = await self._run(qe.EdgeShard.load, str(target), edge_config(self.spec.dimension))
        try:
            # Catch up outside the write lock while writes keep coming, so the final step
            # under the lock is short.
            done = 0
            while len(journal) - done > 64:
                upto = len(journal)
                await self._run(_replay, shard, journal[done:upto])
                done = upto
            async with self._writes:
                await self._run(_replay, shard, journal[done:])
                old, old_dir = self.shard, self.shard_dir
                await self._run(shard.flush)
                self._shard_name = target.name
                try:
                    # fsync can take a while on a busy disk: off the event loop.
                    await self._run(self._write_manifest)
                except BaseException:
                    # Writes go on to the old shard, so the manifest must name it.
                    self._shard_name = old_dir.name
                    await self._run(self._write_manifest)
                    raise
                self._shard, self._journal = shard, None
        except BaseException:
            self._journal = None
            await self._run(shard.close)
            raise
        self.deleted_since_maintenance = 0
        await self._drain_pool()
        await self._run(old.close)
        await self._run(shutil.rmtree, old_dir)

    async def _drain_pool(self) -> None:
        """Wait for every store call started before now to finish."""
        # Tasks leave the pool's queue in order: once every worker is inside the barrier,
        # nothing submitted earlier is still running.
        barrier = threading.Barrier(POOL_THREADS)
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, barrier.wait) for _ in range(POOL_THREADS))
        )

    async def get(self, user_id: str, memory_id: str) -> Memory | None:
        conditions = base.memory_conditions(user_id, memory_id)
        request = qe.ScrollRequest(limit=1, filter=_filter(conditions), with_payload=True)
        records, _ = await self._run(self.shard.scroll, request)
        return memory_of(records[0]) if records else None

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
        return list(await self._run(self.shard.query_batch, batch))

    async def _retrieve(self, memory_ids: Sequence[str]) -> list[qe.Record]:
        return list(await self._run(self.shard.retrieve, list(memory_ids), True, False))

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
        return list(await self._run(self.shard.query, request))

    async def _newest(
        self, conditions: list[base.Condition], start: float | None, window: int
    ) -> list[qe.Record]:
        request = qe.ScrollRequest(
            limit=window,
            filter=_filter(conditions),
            with_payload=True,
            order_by=qe.OrderBy("created_at", qe.Direction.Desc, start),
        )
        records, _ = await self._run(self.shard.scroll, request)
        return list(records)

    async def count(self, user_id: str | None = None) -> int:
        flt = _filter(base.tenant_conditions(user_id)) if user_id is not None else None
        return int(await self._run(self.shard.count, qe.CountRequest(exact=True, filter=flt)))

    async def count_users(self) -> int:
        request = qe.FacetRequest(key="user_id", limit=1_000_000, exact=False)
        response = await self._run(self.shard.facet, request)
        return len(response.hits)

    async def delete(self, user_id: str, memory_id: str) -> bool:
        if await self.get(user_id, memory_id) is None:
            return False
        conditions = base.memory_conditions(user_id, memory_id)
        await self._write(
            self._apply, qe.UpdateOperation.delete_points_by_filter(_filter(conditions))
        )
        self.deleted_since_maintenance += 1
        return True

    async def delete_user(self, user_id: str) -> int:
        flt = _filter(base.tenant_conditions(user_id))
        count = int(await self._run(self.shard.count, qe.CountRequest(exact=True, filter=flt)))
        await self._write(self._apply, qe.UpdateOperation.delete_points_by_filter(flt))
        self.deleted_since_maintenance += count
        return count

    async def set_fields(self, user_id: str, memory_id: str, fields: dict[str, Any]) -> None:
        conditions = base.memory_conditions(user_id, memory_id)
        await self._write(
            self._apply, qe.UpdateOperation.set_payload_by_filter(_filter(conditions), fields)
        )
