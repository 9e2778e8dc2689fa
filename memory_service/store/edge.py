"""Embedded store: the Qdrant engine in process (qdrant-edge), persisted under a data dir."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from memory_service.models import Memory, MemoryPoint, ScoredMemory, SearchFilters
from memory_service.models import SparseVector as Sparse
from memory_service.ranking import Candidate
from memory_service.store.base import (
    CANDIDATE_FIELDS,
    DENSE_VECTOR,
    RRF_K,
    SPARSE_VECTOR,
    CollectionSpec,
    Condition,
    DimensionMismatchError,
    HasId,
    Match,
    MatchAny,
    MemoryStore,
    NearestQuery,
    Range,
    StoreError,
    candidate,
    decode_cursor,
    encode_cursor,
    from_payload,
    memory_conditions,
    prefetch_limit,
    tenant_conditions,
    to_payload,
)

MANIFEST = "memory-layer.json"


def _condition(cond: Condition) -> Any:
    match cond:
        case Match(key, value):
            return qe.FieldCondition(key, match=qe.MatchValue(value))
        case MatchAny(key, values):
            return qe.FieldCondition(key, match=qe.MatchAny(list(values)))
        case Range(key, gte, lte):
            return qe.FieldCondition(key, range=qe.RangeFloat(gte=gte, lte=lte))
        case HasId(point_id):
            return qe.HasIdCondition({point_id})
    raise ValueError(f"unknown condition {cond!r}")


def _filter(conditions: list[Condition]) -> qe.Filter:
    return qe.Filter(must=[_condition(c) for c in conditions])


def _nearest_query(query: NearestQuery) -> Any:
    vector = query.vector
    if isinstance(vector, Sparse):
        return qe.Query.Nearest(qe.SparseVector(vector.indices, vector.values), using=query.using)
    return qe.Query.Nearest(vector, using=query.using)


class EdgeMemoryStore(MemoryStore):
    backend = "embedded"

    def __init__(self, data_dir: Path, spec: CollectionSpec) -> None:
        self.data_dir = Path(data_dir)
        self.spec = spec
        self._shard: qe.EdgeShard | None = None
        self._lock_fd: int | None = None
        # The engine releases the GIL; a small pool lets reads overlap with a write.
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="edge-store")

    @property
    def shard_dir(self) -> Path:
        return self.data_dir / "collections" / self.spec.name

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except StoreError:
            raise
        except Exception as exc:
            # The engine raises bare Exception for every failure (I/O, a closed shard), so
            # there is nothing narrower to catch; the caller learns the store failed.
            raise StoreError(f"embedded store failed: {exc}") from exc

    @property
    def shard(self) -> qe.EdgeShard:
        if self._shard is None:
            raise StoreError("store is not open")
        return self._shard

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        self._check_manifest()
        # Vectors, payloads and the id tracker stay on disk (Cold) and are paged in when a
        # query touches them: every query is one user's, so resident memory follows the
        # users being served, not the size of the store. The placement is fixed when a
        # segment is created.
        cold = qe.Memory.Cold
        config = qe.EdgeConfig(
            vectors={
                DENSE_VECTOR: qe.EdgeVectorParams(
                    size=self.spec.dimension, distance=qe.Distance.Cosine, memory=cold
                )
            },
            sparse_vectors={
                SPARSE_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf, memory=cold)
            },
            payload_memory=cold,
            id_tracker_memory=cold,
            wal_enabled=True,
        )
        if (self.shard_dir / "segments").exists():
            try:
                self._shard = qe.EdgeShard.load(str(self.shard_dir), config)
            except Exception as exc:
                raise StoreError(f"cannot open the store at {self.shard_dir}: {exc}") from exc
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
            raise StoreError(
                f"data dir {self.data_dir} is in use by another memory_service process"
            ) from exc
        self._lock_fd = fd

    def _check_manifest(self) -> None:
        path = self.data_dir / MANIFEST
        if not path.exists():
            return
        manifest = json.loads(path.read_text())
        if int(manifest["dimension"]) != self.spec.dimension:
            raise DimensionMismatchError(
                f"data dir {self.data_dir} holds {manifest['dimension']}-dimensional embeddings "
                f"of model {manifest['model']!r}, but the configured model {self.spec.model!r} "
                f"produces {self.spec.dimension}-dimensional embeddings; "
                "use another MEMORY_DATA_DIR or the original model"
            )

    def _write_manifest(self) -> None:
        manifest = {
            "collection": self.spec.name,
            "model": self.spec.model,
            "dimension": self.spec.dimension,
        }
        tmp = self.data_dir / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2))
        os.replace(tmp, self.data_dir / MANIFEST)

    async def close(self) -> None:
        if self._shard is not None:
            shard, self._shard = self._shard, None
            await self._run(shard.close)
        self._pool.shutdown(wait=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def upsert(self, points: Sequence[MemoryPoint]) -> None:
        op = qe.UpdateOperation.upsert_points(
            [
                qe.Point(
                    p.memory.id,
                    {
                        DENSE_VECTOR: p.dense,
                        SPARSE_VECTOR: qe.SparseVector(p.sparse.indices, p.sparse.values),
                    },
                    to_payload(p.memory),
                )
                for p in points
            ]
        )
        # The update returns once the operation is in the write-ahead log.
        await self._run(self.shard.update, op)

    async def get(self, user_id: str, memory_id: str) -> Memory | None:
        conditions = memory_conditions(user_id, memory_id)
        request = qe.ScrollRequest(limit=1, filter=_filter(conditions), with_payload=True)
        records, _ = await self._run(self.shard.scroll, request)
        if not records:
            return None
        return from_payload(records[0].id, records[0].payload or {})

    async def _nearest(
        self, user_id: str, filters: SearchFilters, queries: Sequence[NearestQuery]
    ) -> list[list[ScoredMemory]]:
        flt = _filter(tenant_conditions(user_id, filters))
        batch = qe.QueryBatchRequest(
            [
                qe.QueryRequest(
                    limit=q.limit, query=_nearest_query(q), filter=flt, with_payload=True
                )
                for q in queries
            ]
        )
        results = await self._run(self.shard.query_batch, batch)
        return [
            [ScoredMemory(from_payload(p.id, p.payload or {}), float(p.score)) for p in points]
            for points in results
        ]

    async def _candidates(
        self, user_id: str, filters: SearchFilters, queries: Sequence[NearestQuery]
    ) -> list[list[Candidate]]:
        flt = _filter(tenant_conditions(user_id, filters))
        fields = qe.PayloadSelector.Include(CANDIDATE_FIELDS)
        batch = qe.QueryBatchRequest(
            [
                qe.QueryRequest(
                    limit=q.limit, query=_nearest_query(q), filter=flt, with_payload=fields
                )
                for q in queries
            ]
        )
        results = await self._run(self.shard.query_batch, batch)
        return [[candidate(p.id, float(p.score), p.payload) for p in points] for points in results]

    async def _fetch(self, memory_ids: Sequence[str]) -> dict[str, Memory]:
        records = await self._run(self.shard.retrieve, list(memory_ids), True, False)
        return {str(r.id): from_payload(r.id, r.payload or {}) for r in records}

    async def _rrf(
        self,
        user_id: str,
        filters: SearchFilters,
        dense: list[float],
        sparse: Sparse,
        limit: int,
    ) -> list[ScoredMemory]:
        flt = _filter(tenant_conditions(user_id, filters))
        depth = prefetch_limit(limit)
        request = qe.QueryRequest(
            limit=limit,
            prefetches=[
                qe.Prefetch(
                    limit=depth,
                    query=_nearest_query(NearestQuery(DENSE_VECTOR, dense, depth)),
                    filter=flt,
                ),
                qe.Prefetch(
                    limit=depth,
                    query=_nearest_query(NearestQuery(SPARSE_VECTOR, sparse, depth)),
                    filter=flt,
                ),
            ],
            query=qe.Fusion.Rrf(k=RRF_K),  # type: ignore[arg-type]
            filter=flt,
            with_payload=True,
        )
        points = await self._run(self.shard.query, request)
        return [ScoredMemory(from_payload(p.id, p.payload or {}), float(p.score)) for p in points]

    async def scroll(
        self, user_id: str, filters: SearchFilters, limit: int, cursor: str | None
    ) -> tuple[list[Memory], str | None]:
        offset = decode_cursor(cursor) if cursor else None
        request = qe.ScrollRequest(
            offset=offset,
            limit=limit,
            filter=_filter(tenant_conditions(user_id, filters)),
            with_payload=True,
        )
        records, next_offset = await self._run(self.shard.scroll, request)
        memories = [from_payload(r.id, r.payload or {}) for r in records]
        return memories, (encode_cursor(next_offset) if next_offset is not None else None)

    async def count(self, user_id: str | None = None) -> int:
        flt = _filter(tenant_conditions(user_id)) if user_id is not None else None
        return int(await self._run(self.shard.count, qe.CountRequest(exact=True, filter=flt)))

    async def count_users(self) -> int:
        request = qe.FacetRequest(key="user_id", limit=1_000_000, exact=False)
        response = await self._run(self.shard.facet, request)
        return len(response.hits)

    async def delete(self, user_id: str, memory_id: str) -> bool:
        if await self.get(user_id, memory_id) is None:
            return False
        conditions = memory_conditions(user_id, memory_id)
        await self._run(
            self.shard.update, qe.UpdateOperation.delete_points_by_filter(_filter(conditions))
        )
        return True

    async def delete_user(self, user_id: str) -> int:
        flt = _filter(tenant_conditions(user_id))
        count = int(await self._run(self.shard.count, qe.CountRequest(exact=True, filter=flt)))
        await self._run(self.shard.update, qe.UpdateOperation.delete_points_by_filter(flt))
        return count

    async def set_fields(self, user_id: str, memory_id: str, fields: dict[str, Any]) -> None:
        conditions = memory_conditions(user_id, memory_id)
        await self._run(
            self.shard.update,
            qe.UpdateOperation.set_payload_by_filter(_filter(conditions), fields),
        )
