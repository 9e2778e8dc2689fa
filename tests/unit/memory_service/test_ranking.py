"""The ranking both store backends share: fusion by scores, neighbours, calibrated scores."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from memory_service import ranking, timeframes
from memory_service.models import Memory, MemoryKind, ScoredMemory, SparseVector, memory_point_id

START = datetime(2024, 5, 1, tzinfo=UTC)
# Only the two signals and the nearest neighbours (today's ranking with the default's two
# weights), so that one rule at a time is seen.
PLAIN = replace(
    ranking.TODAY,
    dense_weight=ranking.DEFAULT.dense_weight,
    neighbour_weight=ranking.DEFAULT.neighbour_weight,
)


def memory(
    name: str,
    *,
    conversation: str = "",
    minute: int = 0,
    text: str = "",
    saved: datetime = START,
    kind: MemoryKind = MemoryKind.PROMPT,
) -> Memory:
    return Memory(
        id=name,
        user_id="u",
        kind=kind,
        text=text or f"text of {name}",
        created_at=saved + timedelta(minutes=minute),
        conversation_id=conversation,
    )


def on(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, 18, tzinfo=UTC)


def hits(*pairs: tuple[Memory, float]) -> list[ScoredMemory]:
    return [ScoredMemory(m, score) for m, score in pairs]


def candidates(*pairs: tuple[Memory, float]) -> list[ranking.Candidate]:
    return [
        ranking.Candidate(
            m.id, score, m.conversation_id, m.created_at.timestamp(), m.text, m.kind.value
        )
        for m, score in pairs
    ]


def order(fused: list[tuple[str, float]]) -> list[str]:
    return [memory_id for memory_id, _ in fused]


def test_calibrated_cosine_maps_unrelated_to_0_and_related_to_1() -> None:
    assert ranking.calibrated_cosine(-0.3) == 0.0
    assert ranking.calibrated_cosine(ranking.REFERENCE_CALIBRATION.unrelated) == 0.0
    assert ranking.calibrated_cosine(0.4) == pytest.approx(0.5)
    assert ranking.calibrated_cosine(ranking.REFERENCE_CALIBRATION.related) == 1.0
    assert ranking.calibrated_cosine(0.95) == 1.0


def test_a_memory_strong_on_both_signals_beats_one_strong_on_one() -> None:
    both, dense_only, words_only, weak = (memory(n) for n in ("both", "dense", "words", "weak"))
    dense = candidates((dense_only, 0.62), (both, 0.58), (words_only, 0.30), (weak, 0.20))
    sparse = candidates((words_only, 9.0), (both, 8.0), (weak, 1.0))

    assert order(ranking.fuse(dense, sparse).ranked) == ["both", "words", "dense", "weak"]


def test_scores_are_in_0_1_falling_and_the_top_is_the_best_calibrated_cosine() -> None:
    a, b, c = memory("a"), memory("b"), memory("c")
    fused = ranking.fuse(
        candidates((a, 0.5), (b, 0.45), (c, 0.2)), candidates((b, 3.0), (a, 1.0))
    ).ranked

    scores = [score for _, score in fused]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] == pytest.approx(ranking.calibrated_cosine(0.5))


def test_a_query_nothing_is_about_scores_zero_however_the_words_match() -> None:
    a, b = memory("a"), memory("b")
    fused = ranking.fuse(candidates((a, 0.12), (b, 0.05)), candidates((a, 4.0))).ranked

    assert [score for _, score in fused] == [0.0, 0.0]


def test_the_neighbour_of_a_strong_match_in_its_conversation_moves_up() -> None:
    match = memory("match", conversation="c1", minute=1)
    answer = memory("answer", conversation="c1", minute=2)
    elsewhere = memory("elsewhere", conversation="c2", minute=2)
    dense = [(match, 0.6), (elsewhere, 0.42), (answer, 0.40)]
    sparse = [(match, 6.0), (elsewhere, 1.2), (answer, 1.0)]

    fused = ranking.fuse(candidates(*dense), candidates(*sparse)).ranked

    assert order(fused) == ["match", "answer", "elsewhere"]
    # Without the conversation they are not neighbours, and the order follows the signals.
    answer.conversation_id = ""
    assert order(ranking.fuse(candidates(*dense), candidates(*sparse)).ranked)[1] == "elsewhere"


def test_a_lone_candidate_is_scored_by_its_own_similarity() -> None:
    only = memory("only")
    ((memory_id, score),) = ranking.fuse(candidates((only, 0.4)), []).ranked
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


KEY = b"ranking-test-id-key"


def test_saves_without_a_message_id_share_a_point_per_normalised_text() -> None:
    def text_id(user: str, kind: MemoryKind, text: str, key: bytes = KEY) -> str:
        return memory_point_id(user, "", kind, text, text_key=key)

    same = text_id("u", MemoryKind.PROMPT, "Café\u0301 au lait")
    assert same == text_id("u", MemoryKind.PROMPT, "  CAFÉ\u0301   au LAIT ")
    assert same != text_id("u", MemoryKind.RESPONSE, "Café\u0301 au lait")
    assert same != text_id("v", MemoryKind.PROMPT, "Café\u0301 au lait")
    # Keyed: without the server's key, nobody can tell which text an id stands for.
    assert same != text_id("u", MemoryKind.PROMPT, "Café\u0301 au lait", b"another key")
    # NFC: a precomposed letter and a letter with a combining accent are the same text.
    assert text_id("u", MemoryKind.PROMPT, "caf\u00e9") == text_id(
        "u", MemoryKind.PROMPT, "cafe\u0301"
    )
    assert memory_point_id("u", "m-1", MemoryKind.PROMPT, "x") == memory_point_id(
        "u", "m-1", MemoryKind.PROMPT, "y"
    )


def test_questions_about_when_are_told_apart() -> None:
    assert ranking.asks_when("When did Caroline go to the support group?")
    assert ranking.asks_when("how long has she had the dog")
    assert ranking.asks_when("What year did we move?")
    assert not ranking.asks_when("What did Caroline paint?")
    assert not ranking.asks_when("Whenever I deploy, staging breaks")


def test_memories_that_say_when_are_told_apart() -> None:
    assert ranking.says_when("I went to a support group yesterday")
    assert ranking.says_when("We moved two years ago")
    assert ranking.says_when("the painting from last weekend")
    assert ranking.says_when("see you on Friday")
    assert not ranking.says_when("I love painting sunsets")


def test_a_when_question_lifts_the_memory_that_says_when() -> None:
    undated = memory("undated", text="I went to the support group and it was powerful")
    dated = memory("dated", text="I went to the support group yesterday")
    weak = memory("weak", text="groups of people")
    dense = candidates((undated, 0.6), (dated, 0.58), (weak, 0.2))
    sparse = candidates((undated, 5.0), (dated, 4.8), (weak, 1.0))

    asked = ranking.fuse(dense, sparse, query="When did she go to the support group?").ranked
    told = ranking.fuse(dense, sparse, query="What was the support group like?").ranked
    before = ranking.fuse(
        dense, sparse, ranking.TODAY, query="When did she go to the group?"
    ).ranked

    assert order(asked) == ["dated", "undated", "weak"]
    assert order(told) == ["undated", "dated", "weak"]
    assert order(before) == ["undated", "dated", "weak"]
    # The top score still says how well the query is covered, whatever lifted it.
    assert asked[0][1] == pytest.approx(ranking.calibrated_cosine(0.6))


def test_feedback_adds_the_heaviest_new_terms_of_the_best_matches_at_a_share() -> None:
    query = SparseVector([1], [1.0])
    feedback = [SparseVector([1, 2, 3], [2.0, 1.0, 0.5]), SparseVector([2, 4], [1.0, 0.25])]

    expanded = ranking.with_feedback(query, feedback, 0.2)

    assert expanded.indices[:1] == [1] and expanded.values[:1] == [1.0]
    # Term 2 weighs 2.0 over both, the heaviest: it gets the whole weight; the query's own
    # term 1 is not added again.
    added = dict(zip(expanded.indices[1:], expanded.values[1:], strict=True))
    assert added == pytest.approx({2: 0.2, 3: 0.05, 4: 0.025})


def test_feedback_keeps_at_most_its_number_of_terms_and_nothing_at_weight_0() -> None:
    query = SparseVector([0], [1.0])
    many = [SparseVector(list(range(1, 40)), [float(i) for i in range(1, 40)])]

    expanded = ranking.with_feedback(query, many, 0.3)

    assert len(expanded.indices) == 1 + ranking.FEEDBACK_TERMS
    assert expanded.indices[1:] == list(range(39, 39 - ranking.FEEDBACK_TERMS, -1))
    assert ranking.with_feedback(query, many, 0.0) == query
    assert ranking.with_feedback(query, [], 0.3) == query


def test_the_shipped_constants_are_the_default_and_today_has_the_new_signals_off() -> None:
    assert ranking.RankingParams() == ranking.DEFAULT
    today = ranking.TODAY
    assert (today.dense_weight, today.neighbour_weight) == (0.35, 0.4)
    newer = (
        today.second_neighbour_weight,
        today.time_weight,
        today.time_neighbour_weight,
        today.feedback_weight,
        today.conversation_weight,
        today.answer_weight,
        today.length_weight,
        today.cosine_weight,
        today.date_weight,
        today.date_said_weight,
        today.context_memories,
        today.diversity_weight,
        today.lean_chars,
        today.prompt_weight,
        today.asked_weight,
        today.cover_weight,
    )
    assert not any(newer)


def test_a_memory_from_the_conversation_most_candidates_come_from_moves_up() -> None:
    # Two equal matches, each with an equal neighbour; one's conversation holds more of the
    # query's candidates.
    lone = memory("a-lone", conversation="c1", minute=0)
    lone_next = memory("a-next", conversation="c1", minute=1)
    busy = memory("b-busy", conversation="c2", minute=0)
    others = [memory(f"b-{i}", conversation="c2", minute=1 + i) for i in range(3)]
    weak = memory("weak")
    dense = candidates(
        (lone, 0.6), (busy, 0.6), (lone_next, 0.3), *((o, 0.3) for o in others), (weak, 0.1)
    )
    sparse = candidates((lone, 5.0), (busy, 5.0), (lone_next, 2.0), *((o, 2.0) for o in others))

    without = ranking.fuse(dense, sparse, PLAIN).ranked
    with_rule = ranking.fuse(dense, sparse, replace(PLAIN, conversation_weight=0.2)).ranked

    # Tied without the rule (then ordered by id); the busier conversation's first with it.
    assert dict(without)["a-lone"] == pytest.approx(dict(without)["b-busy"])
    assert order(without)[:2] == ["a-lone", "b-busy"]
    assert order(with_rule)[:2] == ["b-busy", "a-lone"]


def test_the_conversation_rule_treats_memories_outside_conversations_each_on_its_own() -> None:
    a, b = memory("a"), memory("b")
    params = ranking.RankingParams(conversation_weight=0.3)

    fused = ranking.fuse(
        candidates((a, 0.6), (b, 0.3)), candidates((a, 4.0), (b, 1.0)), params
    ).ranked

    assert order(fused) == ["a", "b"]
    assert fused[0][1] == pytest.approx(ranking.calibrated_cosine(0.6))
    assert 0.0 <= fused[1][1] < fused[0][1]


def test_the_answer_to_a_question_gains_from_the_question() -> None:
    # The question holds the query's words; its answer and a remark elsewhere hold none.
    asked = memory("asked", conversation="c1", minute=0, text="what is your favourite dish?")
    answer = memory("answer", conversation="c1", minute=1, text="coconut milk ice cream")
    said = memory("said", conversation="c2", minute=0, text="your favourite dish looks great")
    remark = memory("remark", conversation="c2", minute=1, text="thanks, it took all day")
    dense = candidates((asked, 0.6), (said, 0.6), (answer, 0.3), (remark, 0.3))
    sparse = candidates((asked, 6.0), (said, 6.0))

    without = ranking.fuse(dense, sparse, PLAIN).ranked
    with_rule = ranking.fuse(dense, sparse, replace(PLAIN, answer_weight=0.6)).ranked

    assert dict(without)["answer"] == pytest.approx(dict(without)["remark"])
    assert order(with_rule).index("answer") < order(with_rule).index("remark")
    # The question is not lifted by its own answer.
    assert dict(with_rule)["asked"] == pytest.approx(dict(with_rule)["said"])


def test_a_turn_two_away_from_a_strong_match_gains_a_share() -> None:
    turns = [memory(f"t{i}", conversation="c1", minute=i) for i in range(3)]
    lone = memory("lone", conversation="c2", minute=0)
    dense = candidates((turns[0], 0.6), (turns[1], 0.2), (turns[2], 0.3), (lone, 0.3))
    sparse = candidates((turns[0], 6.0))

    without = ranking.fuse(dense, sparse, PLAIN).ranked
    with_rule = ranking.fuse(dense, sparse, replace(PLAIN, second_neighbour_weight=0.4)).ranked

    assert order(without).index("lone") < order(without).index("t2")
    assert order(with_rule).index("t2") < order(with_rule).index("lone")


def test_a_memory_that_says_more_ranks_above_an_equal_one_line_match() -> None:
    short = memory("short", text="ok, the deploy")
    long = memory("long", text="the deploy " + "failed on the migration step again " * 15)
    longer = memory("longer", text="the deploy " + "failed on the migration step again " * 50)
    dense = candidates((short, 0.5), (long, 0.5), (longer, 0.5))
    sparse = candidates((short, 3.0), (long, 3.0), (longer, 3.0))
    assert ranking.LENGTH_CAP < len(long.text) < len(longer.text)

    fused = ranking.fuse(dense, sparse, replace(PLAIN, length_weight=0.2)).ranked

    assert order(fused)[-1] == "short"
    # Past LENGTH_CAP characters more text adds nothing.
    assert dict(fused)["long"] == pytest.approx(dict(fused)["longer"])


def test_the_raw_cosine_tells_apart_what_min_max_makes_equal() -> None:
    close = memory("close")
    far = memory("far")
    words = memory("words")
    # Min-max gives both dense hits' shares as the two ends; BM25 ties the other two.
    dense = candidates((close, 0.7), (far, 0.2))
    sparse = candidates((far, 4.0), (words, 4.0), (close, 1.0))

    fused = ranking.fuse(dense, sparse, replace(PLAIN, dense_weight=0.3, cosine_weight=1.0)).ranked

    # The keyword-only memory is taken to be no closer than the dense side's last hit.
    assert dict(fused)["far"] == pytest.approx(dict(fused)["words"])
    assert order(fused)[0] == "close"


def test_context_turns_join_the_ranking_scored_against_the_first_pass() -> None:
    match = memory("match", conversation="c1", minute=0, text="which city for the team trip?")
    answer = memory("answer", conversation="c1", minute=1, text="Edinburgh, for the history")
    other = memory("other", conversation="c2", minute=0, text="a trip with the team")
    dense = candidates((match, 0.6), (other, 0.5))
    sparse = candidates((match, 6.0), (other, 4.0))
    # The context brings the answer: closer than nothing, below the first pass's last hit.
    context = ranking.Context(dense=candidates((match, 0.6), (answer, 0.3)))

    assert ranking.context_conversations(dense, sparse) == ["c1", "c2"]
    assert ranking.context_conversations(dense, sparse, ranking.TODAY) == []
    fused = dict(ranking.fuse(dense, sparse, query="team trip", context=context).ranked)

    assert set(fused) == {"match", "answer", "other"}
    assert fused["answer"] > fused["other"]
    assert max(fused.values()) == pytest.approx(ranking.calibrated_cosine(0.6))


def test_a_query_naming_a_date_lifts_the_memories_about_that_day() -> None:
    said_then = memory("then", text="watched the trilogy last night", saved=on(2022, 5, 2))
    said_later = memory("later", text="watched the trilogy again", saved=on(2022, 6, 9))
    weak = memory("weak", text="a film night")
    dense = candidates((said_later, 0.6), (said_then, 0.58), (weak, 0.2))
    sparse = candidates((said_later, 5.0), (said_then, 4.8), (weak, 1.0))
    query = "What did Joanna watch on 1 May, 2022?"
    dated = replace(PLAIN, date_weight=0.3)

    assert order(ranking.fuse(dense, sparse, PLAIN, query=query).ranked)[:2] == ["later", "then"]
    assert order(ranking.fuse(dense, sparse, dated, query=query).ranked)[:2] == ["then", "later"]
    # A query that names no date leaves the order to the signals.
    assert (
        order(ranking.fuse(dense, sparse, dated, query="What did Joanna watch?").ranked)[0]
        == "later"
    )


def test_a_turn_that_says_when_next_to_the_question_words_beats_one_elsewhere() -> None:
    asked = memory("asked", conversation="c1", minute=0, text="Can I come and see the turtles?")
    reply = memory("reply", conversation="c1", minute=1, text="Sure, see you tomorrow!")
    elsewhere = memory("elsewhere", conversation="c2", minute=0, text="Back tomorrow, bye!")
    dense = candidates((asked, 0.6), (reply, 0.3), (elsewhere, 0.3))
    sparse = candidates((asked, 6.0))
    # Neither neighbour rule, so that only the time rules tell the two replies apart.
    timed = replace(PLAIN, neighbour_weight=0.0, time_weight=0.2)
    query = "When will she come to see the turtles?"

    plain = order(ranking.fuse(dense, sparse, timed, query=query).ranked)
    lifted = order(
        ranking.fuse(dense, sparse, replace(timed, time_neighbour_weight=0.4), query=query).ranked
    )

    assert plain == ["asked", "elsewhere", "reply"]
    assert lifted == ["asked", "reply", "elsewhere"]
    # Only on a question that asks when.
    told = ranking.fuse(
        dense, sparse, replace(timed, time_neighbour_weight=0.4), query="Who has turtles?"
    ).ranked
    assert order(told) == ["asked", "elsewhere", "reply"]


def test_a_memory_that_says_it_was_in_the_named_month_beats_one_only_said_then() -> None:
    says = memory("says", text="we went to a convention last month", saved=on(2023, 4, 18))
    said_then = memory("then", text="we went to a convention downtown", saved=on(2023, 3, 6))
    weak = memory("weak", text="a talk")
    dense = candidates((said_then, 0.6), (says, 0.58), (weak, 0.2))
    sparse = candidates((said_then, 5.0), (says, 4.8), (weak, 1.0))
    query = "What did John attend in March 2023?"
    dated = replace(PLAIN, date_weight=0.3)

    assert order(ranking.fuse(dense, sparse, dated, query=query).ranked)[:2] == ["then", "says"]
    said = replace(dated, date_said_weight=0.3)
    assert order(ranking.fuse(dense, sparse, said, query=query).ranked)[:2] == ["says", "then"]


def test_a_month_named_without_a_year_lifts_the_memories_about_it() -> None:
    june = memory("june", text="we went camping last week", saved=on(2023, 6, 30))
    august = memory("august", text="we went camping by the lake", saved=on(2023, 8, 20))
    weak = memory("weak", text="a tent")
    dense = candidates((august, 0.6), (june, 0.58), (weak, 0.2))
    sparse = candidates((august, 5.0), (june, 4.8), (weak, 1.0))
    dated = replace(PLAIN, date_weight=0.3)

    first_two = order(ranking.fuse(dense, sparse, dated, query="Where did we go camping?").ranked)[
        :2
    ]
    assert first_two == ["august", "june"]
    first_two = order(
        ranking.fuse(dense, sparse, dated, query="Did we go camping in June?").ranked
    )[:2]
    assert first_two == ["june", "august"]


def test_a_second_conversation_joins_the_top_once_one_conversation_has_placed_two() -> None:
    # One conversation holds three good matches, another one nearly as good.
    first = [memory(f"a-{i}", conversation="c1", minute=10 * i) for i in range(3)]
    other, weak = memory("b-0", conversation="c2"), memory("weak")
    dense = candidates(
        (first[0], 0.6), (first[1], 0.58), (first[2], 0.56), (other, 0.55), (weak, 0.3)
    )
    sparse = candidates(
        (first[0], 5.0), (first[1], 4.8), (first[2], 4.6), (other, 4.5), (weak, 1.0)
    )
    alone = replace(PLAIN, neighbour_weight=0.0)

    without = ranking.fuse(dense, sparse, alone).ranked
    spread = ranking.fuse(dense, sparse, replace(alone, diversity_weight=0.1)).ranked

    assert order(without) == ["a-0", "a-1", "a-2", "b-0", "weak"]
    assert order(spread) == ["a-0", "b-0", "a-1", "a-2", "weak"]
    # Still falling, in [0, 1], the top the best calibrated cosine.
    scores = [score for _, score in spread]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == pytest.approx(ranking.calibrated_cosine(0.6))


def test_explain_gives_each_features_part_of_the_score_before_scaling() -> None:
    question = memory("question", conversation="c", minute=0, text="Where should we go hiking?")
    answer = memory("answer", conversation="c", minute=1, text="The ridge trail, at dawn.")
    other = memory("other", conversation="d", minute=0, text="A recipe for soup")
    dense = candidates((question, 0.6), (other, 0.4), (answer, 0.3))
    sparse = candidates((question, 6.0), (other, 1.0))
    params = replace(ranking.DEFAULT, diversity_weight=0.1)

    fused = ranking.fuse(dense, sparse, params, query="hiking", explain=True)

    assert fused.ranked == ranking.fuse(dense, sparse, params, query="hiking").ranked
    assert set(fused.contributions) == {"question", "answer", "other"}
    for parts in fused.contributions.values():
        assert set(parts) <= set(ranking.FEATURES)
        assert all(value != 0 for value in parts.values())
    # The answer's gain from its question is the question's own score times the weight.
    own = params.dense_weight * 1.0 + (1 - params.dense_weight) * 1.0
    assert fused.contributions["answer"]["answer"] == pytest.approx(params.answer_weight * own)
    # The parts add up to the unscaled score: relative to the top's sum, the returned score.
    total = {i: sum(parts.values()) for i, parts in fused.contributions.items()}
    top, top_score = fused.ranked[0]
    for memory_id, score in fused.ranked:
        assert score == pytest.approx(top_score * total[memory_id] / total[top])
    assert ranking.fuse(dense, sparse, params, query="hiking").contributions == {}


def test_with_lean_chars_a_long_answer_takes_a_smaller_share_of_its_question() -> None:
    question = memory("question", conversation="c", minute=0, text="Which trail should we take?")
    short = memory("short", conversation="c", minute=1, text="The ridge one.")
    long_text = "Here is a long answer about trails in general. " * 20
    question_2 = memory("question-2", conversation="d", minute=0, text="Which trail is best?")
    long = memory("long", conversation="d", minute=1, text=long_text)
    dense = candidates((question, 0.6), (question_2, 0.6), (short, 0.3), (long, 0.3))
    sparse = candidates((question, 5.0), (question_2, 5.0))
    params = replace(PLAIN, neighbour_weight=0.0, answer_weight=0.6)

    whole = ranking.fuse(dense, sparse, params, explain=True).contributions
    leaning = ranking.fuse(
        dense, sparse, replace(params, lean_chars=300), explain=True
    ).contributions

    assert whole["short"]["answer"] == pytest.approx(whole["long"]["answer"])
    assert leaning["short"]["answer"] == pytest.approx(whole["short"]["answer"])
    share = 300 / len(long_text)
    assert leaning["long"]["answer"] == pytest.approx(share * whole["long"]["answer"])


def test_a_querys_yesterday_is_the_persons_day_before_today_in_their_time_zone() -> None:
    zone = ZoneInfo("Africa/Johannesburg")  # UTC+2 all year
    # Day D 23:30 UTC is D + 1 in that zone; D + 1 23:30 UTC is D + 2 there.
    late_on_d = memory(
        "late on D", text="booked a table", saved=datetime(2026, 3, 10, 23, 30, tzinfo=UTC)
    )
    late_on_next = memory(
        "late on D + 1", text="booked a room", saved=datetime(2026, 3, 11, 23, 30, tzinfo=UTC)
    )
    dense = candidates((late_on_d, 0.5), (late_on_next, 0.5))
    asked = datetime(2026, 3, 12, 7, 0, tzinfo=zone)  # D + 2, morning there
    dated = replace(PLAIN, date_weight=0.4)

    def dated_ids(local: timeframes.LocalCalendar) -> set[str]:
        found = ranking.features(dense, [], dated, query="what did I say yesterday", local=local)
        return set(found.values["date"])

    assert dated_ids(timeframes.LocalCalendar.at(zone, asked)) == {"late on D"}
    assert dated_ids(timeframes.LocalCalendar.at(UTC, asked)) == {"late on D + 1"}
    # Without a day asked on, the query's relative words point nowhere.
    assert dated_ids(timeframes.UTC_CALENDAR) == set()


def test_fuse_is_the_features_scored() -> None:
    a = memory("a", conversation="c", minute=0, text="we went hiking on Saturday?")
    b = memory("b", conversation="c", minute=1, text="yes, up the ridge")
    dense, sparse = candidates((a, 0.6), (b, 0.4)), candidates((b, 3.0))
    params = replace(ranking.DEFAULT, diversity_weight=0.1)
    features = ranking.features(dense, sparse, params, query="when did we go hiking")
    whole = ranking.fuse(dense, sparse, params, query="when did we go hiking", explain=True)
    assert ranking.scored(features, params, explain=True) == whole
    # Scoring leaves the features as they were: they can be scored again.
    assert ranking.scored(features, params, explain=True) == whole


def test_a_prompt_gains_from_its_answer_the_more_the_longer_the_answer() -> None:
    # Each answer holds the query's words; its prompt and a remark elsewhere hold none.
    reply = MemoryKind.RESPONSE
    said = "Also, I finally set it up last week."
    prompt = memory("prompt", conversation="c1", minute=0, text=said)
    long_text = "Your new mesh network system should cover the whole house. " * 10
    answer = memory("answer", conversation="c1", minute=1, text=long_text, kind=reply)
    prompt_2 = memory("prompt-2", conversation="c2", minute=0, text=said)
    answer_2 = memory("answer-2", conversation="c2", minute=1, text="A mesh network!", kind=reply)
    remark = memory("remark", conversation="c3", minute=0, text="thanks, it took all day")
    dense = candidates(
        (answer, 0.6), (answer_2, 0.6), (prompt, 0.3), (prompt_2, 0.3), (remark, 0.3)
    )
    sparse = candidates((answer, 6.0), (answer_2, 6.0))
    params = replace(PLAIN, neighbour_weight=0.0, lean_chars=300)

    without = ranking.fuse(dense, sparse, params).ranked
    fused = ranking.fuse(dense, sparse, replace(params, asked_weight=0.5), explain=True)

    assert dict(without)["prompt"] == pytest.approx(dict(without)["remark"])
    assert order(fused.ranked).index("prompt") < order(fused.ranked).index("remark")
    # The short reply lends its prompt its share times its length over lean_chars.
    parts = fused.contributions
    share = len("A mesh network!") / 300
    assert parts["prompt-2"]["asked"] == pytest.approx(share * parts["prompt"]["asked"])
    # An answer gains nothing from its prompt by this rule, nor a remark with no answer.
    assert "asked" not in parts["answer"] and "asked" not in parts["remark"]


def test_a_prompt_weighs_more_than_an_answer_that_matches_as_well() -> None:
    said = memory("said", conversation="c1", text="I set up the thermostat")
    answered = memory(
        "answered", conversation="c2", text="You set up the thermostat", kind=MemoryKind.RESPONSE
    )
    dense = candidates((answered, 0.5), (said, 0.5))
    sparse = candidates((answered, 5.0), (said, 5.0))

    fused = ranking.fuse(dense, sparse, replace(PLAIN, prompt_weight=0.1), explain=True)

    assert order(fused.ranked) == ["said", "answered"]
    assert fused.contributions["said"]["prompt"] == pytest.approx(0.1)


def test_query_words_leave_common_words_out_and_drop_plural_endings() -> None:
    assert ranking.query_words("Which devices did I set up first, the thermostat?") == {
        "device": 1,
        "set": 1,
        "first": 1,
        "thermostat": 1,
    }
    assert ranking.text_words("My thermostat's schedules") == {"my", "thermostat", "schedule"}


def test_a_memory_of_the_second_thing_a_query_names_joins_the_top() -> None:
    # Three memories about the kettle, nearly as good one about the toaster.
    query = "which did I buy first, the kettle or the toaster?"
    kettles = [
        memory(f"kettle-{i}", conversation=f"k{i}", text=f"the kettle I bought, part {i}")
        for i in range(3)
    ]
    toaster = memory("toaster", conversation="t", text="the toaster I bought")
    weak = memory("weak", conversation="w", text="a recipe for soup")
    dense = candidates(
        (kettles[0], 0.6), (kettles[1], 0.59), (kettles[2], 0.58), (toaster, 0.57), (weak, 0.3)
    )
    sparse = candidates(
        (kettles[0], 5.0), (kettles[1], 4.9), (kettles[2], 4.8), (toaster, 4.7), (weak, 1.0)
    )

    without = ranking.fuse(dense, sparse, PLAIN, query=query).ranked
    fused = ranking.fuse(dense, sparse, replace(PLAIN, cover_weight=0.4), query=query, explain=True)

    assert order(without) == ["kettle-0", "kettle-1", "kettle-2", "toaster", "weak"]
    # The rarer word weighs more: the toaster is first, the best kettle next.
    assert order(fused.ranked) == ["toaster", "kettle-0", "kettle-1", "kettle-2", "weak"]
    parts = fused.contributions
    assert parts["toaster"]["cover"] > parts["kettle-0"]["cover"] > 0
    # Once a kettle is placed, the other kettles have no word left to cover.
    assert "cover" not in parts["kettle-1"] and "cover" not in parts["weak"]
    scores = [score for _, score in fused.ranked]
    assert scores == sorted(scores, reverse=True)
