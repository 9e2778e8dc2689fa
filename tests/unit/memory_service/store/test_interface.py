"""One suite, every store adapter: the embedded engine, and the remote client both in memory
and over REST to a loopback Qdrant, searched, paged and owned through the same domain code."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from qdrant_client import AsyncQdrantClient

from memory_service import ranking
from memory_service.models import (
    Memory,
    MemoryKind,
    MemoryPoint,
    SearchFilters,
    SearchMode,
    SparseVector,
)
from memory_service.search import conversation_context, hybrid_candidates, search_memories
from memory_service.store import (
    MemoryStore,
    StoreError,
    ownership,
    paging,
)
from memory_service.store.embedded import EdgeMemoryStore
from memory_service.store.interface import Range
from memory_service.store.ownership import UserScope
from memory_service.store.remote import ServerMemoryStore
from tests.support.qdrant_stand_in import QdrantStandIn
from tests.support.store_points import BM25, SPEC, conversation_points, point, sparse_query, vector


@pytest.fixture(params=["embedded", "server", "server-rest"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MemoryStore]:
    s: MemoryStore
    stand_in: QdrantStandIn | None = None
    if request.param == "embedded":
        s = EdgeMemoryStore(tmp_path / "data", SPEC)
    elif request.param == "server":
        s = ServerMemoryStore(AsyncQdrantClient(location=":memory:"), SPEC)
    else:
        stand_in = QdrantStandIn().start()
        s = ServerMemoryStore.connect(stand_in.url, None, SPEC)
    await s.open()
    yield s
    await s.close()
    if stand_in is not None:
        stand_in.stop()


async def test_reads_see_only_the_owner(store: MemoryStore) -> None:
    a = [point("alice", f"alice note {i}", i) for i in range(3)]
    b = point("bob", "bob note", 0)
    await store.upsert([*a, b])

    assert await store.count("alice") == 3
    assert await store.count("bob") == 1
    assert await store.count(None) == 4
    assert await store.count_users() == 2
    assert await store.get("bob", a[0].memory.id) is None
    got = await store.get("alice", a[0].memory.id)
    assert got is not None and got.text == "alice note 0" and got.user_id == "alice"

    hits = await search_memories(
        store,
        "bob",
        dense=vector(0),
        sparse=None,
        mode=SearchMode.SEMANTIC,
        filters=SearchFilters(),
        limit=10,
    )
    assert [h.memory.id for h in hits] == [b.memory.id]
    assert not await store.delete("bob", a[1].memory.id)
    assert await store.count("alice") == 3


async def test_semantic_keyword_and_hybrid_order(store: MemoryStore) -> None:
    near = point("u", "a note about gardening", 1)
    exact = point("u", "the deploy failed with ERR_7731 again", 2)
    other = point("u", "recipe for lemon cake", 3)
    await store.upsert([near, exact, other])
    query_sparse = BM25.embed_query("ERR_7731")
    sparse = SparseVector(list(query_sparse.indices), list(query_sparse.values))

    semantic = await search_memories(
        store,
        "u",
        dense=vector(1),
        sparse=None,
        mode=SearchMode.SEMANTIC,
        filters=SearchFilters(),
        limit=3,
    )
    assert semantic[0].memory.id == near.memory.id
    keyword = await search_memories(
        store,
        "u",
        dense=None,
        sparse=sparse,
        mode=SearchMode.KEYWORD,
        filters=SearchFilters(),
        limit=3,
    )
    assert [h.memory.id for h in keyword] == [exact.memory.id]
    hybrid = await search_memories(
        store,
        "u",
        dense=vector(2),
        sparse=sparse,
        mode=SearchMode.HYBRID,
        filters=SearchFilters(),
        limit=3,
    )
    assert hybrid[0].memory.id == exact.memory.id
    assert {h.memory.id for h in hybrid} == {near.memory.id, exact.memory.id, other.memory.id}


async def test_every_mode_scores_in_0_1_best_first(store: MemoryStore) -> None:
    await store.upsert(conversation_points("u"))
    dense, sparse = vector(1), sparse_query("staging deploy ERR_7731")

    for mode in (SearchMode.HYBRID, SearchMode.SEMANTIC, SearchMode.KEYWORD):
        hits = await search_memories(
            store, "u", dense=dense, sparse=sparse, mode=mode, filters=SearchFilters(), limit=5
        )
        scores = [h.score for h in hits]
        assert hits and scores == sorted(scores, reverse=True), mode
        assert all(0.0 <= s <= 1.0 for s in scores), mode
        # The vector is exactly the second turn's: its cosine is 1, so the top score is 1.
        assert scores[0] == pytest.approx(1.0), mode
    rrf = await search_memories(
        store,
        "u",
        dense=dense,
        sparse=sparse,
        mode=SearchMode.RRF,
        filters=SearchFilters(),
        limit=5,
    )
    assert rrf[0].memory.text.startswith("the deploy to staging failed")


async def test_hybrid_ranking_and_scores_are_the_same_on_both_backends(tmp_path: Path) -> None:
    edge = EdgeMemoryStore(tmp_path / "data", SPEC)
    server = ServerMemoryStore(AsyncQdrantClient(location=":memory:"), SPEC)
    points = conversation_points("u")
    results = []
    for s in (edge, server):
        await s.open()
        await s.upsert(points)
        hits = await search_memories(
            s,
            "u",
            dense=vector(1),
            sparse=sparse_query("staging deploy ERR_7731"),
            mode=SearchMode.HYBRID,
            filters=SearchFilters(),
            limit=5,
        )
        results.append([(h.memory.id, round(h.score, 5)) for h in hits])
        await s.close()

    assert results[0] == results[1]
    # The turn after the best match shares no query word, yet the question it answers lifts it.
    order = [memory_id for memory_id, _ in results[0]]
    assert order.index(points[2].memory.id) < order.index(points[3].memory.id)


def document_terms(text: str) -> SparseVector:
    vec = BM25.embed_document(text)
    return SparseVector(list(vec.indices), list(vec.values))


async def test_feedback_finds_what_the_best_keyword_matches_talk_about(store: MemoryStore) -> None:
    first = point("u", "ERR_7731 again after the payments rollback", 1)
    second = point("u", "the payments rollback broke checkout with ERR_7731", 2)
    related = point("u", "checkout payments rollback postponed", 3)
    unrelated = point("u", "a recipe for lemon cake", 4)
    await store.upsert([first, second, related, unrelated])
    query = sparse_query("ERR_7731")

    async def keyword_side(weight: float) -> list[str]:
        _, sparse_hits = await hybrid_candidates(
            store,
            UserScope.of("u", SearchFilters()),
            dense=vector(0),
            sparse=query,
            depth=10,
            document_terms=document_terms,
            feedback_weight=weight,
        )
        return [h.id for h in sparse_hits]

    ids = [p.memory.id for p in (first, second, related)]
    assert set(await keyword_side(0.0)) == set(ids[:2])
    with_feedback = await keyword_side(0.2)
    # The query's own matches stay first; the memory sharing only their words comes after.
    assert set(with_feedback[:2]) == set(ids[:2]) and with_feedback[2:] == [ids[2]]


async def test_the_best_candidates_conversations_are_read_whole_for_the_neighbour_rules(
    store: MemoryStore,
) -> None:
    turns = conversation_points("u")
    start = datetime(2024, 5, 1, tzinfo=UTC)
    elsewhere = [
        point("u", f"lemon cake notes {i}", 5 + i, conversation="c2", created=start)
        for i in range(2)
    ]
    # Another user's conversation of the same id is never read.
    theirs = conversation_points("v")
    await store.upsert([*turns, *elsewhere, *theirs])
    # Nearest the second turn, then the first: no tie with the other turns' directions.
    dense = [a + b / 2 for a, b in zip(vector(1), vector(0), strict=True)]
    sparse = sparse_query("staging deploy ERR_7731")

    # A first pass two deep returns the best match, not the turn after it.
    dense_hits, sparse_hits = await hybrid_candidates(
        store,
        UserScope.of("u", SearchFilters()),
        dense=dense,
        sparse=sparse,
        depth=2,
        document_terms=None,
        feedback_weight=0.0,
    )
    first_pass = {h.id for h in (*dense_hits, *sparse_hits)}
    answer = turns[2].memory
    assert answer.id not in first_pass
    assert all(h.text for h in (*dense_hits, *sparse_hits))

    # Only the candidates' conversations are read: not c2, which no candidate comes from.
    read = ranking.context_conversations(dense_hits, sparse_hits)
    assert read == ["c1"]
    context = await conversation_context(
        store, UserScope.of("u", SearchFilters()), read, dense=dense
    )
    assert {h.id for h in context.dense} == {t.memory.id for t in turns}
    assert ranking.context_conversations(dense_hits, sparse_hits, ranking.TODAY) == []
    # The dense side's hits there are those conversations' nearest already: not read again.
    rest = await conversation_context(
        store, UserScope.of("u", SearchFilters()), read, dense=dense, nearest=dense_hits
    )
    assert {h.id for h in dense_hits} <= {t.memory.id for t in turns}
    assert {h.id for h in rest.dense} == {t.memory.id for t in turns} - {h.id for h in dense_hits}

    fused = ranking.fuse(dense_hits, sparse_hits, query="staging deploy", context=context).ranked
    same = ranking.fuse(dense_hits, sparse_hits, query="staging deploy", context=rest).ranked
    assert same == fused
    ranked = [memory_id for memory_id, _ in fused]
    # The turn after the best match (its answer) is ranked, above the conversation's
    # unrelated turn.
    assert ranked.index(answer.id) < ranked.index(turns[3].memory.id)
    assert not {t.memory.id for t in theirs} & set(ranked)


async def test_the_same_text_stored_twice_is_returned_once(store: MemoryStore) -> None:
    first = point("u", "My dog is called Biscuit", 1)
    again = point("u", "my dog is  called biscuit", 1)
    other = point("u", "I drive a blue car", 2)
    await store.upsert([first, again, other])

    for mode in (SearchMode.HYBRID, SearchMode.SEMANTIC, SearchMode.KEYWORD):
        hits = await search_memories(
            store,
            "u",
            dense=vector(1),
            sparse=sparse_query("dog Biscuit car"),
            mode=mode,
            filters=SearchFilters(),
            limit=3,
        )
        texts = [h.memory.text.lower().split() for h in hits]
        assert texts.count(["my", "dog", "is", "called", "biscuit"]) == 1, mode


async def test_filters_narrow_results(store: MemoryStore) -> None:
    now = datetime.now(UTC)
    old = point("u", "old", 0, provider="claude", created=now - timedelta(days=10))
    new = point("u", "new", 0, provider="chatgpt", conversation="c1", created=now)
    answer = point("u", "answer", 0, provider="chatgpt", kind=MemoryKind.RESPONSE)
    await store.upsert([old, new, answer])

    async def ids(filters: SearchFilters) -> set[str]:
        hits = await search_memories(
            store,
            "u",
            dense=vector(0),
            sparse=None,
            mode=SearchMode.SEMANTIC,
            filters=filters,
            limit=10,
        )
        return {h.memory.id for h in hits}

    assert await ids(SearchFilters(providers=("claude",))) == {old.memory.id}
    assert await ids(SearchFilters(conversation_id="c1")) == {new.memory.id}
    assert await ids(SearchFilters(created_after=now - timedelta(days=1))) == {
        new.memory.id,
        answer.memory.id,
    }
    assert await ids(SearchFilters(created_before=now - timedelta(days=1))) == {old.memory.id}
    assert await ids(SearchFilters(kind=MemoryKind.RESPONSE)) == {answer.memory.id}


async def test_scroll_pages_newest_first_and_cover_everything_once(store: MemoryStore) -> None:
    now = datetime.now(UTC)
    points = [point("u", f"note {i}", i, created=now - timedelta(minutes=i)) for i in range(7)]
    await store.upsert([*reversed(points), point("other", "not mine", 0, created=now)])
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page, cursor = await paging.scroll(store, "u", SearchFilters(), 3, cursor)
        seen += [m.id for m in page]
        pages += 1
        if cursor is None:
            break
    assert pages == 3
    assert seen == [p.memory.id for p in points]
    with pytest.raises(ValueError, match="malformed cursor"):
        await paging.scroll(store, "u", SearchFilters(), 3, "not-a-cursor!")


async def test_scroll_steps_over_memories_sharing_one_time(store: MemoryStore) -> None:
    # A batch import can give many memories the same creation time; paging through them
    # must neither repeat nor drop any.
    same = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
    newer = point("u", "newer", 0, created=same + timedelta(seconds=1))
    tied = [point("u", f"tied {i}", i, created=same) for i in range(5)]
    older = point("u", "older", 1, created=same - timedelta(seconds=1))
    await store.upsert([older, *tied, newer])
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page, cursor = await paging.scroll(store, "u", SearchFilters(), 2, cursor)
        assert page
        seen += [m.id for m in page]
        if cursor is None:
            break
    assert len(seen) == 7
    assert seen[0] == newer.memory.id and seen[-1] == older.memory.id
    assert set(seen[1:6]) == {p.memory.id for p in tied}


@pytest.mark.parametrize(("tied_count", "limit"), [(3, 2), (5, 2), (7, 3), (6, 4)])
async def test_pages_ending_inside_a_run_of_ties_neither_repeat_nor_drop(
    store: MemoryStore, tied_count: int, limit: int
) -> None:
    # The store returns memories of one time in any order, and may return a different
    # subset of them each time a window cuts through the run.
    same = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
    tied = [point("u", f"tied {i}", i, created=same) for i in range(tied_count)]
    older = point("u", "older", 1, created=same - timedelta(seconds=1))
    await store.upsert([*tied, older])
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page, cursor = await paging.scroll(store, "u", SearchFilters(), limit, cursor)
        seen += [m.id for m in page]
        if cursor is None:
            break
    assert seen == [*sorted(p.memory.id for p in tied), older.memory.id]


async def test_upsert_same_id_keeps_one_point(store: MemoryStore) -> None:
    p = point("u", "first", 0)
    await store.upsert([p])
    p.memory.text = "second"
    await store.upsert([p])
    assert await store.count("u") == 1
    got = await store.get("u", p.memory.id)
    assert got is not None and got.text == "second"


async def test_delete_one_and_delete_user(store: MemoryStore) -> None:
    mine = [point("u", f"n{i}", i) for i in range(4)]
    theirs = point("v", "keep me", 0)
    await store.upsert([*mine, theirs])
    assert await store.delete("u", mine[0].memory.id)
    assert not await store.delete("u", mine[0].memory.id)
    assert await store.delete_user("u") == 3
    assert await store.count("u") == 0
    assert await store.get("v", theirs.memory.id) is not None


async def test_set_fields_only_touches_the_owner(store: MemoryStore) -> None:
    p = point("u", "prompt", 0)
    await store.upsert([p])
    await store.set_fields("intruder", p.memory.id, {"response_id": "x"})
    got = await store.get("u", p.memory.id)
    assert got is not None and got.response_id == ""
    await store.set_fields("u", p.memory.id, {"response_id": "r1"})
    got = await store.get("u", p.memory.id)
    assert got is not None and got.response_id == "r1"


async def test_insert_new_keeps_what_an_id_already_holds(store: MemoryStore) -> None:
    first = point("alice", "the first save of a message", 1)
    await store.insert_new([first])
    retry = MemoryPoint(
        Memory(
            id=first.memory.id,
            user_id="alice",
            kind=MemoryKind.PROMPT,
            text="the same message, saved again",
            created_at=first.memory.created_at + timedelta(seconds=5),
        ),
        vector(2),
        first.sparse,
    )
    other = point("alice", "another message", 3)

    stored = await store.insert_new([retry, other, retry])

    assert [m.id for m in stored] == [first.memory.id, other.memory.id, first.memory.id]
    assert stored[0].text == stored[2].text == "the first save of a message"
    assert stored[0].created_at == first.memory.created_at
    assert stored[1] == other.memory
    assert await store.count("alice") == 2
    kept = await store.get("alice", first.memory.id)
    assert kept is not None and kept.text == "the first save of a message"


async def test_insert_new_refuses_an_id_held_by_another_user(store: MemoryStore) -> None:
    alice = point("alice", "alice's message", 1)
    await store.insert_new([alice])
    forged = MemoryPoint(
        Memory(
            id=alice.memory.id,
            user_id="mallory",
            kind=MemoryKind.PROMPT,
            text="mallory's message",
            created_at=datetime.now(UTC),
        ),
        vector(1),
        alice.sparse,
    )

    with pytest.raises(StoreError):
        await store.insert_new([forged])
    assert await store.count("mallory") == 0
    kept = await store.get("alice", alice.memory.id)
    assert kept is not None and kept.text == "alice's message"


async def test_get_many_reads_only_the_owners_memories(
    store: MemoryStore,
) -> None:
    a = [point("alice", f"alice batch {i}", i) for i in range(3)]
    b = point("bob", "bob batch", 0)
    await store.upsert([*a, b])
    asked = [a[0].memory.id, a[2].memory.id, b.memory.id, str(uuid.uuid4())]

    found = await ownership.get_many(store, "alice", asked)
    assert sorted(found) == sorted([a[0].memory.id, a[2].memory.id])
    assert found[a[2].memory.id].text == "alice batch 2"
    assert await ownership.get_many(store, "alice", []) == {}


async def test_counts_and_facets_see_only_the_conditions_user(store: MemoryStore) -> None:
    day = datetime(2026, 3, 1, tzinfo=UTC)
    mine = [
        point("alice", "first", 0, provider="claude", created=day),
        point("alice", "second", 1, provider="claude", created=day + timedelta(hours=30)),
        point("alice", "third", 2, provider="gemini", created=day + timedelta(hours=50)),
    ]
    await store.upsert([*mine, point("bob", "bob's", 3, provider="claude", created=day)])
    tenant = ownership.tenant_conditions("alice")
    assert await store.count_matching(tenant) == 3
    assert await store.facet(tenant, "provider", 10) == {"claude": 2, "gemini": 1}
    first_day = Range("created_at", day.timestamp(), (day + timedelta(days=1)).timestamp())
    assert await store.count_matching([*tenant, first_day]) == 1
    assert await store.facet(ownership.tenant_conditions("carol"), "provider", 10) == {}
