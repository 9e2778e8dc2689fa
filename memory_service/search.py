"""A search of one user's memories: which queries each mode runs on the store, and how their
hits are ranked and scored (ranking.py), the same for every backend."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from memory_service import ranking
from memory_service.embedding.calibration import Calibration
from memory_service.models import ScoredMemory, SearchFilters, SearchMode, SparseVector
from memory_service.store.interface import (
    DENSE_VECTOR,
    SPARSE_VECTOR,
    Condition,
    MatchAny,
    MemoryStore,
    NearestQuery,
)
from memory_service.store.ownership import fetch, tenant_conditions
from memory_service.store.payload import CANDIDATE_FIELDS, candidate, scored


def prefetch_limit(limit: int) -> int:
    return min(max(limit * 4, 40), 400)


async def search_memories(
    store: MemoryStore,
    user_id: str,
    *,
    dense: list[float] | None,
    sparse: SparseVector | None,
    mode: SearchMode,
    filters: SearchFilters,
    limit: int,
    query: str = "",
    document_terms: Callable[[str], SparseVector] | None = None,
    params: ranking.RankingParams = ranking.DEFAULT,
    explain: bool = False,
    calibration: Calibration = ranking.REFERENCE_CALIBRATION,
) -> list[ScoredMemory]:
    """The user's memories that best match, ranked and scored as ranking.py says; the store
    only runs the queries. `query` is the text the vectors are of, and `document_terms` the
    BM25 vector of a memory's text, for the hybrid ranking's time and feedback rules. With
    `explain`, hybrid results carry each feature's contribution to their score."""
    wanted = limit + ranking.DUPLICATE_MARGIN
    if mode is SearchMode.RRF:
        if dense is None or sparse is None:
            raise ValueError("rrf search needs both vectors")
        depth = prefetch_limit(limit)
        prefetches = [
            NearestQuery(DENSE_VECTOR, dense, depth),
            NearestQuery(SPARSE_VECTOR, sparse, depth),
        ]
        points = await store.rrf(tenant_conditions(user_id, filters), prefetches, limit)
        return [scored(p) for p in points]
    if mode is SearchMode.HYBRID:
        if dense is None or sparse is None:
            raise ValueError("hybrid search needs both vectors")
        dense_hits, sparse_hits = await hybrid_candidates(
            store,
            user_id,
            filters,
            dense=dense,
            sparse=sparse,
            depth=max(params.candidate_depth, wanted),
            document_terms=document_terms,
            feedback_weight=params.feedback_weight,
        )
        conversations = ranking.context_conversations(dense_hits, sparse_hits, params)
        context = await conversation_context(store, user_id, filters, conversations, dense=dense)
        fused = ranking.fuse(
            dense_hits,
            sparse_hits,
            params,
            query=query,
            context=context,
            explain=explain,
            calibration=calibration,
        )
        ranked = fused.ranked[:wanted]
        memories = await fetch(store, [memory_id for memory_id, _ in ranked], user_id)
        # The ids come from a search scoped to the user; checking the owner again keeps
        # "every read is the caller's" true of this by-id read too.
        return ranking.collapse_duplicates(
            (
                ScoredMemory(memories[i], score, fused.contributions.get(i) if explain else None)
                for i, score in ranked
                if i in memories and memories[i].user_id == user_id
            ),
            limit,
        )
    if mode is SearchMode.SEMANTIC:
        if dense is None:
            raise ValueError("semantic search needs its vector")
        (nearest,) = await _nearest(
            store, user_id, filters, [NearestQuery(DENSE_VECTOR, dense, wanted)]
        )
        return ranking.semantic(nearest, limit, calibration)
    if sparse is None:
        raise ValueError("keyword search needs its vector")
    queries = [NearestQuery(SPARSE_VECTOR, sparse, wanted)]
    if dense is not None:
        # Only the best dense match, to put keyword scores on the same scale.
        queries.append(NearestQuery(DENSE_VECTOR, dense, 1))
    hits = await _nearest(store, user_id, filters, queries)
    best = max((h.score for h in hits[1]), default=0.0) if dense is not None else None
    return ranking.keyword(hits[0], best, limit, calibration)


async def hybrid_candidates(
    store: MemoryStore,
    user_id: str,
    filters: SearchFilters,
    *,
    dense: list[float],
    sparse: SparseVector,
    depth: int,
    document_terms: Callable[[str], SparseVector] | None,
    feedback_weight: float,
) -> tuple[list[ranking.Candidate], list[ranking.Candidate]]:
    """The nearest `depth` memories by each signal, with the payload the ranking's rules read.
    With feedback, the keyword side is a second pass: the query plus the heaviest terms of
    its first pass's best matches."""
    queries = [NearestQuery(DENSE_VECTOR, dense, depth), NearestQuery(SPARSE_VECTOR, sparse, depth)]
    dense_hits, sparse_hits = await _candidates(store, tenant_conditions(user_id, filters), queries)
    if feedback_weight <= 0 or document_terms is None or not sparse_hits:
        return dense_hits, sparse_hits
    best = [document_terms(h.text) for h in sparse_hits[: ranking.FEEDBACK_MEMORIES]]
    expanded = ranking.with_feedback(sparse, best, feedback_weight)
    (sparse_hits,) = await _candidates(
        store,
        tenant_conditions(user_id, filters),
        [NearestQuery(SPARSE_VECTOR, expanded, depth)],
    )
    return dense_hits, sparse_hits


async def conversation_context(
    store: MemoryStore,
    user_id: str,
    filters: SearchFilters,
    conversations: Sequence[str],
    *,
    dense: list[float],
) -> ranking.Context:
    """The memories of these conversations (CONTEXT_LIMIT at most, nearest first), for the
    neighbour and answer rules: the turns around a strong match that neither signal's first
    pass returned. Their BM25 scores are not asked for: a memory the first pass did not
    return scores at most its lowest, which min-max maps to 0."""
    if not conversations:
        return ranking.NO_CONTEXT
    conditions = [
        *tenant_conditions(user_id, filters),
        MatchAny("conversation_id", tuple(conversations)),
    ]
    query = NearestQuery(DENSE_VECTOR, dense, ranking.CONTEXT_LIMIT)
    (nearest,) = await _candidates(store, conditions, [query])
    return ranking.Context(nearest)


async def _nearest(
    store: MemoryStore, user_id: str, filters: SearchFilters, queries: Sequence[NearestQuery]
) -> list[list[ScoredMemory]]:
    """For each query, the user's nearest memories with their raw scores (cosine, BM25),
    run together as one batch."""
    batches = await store.query(tenant_conditions(user_id, filters), queries)
    return [[scored(p) for p in points] for points in batches]


async def _candidates(
    store: MemoryStore, conditions: list[Condition], queries: Sequence[NearestQuery]
) -> list[list[ranking.Candidate]]:
    """Like _nearest, with only the payload fields the ranking reads."""
    slim = [replace(q, fields=CANDIDATE_FIELDS) for q in queries]
    batches = await store.query(conditions, slim)
    return [[candidate(p) for p in points] for points in batches]
