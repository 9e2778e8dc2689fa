"""The ONNX graph of a BERT sentence encoder, assembled from its weights at startup.

Inputs `input_ids` and `attention_mask` ([batch, tokens], int64); output `embedding`
([batch, dimension], float32): the mask-weighted mean of the last layer's token states, cut
to the first `dimension` values and L2-normalized, which is what sentence-transformers'
`encode(normalize_embeddings=True)` gives for a BERT model with mean pooling.

The graph is written in standard operators (opset 17, GELU spelled with Erf) as an export of
the transformers model would be; ONNX Runtime's optimizer fuses them into its own kernels
(layer norm with the residual sum, bias with GELU), which ran a little faster on this model
than writing its fused operators directly. In int8 the dense layers are ONNX Runtime's
`DynamicQuantizeMatMul` over int8 weights (quantization.py; uint8 with a zero point on a CPU
whose int8 products would saturate), but for a few inputs of the second feed-forward layer
(OUTLIER_INPUTS) and that whole layer in FLOAT32_OUTPUT_LAYERS.

The messages are onnx.proto's (compiled into protos/onnx/). The weights are not in them:
the graph names them, and the session is handed them as arrays (`BertGraph.weights`), so
they are held once, not a second time inside the serialized model. The same weights always
give the same bytes on the same kind of CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from memory_service.embedding.model_dir import ModelDir, ModelError
from memory_service.embedding.quantization import int8_products_saturate, quantize_columns
from protos.onnx import onnx_pb2 as onnx

OPSET = 17
# ONNX Runtime's own operators (DynamicQuantizeMatMul).
MS_DOMAIN = "com.microsoft"
IR_VERSION = 9
Precision = Literal["int8", "float32"]
# The second feed-forward layer sums 1,536 GELU outputs, one or two of which run 3-4x larger
# than all the others whatever the text, and would set the activations' uint8 scale for all of
# them: in int8 these inputs of each layer, OUTLIER_INPUTS of them, are multiplied in float32
# and the rest in int8. They are found from the weights (`outlier_inputs`). Measured on the
# parity corpus against float32, cosine mean / worst (a two-token text): that layer all int8,
# 0.990 / 0.949; all float32 (in every layer but the last), 0.995 / 0.973; the outliers in
# float32, 0.994 / 0.969, and 0.994 / 0.971 with the layers in FLOAT32_OUTPUT_LAYERS all
# float32 (each other layer all float32 instead gave 0.957-0.969). The float32 products were
# half of an int8 run's time (ONNX Runtime's profile).
OUTLIER_INPUTS = 4
FLOAT32_OUTPUT_LAYERS = (2,)
_TENSOR_TYPES = {
    np.dtype(np.float32): onnx.TensorProto.FLOAT,
    np.dtype(np.int8): onnx.TensorProto.INT8,
    np.dtype(np.uint8): onnx.TensorProto.UINT8,
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

    def dense(
        x: str, name: str, output: str, matrix: np.ndarray, bias: np.ndarray, int8: bool
    ) -> str:
        """x times `matrix` ([in, out]) plus `bias`."""
        matrix = np.ascontiguousarray(matrix)
        bias_name = const(f"{name}.bias", np.ascontiguousarray(bias))
        if int8:
            q = quantize_columns(matrix)
            scale = const(f"{name}.weight_scale", q.scales)
            if int8_products_saturate():
                values, zero = q.unsigned()
                inputs = [x, const(f"{name}.weight_uint8", values), scale]
                inputs += [const(f"{name}.weight_zero", zero), bias_name]
            else:
                inputs = [x, const(f"{name}.weight_int8", q.values), scale, "", bias_name]
            return add("DynamicQuantizeMatMul", inputs, output, domain=MS_DOMAIN)
        product = add("MatMul", [x, const(f"{name}.weight", matrix)], f"{output}.product")
        return add("Add", [product, bias_name], output)

    def linear(x: str, name: str, output: str) -> str:
        # transformers keeps [out, in]; MatMul takes [in, out].
        matrix, bias = weight(f"{name}.weight").T, weight(f"{name}.bias")
        return dense(x, name, output, matrix, bias, precision == "int8")

    def feed_forward(x: str, p: str, layer: int) -> str:
        """The layer's two dense layers with GELU between; in int8, the second's outlier
        inputs (see OUTLIER_INPUTS) come last and are multiplied in float32."""
        inner_weight = weight(f"{p}.intermediate.dense.weight")  # [inner, hidden]
        inner_bias = weight(f"{p}.intermediate.dense.bias")
        out_weight = weight(f"{p}.output.dense.weight")  # [hidden, inner]
        out_bias = weight(f"{p}.output.dense.bias")
        int8 = precision == "int8"
        split = int8 and layer not in FLOAT32_OUTPUT_LAYERS
        order = np.arange(len(inner_bias))
        if split:
            gain = weight(f"{p}.attention.output.LayerNorm.weight")
            outliers = outlier_inputs(inner_weight, gain, OUTLIER_INPUTS)
            order = np.concatenate([np.setdiff1d(order, outliers), outliers])
        inner_name, out_name = f"{p}.intermediate.dense", f"{p}.output.dense"
        inner = dense(x, inner_name, f"{p}.inner", inner_weight[order].T, inner_bias[order], int8)
        # Exact GELU: x * (1 + erf(x / sqrt 2)) / 2.
        erf = add("Erf", [add("Div", [inner, "sqrt_2"], f"{p}.erf_in")], f"{p}.erf")
        gelu = add("Mul", [inner, add("Add", [erf, "1.0"], f"{p}.erf_1")], f"{p}.gelu_2")
        gelu = add("Mul", [gelu, "0.5"], f"{p}.gelu")
        if not split:
            return dense(gelu, out_name, f"{p}.out", out_weight.T, out_bias, int8=False)
        kept = const(f"{p}.kept_inputs", [len(order) - OUTLIER_INPUTS])
        inputs = const(f"{p}.inner_inputs", [len(order)])
        common = add("Slice", [gelu, "zero", kept, "minus_one"], f"{p}.gelu_common")
        rare = add("Slice", [gelu, kept, inputs, "minus_one"], f"{p}.gelu_outliers")
        matrix = out_weight[:, order].T
        main = dense(common, out_name, f"{p}.out_common", matrix[:-OUTLIER_INPUTS], out_bias, int8)
        outlier_weight = np.ascontiguousarray(matrix[-OUTLIER_INPUTS:])
        outlier_name = const(f"{out_name}.outlier_weight", outlier_weight)
        rest = add("MatMul", [rare, outlier_name], f"{p}.out_outliers")
        return add("Add", [main, rest], f"{p}.out")

    def layer_norm(x: str, name: str, output: str) -> str:
        scale, bias = const(f"{name}.weight", weight(f"{name}.weight")), f"{name}.bias"
        const(bias, weight(bias))
        return add("LayerNormalization", [x, scale, bias], output, epsilon=eps, axis=-1)

    eps = config.layer_norm_eps
    const("zero", [0])
    const("one", [1])
    const("minus_one", [-1])
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

        out = feed_forward(normed, p, i)
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


def outlier_inputs(inner_weight: np.ndarray, gain: np.ndarray, count: int) -> np.ndarray:
    """The `count` outputs of the first feed-forward layer (weight [inner, hidden], after a
    layer norm of that `gain`) that run largest, sorted: those whose weights times the gain
    have the largest single entry. The hidden states carry a few dimensions far larger than
    the rest; the outputs that weigh one of them most are those that grow with it (on the
    calibration texts, the largest GELU output of each layer was the first of this order)."""
    peaks = np.abs(inner_weight * gain[None, :]).max(axis=1)
    return np.sort(np.argsort(-peaks, kind="stable")[:count])
