"""Translation to the qdrant_edge engine: the shard's configuration and payload indexes, and
the store's points, filters and queries in the engine's types."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import qdrant_edge as qe

from memory_service.models import MemoryPoint, SparseVector
from memory_service.store.interface import (
    DENSE_VECTOR,
    RRF_K,
    SPARSE_VECTOR,
    Condition,
    HasId,
    Match,
    MatchAny,
    NearestQuery,
    NotIds,
    Range,
)
from memory_service.store.payload import to_payload

# Above any one user's vectors (KB): a search is always an exact scan of the user's points.
EXACT_SEARCH_KB = 1 << 40


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
            DENSE_VECTOR: qe.EdgeVectorParams(
                size=dimension, distance=qe.Distance.Cosine, memory=cold
            )
        },
        sparse_vectors={
            SPARSE_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf, memory=cold)
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


def edge_filter(conditions: list[Condition]) -> qe.Filter:
    excluded: set[int | uuid.UUID | str] = {
        i for c in conditions if isinstance(c, NotIds) for i in c.point_ids
    }
    must = [_condition(c) for c in conditions if not isinstance(c, NotIds)]
    if not excluded:
        return qe.Filter(must=must)
    return qe.Filter(must=must, must_not=[qe.HasIdCondition(excluded)])


def _nearest(query: NearestQuery) -> Any:
    vector = query.vector
    if isinstance(vector, SparseVector):
        return qe.Query.Nearest(qe.SparseVector(vector.indices, vector.values), using=query.using)
    return qe.Query.Nearest(vector, using=query.using)


def edge_point(p: MemoryPoint) -> qe.Point:
    return qe.Point(
        p.memory.id,
        {
            DENSE_VECTOR: p.dense,
            SPARSE_VECTOR: qe.SparseVector(p.sparse.indices, p.sparse.values),
        },
        to_payload(p.memory),
    )


def query_batch(
    conditions: list[Condition], queries: Sequence[NearestQuery]
) -> qe.QueryBatchRequest:
    """The queries of one search as one batch, each filtered by the conditions."""
    flt = edge_filter(conditions)
    return qe.QueryBatchRequest(
        [
            qe.QueryRequest(
                limit=q.limit,
                query=_nearest(q),
                filter=flt,
                with_payload=True,
            )
            for q in queries
        ]
    )


def rrf_request(
    conditions: list[Condition], prefetches: Sequence[NearestQuery], limit: int
) -> qe.QueryRequest:
    """The engine's reciprocal-rank fusion of the prefetches, each filtered by the conditions."""
    flt = edge_filter(conditions)
    return qe.QueryRequest(
        limit=limit,
        prefetches=[qe.Prefetch(limit=q.limit, query=_nearest(q), filter=flt) for q in prefetches],
        query=qe.Fusion.Rrf(k=RRF_K),  # type: ignore[arg-type]
        filter=flt,
        with_payload=True,
    )


def newest_request(
    conditions: list[Condition], start: float | None, window: int
) -> qe.ScrollRequest:
    """Up to window points that meet the conditions, newest first from creation time start."""
    return qe.ScrollRequest(
        limit=window,
        filter=edge_filter(conditions),
        with_payload=True,
        order_by=qe.OrderBy("created_at", qe.Direction.Desc, start),
    )
