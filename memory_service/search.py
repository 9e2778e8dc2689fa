"""A search of one user's memories, the same for every backend, read top to bottom as stages.

The user's scope (their conditions and the request's filters) is built once and every store
call starts from it. The hybrid ranking (`hybrid_search`) then runs: the candidates of both
signals (dense, BM25 and its feedback pass), the context of their best conversations, the
features and the fused score (ranking.py), and last the best memories, checked and returned.
Every point those reads find comes with its whole payload, so the memories returned are read
from them, not fetched again. The other modes are one store query each through the same
scope."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from memory_service import ranking, timeframes
from memory_service.embedding.calibration import Calibration
from memory_service.models import ScoredMemory, SearchFilters, SearchMode, SparseVector
from memory_service.store.interface import (
    DENSE_VECTOR,
    SPARSE_VECTOR,
    Condition,
    MatchAny,
    MemoryStore,
    NearestQuery,
    NotIds,
)
from memory_service.store.ownership import UserScope
from memory_service.store.payload import StoredPoint, candidate, memory_of, scored

Hits = tuple[list[ranking.Candidate], list[ranking.Candidate]]
# The points a search's reads found, by id, with their whole payloads.
Seen = dict[str, StoredPoint]


def prefetch_limit(limit: int) -> int:
    return min(max(limit * 4, 40), 400)


@dataclass(frozen=True, slots=True)
class HybridQuery:
    """What the hybrid ranking reads of a query: its text, both its vectors, and the calendar
    of the person asking (their time zone and today there)."""

    text: str
    dense: list[float]
    sparse: SparseVector
    local: timeframes.LocalCalendar = timeframes.UTC_CALENDAR


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
    local: timeframes.LocalCalendar = timeframes.UTC_CALENDAR,
) -> list[ScoredMemory]:
    """The user's memories that best match, ranked and scored as ranking.py says; the store
    only runs the queries. `query` is the text the vectors are of, and `document_terms` the
    BM25 vector of a memory's text, for the hybrid ranking's time and feedback rules, whose
    days are `local`'s. With `explain`, hybrid results carry each feature's contribution to
    their score."""
    scope = UserScope.of(user_id, filters)
    if mode is SearchMode.HYBRID:
        if dense is None or sparse is None:
            raise ValueError("hybrid search needs both vectors")
        return await hybrid_search(
            store,
            scope,
            HybridQuery(query, dense, sparse, local),
            limit,
            params=params,
            document_terms=document_terms,
            explain=explain,
            calibration=calibration,
        )
    if mode is SearchMode.RRF:
        if dense is None or sparse is None:
            raise ValueError("rrf search needs both vectors")
        return await rrf_search(store, scope, dense, sparse, limit)
    if mode is SearchMode.SEMANTIC:
        if dense is None:
            raise ValueError("semantic search needs its vector")
        return await semantic_search(store, scope, dense, limit, calibration)
    if sparse is None:
        raise ValueError("keyword search needs its vector")
    return await keyword_search(store, scope, sparse, dense, limit, calibration)


async def hybrid_search(
    store: MemoryStore,
    scope: UserScope,
    query: HybridQuery,
    limit: int,
    *,
    params: ranking.RankingParams = ranking.DEFAULT,
    document_terms: Callable[[str], SparseVector] | None = None,
    explain: bool = False,
    calibration: Calibration = ranking.REFERENCE_CALIBRATION,
) -> list[ScoredMemory]:
    """The hybrid ranking, stage by stage: candidates, conversation context, features, fused
    score, the memories returned."""
    wanted = limit + ranking.DUPLICATE_MARGIN
    seen: Seen = {}
    hits = await hybrid_candidates(
        store,
        scope,
        dense=query.dense,
        sparse=query.sparse,
        depth=max(params.candidate_depth, wanted),
        document_terms=document_terms,
        feedback_weight=params.feedback_weight,
        seen=seen,
    )
    conversations = ranking.context_conversations(*hits, params)
    context = await conversation_context(
        store, scope, conversations, dense=query.dense, nearest=hits[0], seen=seen
    )
    features = ranking.features(*hits, params, query=query.text, context=context, local=query.local)
    fused = ranking.scored(features, params, explain=explain, calibration=calibration, depth=wanted)
    return returned_memories(scope, fused, limit, seen)


async def hybrid_candidates(
    store: MemoryStore,
    scope: UserScope,
    *,
    dense: list[float],
    sparse: SparseVector,
    depth: int,
    document_terms: Callable[[str], SparseVector] | None,
    feedback_weight: float,
    seen: Seen | None = None,
) -> Hits:
    """The nearest `depth` memories by each signal, as the ranking's rules read them (the
    points themselves kept in `seen`, given one). With feedback, the keyword side is a second
    pass: the query plus the heaviest terms of its first pass's best matches."""
    queries = [NearestQuery(DENSE_VECTOR, dense, depth), NearestQuery(SPARSE_VECTOR, sparse, depth)]
    dense_hits, sparse_hits = await _candidates(store, scope.where(), queries, seen)
    if feedback_weight <= 0 or document_terms is None or not sparse_hits:
        return dense_hits, sparse_hits
    best = [document_terms(h.text) for h in sparse_hits[: ranking.FEEDBACK_MEMORIES]]
    expanded = ranking.with_feedback(sparse, best, feedback_weight)
    (sparse_hits,) = await _candidates(
        store, scope.where(), [NearestQuery(SPARSE_VECTOR, expanded, depth)], seen
    )
    return dense_hits, sparse_hits


