"""Just enough of the ONNX protobuf format to write a model: graph, nodes, attributes,
tensors and typed inputs and outputs, encoded field by field.

The `onnx` package would do this too, at 33 MB installed for the few messages a model of
ours uses. Fields are written in a fixed order, so one model always has the same bytes.
Field numbers are those of onnx/onnx.proto.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# TensorProto.DataType
FLOAT = 1
INT32 = 6
INT64 = 7
_TENSOR_TYPES = {np.dtype(np.float32): FLOAT, np.dtype(np.int32): INT32, np.dtype(np.int64): INT64}
# AttributeProto.AttributeType
_ATTR_FLOAT, _ATTR_INT, _ATTR_STRING, _ATTR_FLOATS, _ATTR_INTS = 1, 2, 3, 6, 7

# A message is written as a list of byte chunks: a weight's bytes are copied once, when the
# whole model is joined, not once per level of nesting.
Chunks = list[bytes | memoryview]
Attribute = int | float | str | Sequence[int]


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _int(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(value)


def _bytes(field: int, value: bytes | str) -> Chunks:
    data = value.encode() if isinstance(value, str) else value
    return [_key(field, 2), _varint(len(data)), data]


def _message(field: int, chunks: Chunks) -> Chunks:
    return [_key(field, 2), _varint(sum(len(c) for c in chunks)), *chunks]


@dataclass(frozen=True, slots=True)
class Node:
    op: str
    inputs: Sequence[str]
    outputs: Sequence[str]
    attributes: Mapping[str, Attribute] | None = None
    domain: str = ""


def _attribute(name: str, value: Attribute) -> Chunks:
    chunks = _bytes(1, name)
    if isinstance(value, bool | int):
        chunks += [_int(3, int(value)), _int(20, _ATTR_INT)]
    elif isinstance(value, float):
        chunks += [_key(2, 5), struct.pack("<f", value), _int(20, _ATTR_FLOAT)]
    elif isinstance(value, str):
        chunks += [*_bytes(4, value), _int(20, _ATTR_STRING)]
    else:
        packed = b"".join(_varint(int(v)) for v in value)
        chunks += [*_bytes(8, packed), _int(20, _ATTR_INTS)]
    return chunks


def _node(node: Node, index: int) -> Chunks:
    chunks: Chunks = []
    for name in node.inputs:
        chunks += _bytes(1, name)
    for name in node.outputs:
        chunks += _bytes(2, name)
    chunks += _bytes(3, f"{node.op}_{index}")
    chunks += _bytes(4, node.op)
    for name, value in (node.attributes or {}).items():
        chunks += _message(5, _attribute(name, value))
    if node.domain:
        chunks += _bytes(7, node.domain)
    return chunks


def _tensor(name: str, array: np.ndarray) -> Chunks:
    dtype = _TENSOR_TYPES[array.dtype]
    chunks: Chunks = [_int(1, d) for d in array.shape]
    chunks += [_int(2, dtype), *_bytes(8, name)]
    # A view, not a copy: the bytes are copied once, when the model is joined.
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return [*chunks, _key(9, 2), _varint(data.nbytes), memoryview(data.data).cast("B")]


def _value_info(name: str, elem_type: int, dims: Sequence[int | str]) -> Chunks:
    shape: Chunks = []
    for dim in dims:
        shape += _message(1, _bytes(2, dim) if isinstance(dim, str) else [_int(1, dim)])
    tensor_type = [_int(1, elem_type), *_message(2, shape)]
    return [*_bytes(1, name), *_message(2, _message(1, tensor_type))]


@dataclass(frozen=True, slots=True)
class Value:
    """A graph input or output: its name, element type and dimensions (a str is symbolic)."""

    name: str
    elem_type: int
    dims: Sequence[int | str]


def model_bytes(
    *,
    name: str,
    nodes: Iterable[Node],
    initializers: dict[str, np.ndarray],
    inputs: Sequence[Value],
    outputs: Sequence[Value],
    opsets: dict[str, int],
    ir_version: int = 9,
) -> bytes:
    """A serialized ModelProto holding one graph."""
    graph: Chunks = []
    for index, node in enumerate(nodes):
        graph += _message(1, _node(node, index))
    graph += _bytes(2, name)
    for tensor_name, array in initializers.items():
        graph += _message(5, _tensor(tensor_name, array))
    for value in inputs:
        graph += _message(11, _value_info(value.name, value.elem_type, value.dims))
    for value in outputs:
        graph += _message(12, _value_info(value.name, value.elem_type, value.dims))
    model: Chunks = [_int(1, ir_version), *_bytes(2, "memory-layer")]
    model += _message(7, graph)
    for domain, version in opsets.items():
        model += _message(8, [*_bytes(1, domain), _int(2, version)])
    return b"".join(model)
