"""int8 weights for the model's dense layers: symmetric, one scale per output column, computed
from the float32 weights with numpy, so the same weights always give the same int8 bytes.

ONNX Runtime's `DynamicQuantizeMatMul` takes them as they are: the activations are quantized
to uint8 per call, the product is summed in int32 and scaled back to float32 by the
activation's scale times each column's scale.

On an x86 CPU without VNNI, ONNX Runtime multiplies uint8 by int8 with an instruction that
adds two products in 16 bits and saturates there (up to 2 x 255 x 127), which moved a short
text's vector to 0.963 of float32's against 0.971 with VNNI. There the weights go as uint8
with a zero point of 128 (`QuantizedWeight.unsigned`): the same values, multiplied by the
kernel that widens before it adds, so every CPU computes the same products.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Symmetric range: -127..127, so zero is exactly zero and no zero point is needed.
INT8_MAX = 127


# Where a uint8 weight's zero is.
UINT8_ZERO = 128
# The CPU flags of x86 instructions that multiply uint8 by int8 into 32 bits.
_VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


@dataclass(frozen=True, slots=True)
class QuantizedWeight:
    values: np.ndarray  # int8, [in, out]
    scales: np.ndarray  # float32, [out]

    def unsigned(self) -> tuple[np.ndarray, np.ndarray]:
        """The same weights as uint8 and their zero point, one per column."""
        shifted = (self.values.astype(np.int16) + UINT8_ZERO).astype(np.uint8)
        zero = np.full(self.scales.shape, UINT8_ZERO, dtype=np.uint8)
        return np.ascontiguousarray(shifted), zero


@functools.cache
def int8_products_saturate(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether ONNX Runtime's uint8 x int8 products saturate on this CPU: x86 without VNNI
    (an x86 CPU whose flags cannot be read counts as one). Other CPUs widen first."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    try:
        text = cpuinfo.read_text()
    except OSError:
        return True
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return not _VNNI_FLAGS.intersection(flags.split(":", 1)[-1].split())


def quantize_columns(weight: np.ndarray) -> QuantizedWeight:
    """`weight` ([in, out], float32) as int8 with a scale per output column."""
    peak = np.abs(weight).max(axis=0)
    scales = np.where(peak > 0, peak / INT8_MAX, 1.0).astype(np.float32)
    values = np.clip(np.rint(weight / scales), -INT8_MAX, INT8_MAX).astype(np.int8)
    return QuantizedWeight(np.ascontiguousarray(values), scales)
