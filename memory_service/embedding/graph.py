"""The ONNX graph of a BERT sentence encoder, assembled from its weights at startup.

Inputs `input_ids` and `attention_mask` ([batch, tokens], int64); output `embedding`
([batch, dimension], float32): the mask-weighted mean of the last layer's token states, cut
to the first `dimension` values and L2-normalized, which is what sentence-transformers'
`encode(normalize_embeddings=True)` gives for a BERT model with mean pooling.

The graph is written in standard operators (opset 17, GELU spelled with Erf) as an export of
the transformers model would be; ONNX Runtime's optimizer fuses them into its own kernels
(layer norm with the residual sum, bias with GELU), which ran a little faster on this model
than writing its fused operators directly. The same weights always give the same bytes.
"""

from __future__ import annotations

import math

import numpy as np

from memory_service.embedding.model_dir import ModelDir, ModelError
from memory_service.embedding.onnx_proto import FLOAT, INT64, Attribute, Node, Value, model_bytes

OPSET = 17


def bert_model_bytes(model: ModelDir, dimension: int | None = None) -> bytes:
    """The serialized ONNX model of `model`; `dimension` keeps the first N values of each
    embedding (unset: all)."""
    config = model.config
    weights = model.weights()
    dimension = dimension or config.hidden
    if dimension > config.hidden:
        raise ModelError(f"embedding dimension {dimension} exceeds the model's {config.hidden}")
    head_size = config.hidden // config.heads

    init: dict[str, np.ndarray] = {}
    nodes: list[Node] = []

    def weight(name: str) -> np.ndarray:
        try:
            return weights[name]
        except KeyError:
            raise ModelError(f"{model.path}/model.safetensors has no tensor {name}") from None

    def const(name: str, value: np.ndarray | float | list[int]) -> str:
        if isinstance(value, float):
            value = np.array(value, dtype=np.float32)
        elif isinstance(value, list):
            value = np.array(value, dtype=np.int64)
        init[name] = value
        return name

    def add(op: str, inputs: list[str], output: str, **attributes: Attribute) -> str:
        nodes.append(Node(op, inputs, [output], attributes or None))
        return output

    def linear(x: str, name: str, output: str) -> str:
        # transformers keeps [out, in]; MatMul takes [in, out].
        w = const(f"{name}.weight", np.ascontiguousarray(weight(f"{name}.weight").T))
        product = add("MatMul", [x, w], f"{output}.product")
        return add("Add", [product, const(f"{name}.bias", weight(f"{name}.bias"))], output)

    def layer_norm(x: str, name: str, output: str) -> str:
        scale, bias = const(f"{name}.weight", weight(f"{name}.weight")), f"{name}.bias"
        const(bias, weight(bias))
        return add("LayerNormalization", [x, scale, bias], output, epsilon=eps, axis=-1)

    eps = config.layer_norm_eps
    const("zero", [0])
    const("one", [1])
    const("1.0", 1.0)
    const("heads_shape", [0, 0, config.heads, head_size])
    const("hidden_shape", [0, 0, config.hidden])

    # Embeddings: word + position + token type 0 (a single text has no second segment).
    positions = weight("embeddings.position_embeddings.weight")
    positions = positions + weight("embeddings.token_type_embeddings.weight")[0]
    const("embeddings.word", weight("embeddings.word_embeddings.weight"))
    const("embeddings.position", np.ascontiguousarray(positions, dtype=np.float32))
    add("Gather", ["embeddings.word", "input_ids"], "words")
    add("Shape", ["input_ids"], "tokens", start=1, end=2)
    add("Slice", ["embeddings.position", "zero", "tokens", "zero"], "positions")
    add("Add", ["words", "positions"], "embedded")
    hidden = layer_norm("embedded", "embeddings.LayerNorm", "hidden_0")

    # Padding is kept out of attention by a large negative score: [batch, 1, 1, tokens].
    add("Cast", ["attention_mask"], "mask", to=FLOAT)
    add("Sub", ["1.0", "mask"], "padding")
    add("Mul", ["padding", const("masked_score", float(np.finfo(np.float32).min))], "mask_2d")
    add("Unsqueeze", ["mask_2d", const("axes_1_2", [1, 2])], "attention_bias")
    const("score_scale", 1.0 / math.sqrt(head_size))
    const("sqrt_2", math.sqrt(2.0))
    const("0.5", 0.5)

    for i in range(config.layers):
        p = f"encoder.layer.{i}"

        def heads(x: str, perm: list[int], name: str) -> str:
            return add(
                "Transpose", [add("Reshape", [x, "heads_shape"], f"{name}.split")], name, perm=perm
            )

        query = heads(
            linear(hidden, f"{p}.attention.self.query", f"{p}.q"), [0, 2, 1, 3], f"{p}.qh"
        )
        key = heads(linear(hidden, f"{p}.attention.self.key", f"{p}.k"), [0, 2, 3, 1], f"{p}.kh")
        value = heads(
            linear(hidden, f"{p}.attention.self.value", f"{p}.v"), [0, 2, 1, 3], f"{p}.vh"
        )
        scores = add("MatMul", [query, key], f"{p}.scores")
        scores = add("Mul", [scores, "score_scale"], f"{p}.scaled")
        scores = add("Add", [scores, "attention_bias"], f"{p}.masked")
        probs = add("Softmax", [scores], f"{p}.probs", axis=-1)
        context = add("MatMul", [probs, value], f"{p}.context")
        context = add("Transpose", [context], f"{p}.context_t", perm=[0, 2, 1, 3])
        context = add("Reshape", [context, "hidden_shape"], f"{p}.context_h")
        attended = linear(context, f"{p}.attention.output.dense", f"{p}.attended")
        residual = add("Add", [attended, hidden], f"{p}.residual")
        normed = layer_norm(residual, f"{p}.attention.output.LayerNorm", f"{p}.normed")

        inner = linear(normed, f"{p}.intermediate.dense", f"{p}.inner")
        # Exact GELU: x * (1 + erf(x / sqrt 2)) / 2.
        erf = add("Erf", [add("Div", [inner, "sqrt_2"], f"{p}.erf_in")], f"{p}.erf")
        gelu = add("Mul", [inner, add("Add", [erf, "1.0"], f"{p}.erf_1")], f"{p}.gelu_2")
        gelu = add("Mul", [gelu, "0.5"], f"{p}.gelu")
        out = linear(gelu, f"{p}.output.dense", f"{p}.out")
        residual = add("Add", [out, normed], f"{p}.out_residual")
        hidden = layer_norm(residual, f"{p}.output.LayerNorm", f"hidden_{i + 1}")

    # Mean pooling: the mask-weighted sum of token states ([batch, 1, tokens] x [batch,
    # tokens, hidden]); dividing by the count would not change the normalized vector.
    add("Unsqueeze", ["mask", "one"], "mask_row")
    add("MatMul", ["mask_row", hidden], "summed_row")
    add("Squeeze", ["summed_row", "one"], "summed")
    if dimension < config.hidden:
        add("Slice", ["summed", "zero", const("dimension", [dimension]), "one"], "kept")
    else:
        add("Identity", ["summed"], "kept")
    add("LpNormalization", ["kept"], "embedding", axis=-1, p=2)

    return model_bytes(
        name=model.name,
        nodes=nodes,
        initializers=init,
        inputs=[
            Value("input_ids", INT64, ["batch", "tokens"]),
            Value("attention_mask", INT64, ["batch", "tokens"]),
        ],
        outputs=[Value("embedding", FLOAT, ["batch", dimension])],
        opsets={"": OPSET},
    )
