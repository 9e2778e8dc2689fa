"""The context block: whole memories in rank order within the token budget."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.context_block import CHARS_PER_TOKEN, HEADER, build_context
from gateway.schemas import ScoredMemory


def scored(text: str, score: float = 1.0) -> ScoredMemory:
    return ScoredMemory(
        id="00000000-0000-0000-0000-000000000001",
        user_id="u",
        kind="prompt",
        text=text,
        provider="claude",
        conversation_id="",
        message_id="",
        url="",
        metadata={},
        created_at=datetime(2026, 1, 2, tzinfo=UTC),
        prompt_id="",
        response_id="",
        score=score,
    )


def test_context_keeps_whole_memories_in_rank_order_within_the_budget() -> None:
    results = [scored("a" * 100), scored("b" * 100), scored("c" * 100)]
    context = build_context(results, max_tokens=(len(HEADER) + 2 * 140) // CHARS_PER_TOKEN)
    assert [m.text[0] for m in context.memories] == ["a", "b"]
    assert context.context.startswith(HEADER)
    assert "- [prompt · claude · 2026-01-02] " + "a" * 100 in context.context
    assert len(context.context) <= context.approx_tokens * CHARS_PER_TOKEN


def test_context_shortens_a_first_memory_that_alone_is_over_budget() -> None:
    context = build_context([scored("long " * 400)], max_tokens=50)
    assert len(context.context) <= 50 * CHARS_PER_TOKEN
    assert context.context.endswith("…")
    assert len(context.memories) == 1


def test_context_is_empty_without_memories() -> None:
    context = build_context([], max_tokens=100)
    assert (context.context, context.memories, context.approx_tokens) == ("", [], 0)
