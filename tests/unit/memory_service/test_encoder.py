"""How any encoder with a fixed token window splits long text and pools its windows."""

from __future__ import annotations

import itertools

import numpy as np

from memory_service.embedding.encoder import (
    CHUNK_OVERLAP_TOKENS,
    MAX_WINDOWS_PER_TEXT,
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
