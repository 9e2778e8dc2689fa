"""int8 weights: one scale per output column, symmetric, the same bytes every time."""

from __future__ import annotations

import numpy as np

from memory_service.embedding.quantization import INT8_MAX, quantize_columns


def test_each_column_spans_the_int8_range_and_rounds_within_half_a_step() -> None:
    rng = np.random.default_rng(3)
    # Columns of very different size: one scale for all would flatten the small ones to 0.
    weight = (rng.standard_normal((64, 5)) * [1e-3, 0.1, 1.0, 30.0, 0.5]).astype(np.float32)
    q = quantize_columns(weight)
    assert q.values.dtype == np.int8 and q.values.shape == (64, 5)
    assert q.scales.dtype == np.float32 and q.scales.shape == (5,)
    assert np.array_equal(np.abs(q.values).max(axis=0), [INT8_MAX] * 5)
    restored = q.values.astype(np.float32) * q.scales
    assert np.all(np.abs(restored - weight) <= q.scales / 2 * (1 + 1e-6))


def test_a_zero_column_stays_zero_and_the_result_is_deterministic() -> None:
    weight = np.zeros((8, 3), dtype=np.float32)
    weight[:, 1] = np.linspace(-2, 2, 8)
    q = quantize_columns(weight)
    assert not q.values[:, 0].any() and not q.values[:, 2].any()
    again = quantize_columns(weight.copy())
    assert np.array_equal(q.values, again.values) and np.array_equal(q.scales, again.scales)
