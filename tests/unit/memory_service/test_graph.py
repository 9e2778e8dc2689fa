"""The inputs of the second feed-forward layer kept in float32 in int8: chosen from the
weights, by what the hidden state's largest dimensions make largest."""

from __future__ import annotations

import numpy as np

from memory_service.embedding.graph import outlier_inputs


def test_outlier_inputs_weigh_the_weights_by_the_layer_norms_gain() -> None:
    # Hidden dimension 0 runs large (gain 10): output 6 weighs it most once the gain counts,
    # though output 3 has the largest weight as stored.
    gain = np.array([10.0, 1.0, 1.0, 1.0], dtype=np.float32)
    weight = np.full((8, 4), 0.01, dtype=np.float32)
    weight[6, 0] = 0.5
    weight[3, 1] = 3.0
    weight[1, 2] = -4.0
    assert outlier_inputs(weight, gain, 1).tolist() == [6]
    assert outlier_inputs(weight, gain, 3).tolist() == [1, 3, 6]
