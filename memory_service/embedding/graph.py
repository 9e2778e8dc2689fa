"""The ONNX graph of a BERT sentence encoder, assembled from its weights at startup.

Inputs `input_ids` and `attention_mask` ([batch, tokens], int64); output `embedding`
([batch, dimension], float32): the mask-weighted mean of the last layer's token states, cut
to the first `dimension` values and L2-normalized, which is what sentence-transformers'
`encode(normalize_embeddings=True)` gives for a BERT model with mean pooling.

The graph is written in standard operators (opset 17, GELU spelled with Erf) as an export of
the transformers model would be; ONNX Runtime's optimizer fuses them into its own kernels
(layer norm with the residual sum, bias with GELU), which ran a little faster on this model
than writing its fused operators directly. In int8 the dense layers not in `FLOAT32_LAYERS`
are ONNX Runtime's `DynamicQuantizeMatMul` over int8 weights (quantization.py).

The messages are onnx.proto's (compiled into protos/onnx/). The weights are not in them:
the graph names them, and the session is handed them as arrays (`BertGraph.weights`), so
they are held once, not a second time inside the serialized model. The same weights always
give the same bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from memory_service.embedding.model_dir import ModelDir, ModelError
from memory_service.embedding.quantization import quantize_columns
from protos.onnx import onnx_pb2 as onnx

OPSET = 17
# ONNX Runtime's own operators (DynamicQuantizeMatMul).
MS_DOMAIN = "com.microsoft"
IR_VERSION = 9
Precision = Literal["int8", "float32"]
# Dense layers that stay float32 in an int8 graph, by their name within a layer: the second
# feed-forward layer sums 1,536 GELU outputs whose few large values set the activation's
# uint8 scale for all the others. Measured on the parity corpus against float32: all int8,
# cosine mean 0.990, worst 0.949 (a short text); these float32, mean 0.995, worst 0.973;
# each layer's alone helps a little, none enough, and the last layer's not at all, so it is
# int8 too (the same worst cosine, a sixth less float32 work).
FLOAT32_LAYERS = ("output.dense",)
_TENSOR_TYPES = {
    np.dtype(np.float32): onnx.TensorProto.FLOAT,
    np.dtype(np.int8): onnx.TensorProto.INT8,
    np.dtype(np.int64): onnx.TensorProto.INT64,
}
Attribute = int | float | str | list[int]


@dataclass(frozen=True, slots=True)
class BertGraph:
    """A serialized ModelProto and the weights its graph names but does not hold."""

    model_bytes: bytes
    weights: dict[str, np.ndarray]


def _attribute(name: str, value: Attribute) -> onnx.AttributeProto:
    kind = onnx.AttributeProto
    if isinstance(value, bool | int):
        return kind(name=name, type=kind.INT, i=int(value))
    if isinstance(value, float):
        return kind(name=name, type=kind.FLOAT, f=value)
    if isinstance(value, str):
        return kind(name=name, type=kind.STRING, s=value.encode())
    return kind(name=name, type=kind.INTS, ints=value)


def _tensor(name: str, array: np.ndarray) -> onnx.TensorProto:
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return onnx.TensorProto(
        name=name, dims=array.shape, data_type=_TENSOR_TYPES[array.dtype], raw_data=data.tobytes()
    )


def _declared(name: str, array: np.ndarray) -> onnx.TensorProto:
    """An initializer the session is handed (`SessionOptions.add_initializer`): its type and
    shape, no data."""
    return onnx.TensorProto(
        name=name,
        dims=array.shape,
        data_type=_TENSOR_TYPES[array.dtype],
        data_location=onnx.TensorProto.EXTERNAL,
        external_data=[onnx.StringStringEntryProto(key="location", value="session")],
    )


def _value_info(name: str, elem_type: int, dims: list[int | str]) -> onnx.ValueInfoProto:
    shape = onnx.TensorShapeProto(
        dim=[
            onnx.TensorShapeProto.Dimension(dim_param=d)
            if isinstance(d, str)
            else onnx.TensorShapeProto.Dimension(dim_value=d)
            for d in dims
        ]
    )
    tensor_type = onnx.TypeProto.Tensor(elem_type=elem_type, shape=shape)
    return onnx.ValueInfoProto(name=name, type=onnx.TypeProto(tensor_type=tensor_type))


def bert_graph(
    model: ModelDir, dimension: int | None = None, precision: Precision = "float32"
) -> BertGraph:
    """The ONNX graph of `model`; `dimension` keeps the first N values of each embedding
    (unset: all)."""
    config = model.config
    source = model.weights()
    dimension = dimension or config.hidden
    if dimension > config.hidden:
        raise ModelError(f"embedding dimension {dimension} exceeds the model's {config.hidden}")
    head_size = config.hidden // config.heads

    graph = onnx.GraphProto(name=model.name)
    weights: dict[str, np.ndarray] = {}

    def weight(name: str) -> np.ndarray:
        try:
            return source[name]
        except KeyError:
            raise ModelError(f"{model.path}/model.safetensors has no tensor {name}") from None

    def const(name: str, value: np.ndarray | float | list[int]) -> str:
        """A constant: small ones inside the model, weights handed to the session."""
        if isinstance(value, float):
            value = np.array(value, dtype=np.float32)
        elif isinstance(value, list):
            value = np.array(value, dtype=np.int64)
        if value.size > 64:
            weights[name] = np.ascontiguousarray(value)
        else:
            graph.initializer.append(_tensor(name, value))
        return name

    def add(op: str, inputs: list[str], output: str, domain: str = "", **attrs: Attribute) -> str:
        graph.node.append(
            onnx.NodeProto(
                input=inputs,
                output=[output],
                name=f"{op}_{len(graph.node)}",
                op_type=op,
                domain=domain,
                attribute=[_attribute(k, v) for k, v in attrs.items()],
            )
        )
        return output

    def quantized(name: str) -> bool:
        # "encoder.layer.N.<name within the layer>"
        layer, local = name.split(".", 3)[2:]
        last = int(layer) == config.layers - 1
        return precision == "int8" and (local not in FLOAT32_LAYERS or last)

    def linear(x: str, name: str, output: str) -> str:
        # transformers keeps [out, in]; MatMul takes [in, out].
        matrix = np.ascontiguousarray(weight(f"{name}.weight").T)
        bias = const(f"{name}.bias", weight(f"{name}.bias"))
        if quantized(name):
            q = quantize_columns(matrix)
            inputs = [x, const(f"{name}.weight_int8", q.values)]
            inputs += [const(f"{name}.weight_scale", q.scales), "", bias]
            return add("DynamicQuantizeMatMul", inputs, output, domain=MS_DOMAIN)
        product = add("MatMul", [x, const(f"{name}.weight", matrix)], f"{output}.product")
        return add("Add", [product, bias], output)

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
    add("Cast", ["attention_mask"], "mask", to=onnx.TensorProto.FLOAT)
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

    graph.input.extend(
        [
            _value_info("input_ids", onnx.TensorProto.INT64, ["batch", "tokens"]),
            _value_info("attention_mask", onnx.TensorProto.INT64, ["batch", "tokens"]),
        ]
    )
    # The handed-over weights are initializers with their type and shape but no data.
    graph.initializer.extend(_declared(name, array) for name, array in weights.items())
    graph.output.append(_value_info("embedding", onnx.TensorProto.FLOAT, ["batch", dimension]))
    opsets = [onnx.OperatorSetIdProto(domain="", version=OPSET)]
    if precision == "int8":
        opsets.append(onnx.OperatorSetIdProto(domain=MS_DOMAIN, version=1))
    proto = onnx.ModelProto(
        ir_version=IR_VERSION, producer_name="memory-layer", graph=graph, opset_import=opsets
    )
    return BertGraph(proto.SerializeToString(deterministic=True), weights)