async def conversation_context(
    store: MemoryStore,
    scope: UserScope,
    conversations: Sequence[str],
    *,
    dense: list[float],
    nearest: Sequence[ranking.Candidate] = (),
    seen: Seen | None = None,
) -> ranking.Context:
    """The memories of these conversations (CONTEXT_LIMIT at most, nearest first), for the
    neighbour and answer rules: the turns around a strong match that neither signal's first
    pass returned. Their BM25 scores are not asked for: a memory the first pass did not
    return scores at most its lowest, which min-max maps to 0. `nearest` is the dense side's
    first pass: its hits in these conversations are their nearest memories already, so they
    are not read again and the context is the rest of the CONTEXT_LIMIT nearest."""
    if not conversations:
        return ranking.NO_CONTEXT
    wanted = set(conversations)
    known = tuple(h.id for h in nearest if h.conversation_id in wanted)
    if len(known) >= ranking.CONTEXT_LIMIT:
        return ranking.NO_CONTEXT
    conditions = scope.where(MatchAny("conversation_id", tuple(conversations)))
    if known:
        conditions.append(NotIds(known))
    query = NearestQuery(DENSE_VECTOR, dense, ranking.CONTEXT_LIMIT - len(known))
    (rest,) = await _candidates(store, conditions, [query], seen)
    return ranking.Context(rest)


def returned_memories(
    scope: UserScope, fused: ranking.Fused, limit: int, seen: Seen
) -> list[ScoredMemory]:
    """The best-ranked memories, read from the points the search found, one copy of each
    text, at most `limit`."""
    ranked = fused.ranked[: limit + ranking.DUPLICATE_MARGIN]
    # Built as they are kept: the duplicates' margin is rarely read.
    memories = ((memory_of(seen[i]), score, i) for i, score in ranked if i in seen)
    # Every point came from a read scoped to the user; checking the owner again keeps "every
    # memory returned is the caller's" true whatever the ranking did.
    return ranking.collapse_duplicates(
        (
            ScoredMemory(memory, score, fused.contributions.get(i))
            for memory, score, i in memories
            if scope.owns(memory)
        ),
        limit,
    )


async def rrf_search(
    store: MemoryStore, scope: UserScope, dense: list[float], sparse: SparseVector, limit: int
) -> list[ScoredMemory]:
    """Plain reciprocal-rank fusion of both signals, by the engine."""
    depth = prefetch_limit(limit)
    prefetches = [
        NearestQuery(DENSE_VECTOR, dense, depth),
        NearestQuery(SPARSE_VECTOR, sparse, depth),
    ]
    points = await store.rrf(scope.where(), prefetches, limit)
    return [scored(p) for p in points]


async def semantic_search(
    store: MemoryStore, scope: UserScope, dense: list[float], limit: int, calibration: Calibration
) -> list[ScoredMemory]:
    """Dense order, each score its calibrated cosine."""
    wanted = limit + ranking.DUPLICATE_MARGIN
    (nearest,) = await _nearest(store, scope, [NearestQuery(DENSE_VECTOR, dense, wanted)])
    return ranking.semantic(nearest, limit, calibration)


async def keyword_search(
    store: MemoryStore,
    scope: UserScope,
    sparse: SparseVector,
    dense: list[float] | None,
    limit: int,
    calibration: Calibration,
) -> list[ScoredMemory]:
    """BM25 order, scaled by the query's best dense match when there is a dense vector."""
    queries = [NearestQuery(SPARSE_VECTOR, sparse, limit + ranking.DUPLICATE_MARGIN)]
    if dense is not None:
        # Only the best dense match, to put keyword scores on the same scale.
        queries.append(NearestQuery(DENSE_VECTOR, dense, 1))
    hits = await _nearest(store, scope, queries)
    best = max((h.score for h in hits[1]), default=0.0) if dense is not None else None
    return ranking.keyword(hits[0], best, limit, calibration)


async def _nearest(
    store: MemoryStore, scope: UserScope, queries: Sequence[NearestQuery]
) -> list[list[ScoredMemory]]:
    """For each query, the user's nearest memories with their raw scores (cosine, BM25),
    run together as one batch."""
    batches = await store.query(scope.where(), queries)
    return [[scored(p) for p in points] for points in batches]


async def _candidates(
    store: MemoryStore,
    conditions: list[Condition],
    queries: Sequence[NearestQuery],
    seen: Seen | None = None,
) -> list[list[ranking.Candidate]]:
    """Like _nearest, as the ranking reads each hit; the points are kept in `seen`, given one.
    Whole payloads: the engine reads one about as fast as a selection of its fields, and the
    memories returned are read from them, with no read after the ranking."""
    batches = await store.query(conditions, queries)
    found: list[list[ranking.Candidate]] = []
    for points in batches:
        hits = []
        for point in points:
            memory_id = str(point.id)
            hits.append(candidate(point, memory_id))
            if seen is not None:
                seen[memory_id] = point
        found.append(hits)
    return found
