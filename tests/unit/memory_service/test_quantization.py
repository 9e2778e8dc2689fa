"""int8 weights: one scale per output column, symmetric, the same bytes every time."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest

from memory_service.embedding.quantization import (
    INT8_MAX,
    int8_products_saturate,
    quantize_columns,
)


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


def test_the_unsigned_form_holds_the_same_weights() -> None:
    weight = np.linspace(-3, 3, 40, dtype=np.float32).reshape(8, 5)
    q = quantize_columns(weight)
    values, zero = q.unsigned()
    assert values.dtype == np.uint8 and zero.dtype == np.uint8 and zero.shape == (5,)
    restored = (values.astype(np.int16) - zero.astype(np.int16)).astype(np.float32) * q.scales
    assert np.array_equal(restored, q.values.astype(np.float32) * q.scales)


@pytest.mark.parametrize(
    ("machine", "flags", "saturate"),
    [
        ("x86_64", "fpu sse2 avx2 fma", True),
        ("x86_64", "fpu sse2 avx2 avx512f avx512_vnni", False),
        ("x86_64", "fpu avx2 avx_vnni", False),
        ("x86_64", None, True),
        ("aarch64", "fp asimd asimddp", False),
    ],
)
def test_uint8_weights_where_the_cpu_would_saturate_int8_products(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    machine: str,
    flags: str | None,
    saturate: bool,
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    if flags is not None:
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    monkeypatch.setattr(platform, "machine", lambda: machine)
    int8_products_saturate.cache_clear()
    try:
        assert int8_products_saturate(cpuinfo) is saturate
    finally:
        int8_products_saturate.cache_clear()
