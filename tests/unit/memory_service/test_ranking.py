"""The ranking both store backends share: fusion by scores, neighbours, calibrated scores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from memory_service import ranking
from memory_service.models import Memory, MemoryKind, ScoredMemory, memory_point_id

START = datetime(2024, 5, 1, tzinfo=UTC)


def memory(name: str, *, conversation: str = "", minute: int = 0, text: str = "") -> Memory:
    return Memory(
        id=name,
        user_id="u",
        kind=MemoryKind.PROMPT,
        text=text or f"text of {name}",
        created_at=START + timedelta(minutes=minute),
        conversation_id=conversation,
    )


def hits(*pairs: tuple[Memory, float]) -> list[ScoredMemory]:
    return [ScoredMemory(m, score) for m, score in pairs]


def candidates(*pairs: tuple[Memory, float]) -> list[ranking.Candidate]:
    return [
        ranking.Candidate(m.id, score, m.conversation_id, m.created_at.timestamp())
        for m, score in pairs
    ]


def order(fused: list[tuple[str, float]]) -> list[str]:
    return [memory_id for memory_id, _ in fused]


def test_calibrated_cosine_maps_unrelated_to_0_and_related_to_1() -> None:
    assert ranking.calibrated_cosine(-0.3) == 0.0
    assert ranking.calibrated_cosine(ranking.COSINE_UNRELATED) == 0.0
    assert ranking.calibrated_cosine(0.4) == pytest.approx(0.5)
    assert ranking.calibrated_cosine(ranking.COSINE_RELATED) == 1.0
    assert ranking.calibrated_cosine(0.95) == 1.0


def test_a_memory_strong_on_both_signals_beats_one_strong_on_one() -> None:
    both, dense_only, words_only, weak = (memory(n) for n in ("both", "dense", "words", "weak"))
    dense = candidates((dense_only, 0.62), (both, 0.58), (words_only, 0.30), (weak, 0.20))
    sparse = candidates((words_only, 9.0), (both, 8.0), (weak, 1.0))

    assert order(ranking.fuse(dense, sparse)) == ["both", "words", "dense", "weak"]


def test_scores_are_in_0_1_falling_and_the_top_is_the_best_calibrated_cosine() -> None:
    a, b, c = memory("a"), memory("b"), memory("c")
    fused = ranking.fuse(candidates((a, 0.5), (b, 0.45), (c, 0.2)), candidates((b, 3.0), (a, 1.0)))

    scores = [score for _, score in fused]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] == pytest.approx(ranking.calibrated_cosine(0.5))


def test_a_query_nothing_is_about_scores_zero_however_the_words_match() -> None:
    a, b = memory("a"), memory("b")
    fused = ranking.fuse(candidates((a, 0.12), (b, 0.05)), candidates((a, 4.0)))

    assert [score for _, score in fused] == [0.0, 0.0]


def test_the_neighbour_of_a_strong_match_in_its_conversation_moves_up() -> None:
    match = memory("match", conversation="c1", minute=1)
    answer = memory("answer", conversation="c1", minute=2)
    elsewhere = memory("elsewhere", conversation="c2", minute=2)
    dense = [(match, 0.6), (elsewhere, 0.42), (answer, 0.40)]
    sparse = [(match, 6.0), (elsewhere, 1.2), (answer, 1.0)]

    fused = ranking.fuse(candidates(*dense), candidates(*sparse))

    assert order(fused) == ["match", "answer", "elsewhere"]
    # Without the conversation they are not neighbours, and the order follows the signals.
    answer.conversation_id = ""
    assert order(ranking.fuse(candidates(*dense), candidates(*sparse)))[1] == "elsewhere"


def test_a_lone_candidate_is_scored_by_its_own_similarity() -> None:
    only = memory("only")
    ((memory_id, score),) = ranking.fuse(candidates((only, 0.4)), [])
    assert memory_id == "only"
    assert score == pytest.approx(ranking.calibrated_cosine(0.4))


def test_the_same_text_is_returned_once_in_its_best_place() -> None:
    first = memory("first", text="My dog is called  Biscuit")
    again = memory("again", text="my dog is called biscuit")
    other = memory("other", text="I like tea")
    dense = hits((again, 0.7), (first, 0.7), (other, 0.3))

    results = ranking.semantic(dense, limit=2)

    assert [r.memory.id for r in results] == ["again", "other"]


def test_keyword_scores_follow_bm25_order_on_the_dense_scale() -> None:
    a, b = memory("a"), memory("b")
    results = ranking.keyword(hits((a, 8.0), (b, 4.0)), best_cosine=0.4, limit=2)

    assert [r.memory.id for r in results] == ["a", "b"]
    assert [r.score for r in results] == pytest.approx([0.5, 0.25])


def test_saves_without_a_message_id_share_a_point_per_normalised_text() -> None:
    same = memory_point_id("u", "", MemoryKind.PROMPT, "Café\u0301 au lait")
    assert same == memory_point_id("u", "", MemoryKind.PROMPT, "  CAFÉ\u0301   au LAIT ")
    assert same != memory_point_id("u", "", MemoryKind.RESPONSE, "Café\u0301 au lait")
    assert same != memory_point_id("v", "", MemoryKind.PROMPT, "Café\u0301 au lait")
    # NFC: a precomposed letter and a letter with a combining accent are the same text.
    assert memory_point_id("u", "", MemoryKind.PROMPT, "caf\u00e9") == memory_point_id(
        "u", "", MemoryKind.PROMPT, "cafe\u0301"
    )
    assert memory_point_id("u", "m-1", MemoryKind.PROMPT, "x") == memory_point_id(
        "u", "m-1", MemoryKind.PROMPT, "y"
    )
