"""How any encoder with a fixed token window splits long text and pools its windows."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from memory_service.embedding.encoder import (
    CHUNK_OVERLAP_TOKENS,
    MAX_WINDOWS_PER_TEXT,
    LongText,
    contiguous_windows,
    mean_of_windows,
    token_windows,
)


def test_text_within_the_window_is_one_window() -> None:
    assert token_windows(0, 254) == [(0, 0)]
    assert token_windows(254, 254) == [(0, 254)]


def test_longer_text_is_covered_by_windows_overlapping_at_the_seams() -> None:
    spans = token_windows(900, 254)
    assert spans[0] == (0, 254) and spans[-1][1] == 900
    assert all(end - start <= 254 for start, end in spans)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end - start == CHUNK_OVERLAP_TOKENS


def test_the_longest_texts_get_windows_spread_from_start_to_end() -> None:
    spans = token_windows(80_000, 254)
    assert len(spans) == MAX_WINDOWS_PER_TEXT
    assert spans[0] == (0, 254) and spans[-1][1] == 80_000
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(spans)]
    assert max(gaps) <= 2 * min(gaps)


def test_a_texts_vector_is_the_normalized_mean_of_its_windows() -> None:
    one = np.array([[0.6, 0.8]], dtype=np.float32)
    assert np.array_equal(mean_of_windows(one), one[0])
    two = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    assert np.allclose(mean_of_windows(two), [2**-0.5, 2**-0.5])
    opposite = np.array([[1.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    assert np.array_equal(mean_of_windows(opposite), [0.0, 0.0])


def test_long_text_names_the_windows_a_text_is_embedded_from() -> None:
    assert LongText.parse("mean") == LongText(0)
    assert LongText.parse("first") == LongText(1)
    assert LongText.parse(" First:3 ") == LongText(3)
    assert [str(LongText(n)) for n in (0, 1, 3)] == ["mean", "first", "first:3"]
    for wrong in ("", "last", "first:0", "first:x", "mean:2", f"first:{MAX_WINDOWS_PER_TEXT + 1}"):
        with pytest.raises(ValueError, match="mean, first or first:N"):
            LongText.parse(wrong)


def test_first_windows_are_taken_from_the_start_of_the_text() -> None:
    assert LongText(1).spans(900, 254) == [(0, 254)]
    assert LongText(2).spans(900, 254) == token_windows(900, 254)[:2]
    assert LongText(3).spans(100, 254) == [(0, 100)]
    assert LongText(0).spans(900, 254) == token_windows(900, 254)
    # Past the cap, mean spreads its windows over the text; first:N stays at its start.
    assert LongText(2).spans(80_000, 254) == contiguous_windows(80_000, 254)[:2]
    assert LongText(2).spans(80_000, 254)[1] == (222, 476)
    assert LongText(0).spans(80_000, 254) == token_windows(80_000, 254)
