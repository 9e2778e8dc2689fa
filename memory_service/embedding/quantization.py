"""int8 weights for the model's dense layers: symmetric, one scale per output column, computed
from the float32 weights with numpy, so the same weights always give the same int8 bytes.

ONNX Runtime's `DynamicQuantizeMatMul` takes them as they are: the activations are quantized
to uint8 per call, the product is summed in int32 and scaled back to float32 by the
activation's scale times each column's scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Symmetric range: -127..127, so zero is exactly zero and no zero point is needed.
INT8_MAX = 127


@dataclass(frozen=True, slots=True)
class QuantizedWeight:
    values: np.ndarray  # int8, [in, out]
    scales: np.ndarray  # float32, [out]


def quantize_columns(weight: np.ndarray) -> QuantizedWeight:
    """`weight` ([in, out], float32) as int8 with a scale per output column."""
    peak = np.abs(weight).max(axis=0)
    scales = np.where(peak > 0, peak / INT8_MAX, 1.0).astype(np.float32)
    values = np.clip(np.rint(weight / scales), -INT8_MAX, INT8_MAX).astype(np.int8)
    return QuantizedWeight(np.ascontiguousarray(values), scales)
