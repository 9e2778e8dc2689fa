"""The `Encoder` over ONNX Runtime: the model's own tokenizer (tokenizers), long text split into
model-sized windows (those its `LongText` picks), sequences of similar length run together."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from memory_service.embedding import calibration
from memory_service.embedding.encoder import DEFAULT_LONG_TEXT, LongText, mean_of_windows
from memory_service.embedding.graph import BertGraph, Precision, bert_graph
from memory_service.embedding.model_dir import ModelDir, ModelError

# Padded tokens in one model call at most: bounds the memory of attention's [heads, tokens,
# tokens] scores whatever the batch.
MAX_CALL_TOKENS = 8_192
# Sequences run together pad to the longest of them. Sorted by length, a call takes the next
# sequence while the padding stays within this share of its real tokens, plus a few tokens:
# a call has a fixed cost, so a call for every length would lose more than a little padding.
PAD_SHARE = 0.05
PAD_TOKENS = 4


class OnnxEncoder:
    """Encodes on the calling thread with one ONNX Runtime session shared by all workers.

    A session's `run` may be called from several threads at once; with one intra-op thread
    (the default when each embedding worker has one core) a run computes on its caller's
    thread, so the workers run side by side on one copy of the weights."""

    def __init__(
        self,
        model: ModelDir,
        *,
        dimension: int | None = None,
        model_threads: int = 1,
        precision: Precision = "int8",
        long_text: LongText = DEFAULT_LONG_TEXT,
    ):
        self.model_name = model.name
        self.precision = precision
        self.model_threads = model_threads
        self.long_text = long_text
        self._lowercase = model.do_lower_case
        self._tokenizer = Tokenizer.from_file(str(model.tokenizer_file))
        # tokenizer.json may carry the padding and truncation it was trained with; windows
        # and padding are done here.
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._prefix, self._suffix = special_tokens(model.tokenizer_file)
        # Tokens per window: the model's limit less the special tokens added around it.
        self.window = model.max_seq_length - len(self._prefix) - len(self._suffix)
        self._session = open_session(bert_graph(model, dimension, precision), model_threads)
        self.dimension = int(self._session.get_outputs()[0].shape[1])
        self.calibration = calibration.measure(self)

    @property
    def mode(self) -> str:
        return (
            f"onnxruntime {self.precision}, {self.model_threads} thread(s) per call, cosine "
            f"{self.calibration.unrelated} unrelated to {self.calibration.related} related, "
            f"long text {self.long_text}"
        )

    def prepare_thread(self) -> None:
        pass

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids, no special tokens, however long."""
        if self._lowercase:
            texts = [t.lower() for t in texts]
        return [e.ids for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def windows(self, text: str, first_window_only: bool = False) -> list[list[int]]:
        """The token sequences the model sees for `text`, special tokens included."""
        return self._windows(self.token_ids([text])[0], first_window_only)

    def _windows(self, ids: list[int], first_window_only: bool) -> list[list[int]]:
        spans = (
            [(0, min(len(ids), self.window))]
            if first_window_only
            else self.long_text.spans(len(ids), self.window)
        )
        return [self.sequence(ids[start:end]) for start, end in spans]

    def sequence(self, ids: Sequence[int]) -> list[int]:
        """The model's input for one window's token ids: the special tokens around them."""
        return [*self._prefix, *ids, *self._suffix]

    def encode(self, texts: Sequence[str], first_window_only: Sequence[bool]) -> list[np.ndarray]:
        sequences: list[list[int]] = []
        counts: list[int] = []
        for ids, first_only in zip(self.token_ids(texts), first_window_only, strict=True):
            windows = self._windows(ids, first_only)
            sequences.extend(windows)
            counts.append(len(windows))
        vectors = self.encode_sequences(sequences)
        combined: list[np.ndarray] = []
        at = 0
        for n in counts:
            combined.append(mean_of_windows(vectors[at : at + n]))
            at += n
        return combined

    def encode_sequences(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """One unit vector per sequence of token ids, special tokens included."""
        out = np.empty((len(sequences), self.dimension), dtype=np.float32)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        for group in length_groups([len(sequences[i]) for i in order]):
            part = order[group]
            longest = len(sequences[part[-1]])
            ids = np.zeros((len(part), longest), dtype=np.int64)
            mask = np.zeros((len(part), longest), dtype=np.int64)
            for row, i in enumerate(part):
                ids[row, : len(sequences[i])] = sequences[i]
                mask[row, : len(sequences[i])] = 1
            (vectors,) = self._session.run(None, {"input_ids": ids, "attention_mask": mask})
            out[part] = vectors
        return out


def open_session(graph: BertGraph, model_threads: int) -> ort.InferenceSession:
    """An ONNX Runtime session of `graph` on the CPU, `model_threads` threads per run.

    The weights go to the session as arrays rather than inside the serialized graph, which
    only names them. The session copies them into tensors of its own while it is built
    (tested), so the caller need not keep `graph` once this returns."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = model_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Threads of a run wait for each other's work by sleeping, not spinning: spinning threads
    # take cores the other embedding workers and the rest of the machine need (measured
    # slower under load, equal when idle).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    weights = [ort.OrtValue.ortvalue_from_numpy(array) for array in graph.weights.values()]
    options.add_external_initializers(list(graph.weights), weights)
    return ort.InferenceSession(graph.model_bytes, options, providers=["CPUExecutionProvider"])


def length_groups(lengths: Sequence[int]) -> list[slice]:
    """Runs of the sorted `lengths` that go through the model together: padded to the longest
    of the run, within PAD_SHARE (plus PAD_TOKENS) of their real tokens and MAX_CALL_TOKENS."""
    groups: list[slice] = []
    start, real = 0, 0
    for end, length in enumerate(lengths):
        padded = (end - start + 1) * length
        if end > start and (
            padded > MAX_CALL_TOKENS or padded > (real + length) * (1 + PAD_SHARE) + PAD_TOKENS
        ):
            groups.append(slice(start, end))
            start, real = end, 0
        real += length
    if start < len(lengths):
        groups.append(slice(start, len(lengths)))
    return groups


def special_tokens(tokenizer_file: Path) -> tuple[list[int], list[int]]:
    """The token ids the tokenizer puts before and after a single text ([CLS] and [SEP] for
    BERT), read from its post-processor."""
    processor = json.loads(tokenizer_file.read_text(encoding="utf-8")).get("post_processor")
    kind = (processor or {}).get("type")
    if kind == "BertProcessing":
        return [int(processor["cls"][1])], [int(processor["sep"][1])]
    if kind == "TemplateProcessing":
        prefix: list[int] = []
        suffix: list[int] = []
        side = prefix
        for piece in processor["single"]:
            if "Sequence" in piece:
                side = suffix
            else:
                side.extend(processor["special_tokens"][piece["SpecialToken"]["id"]]["ids"])
        return prefix, suffix
    raise ModelError(f"{tokenizer_file}: post-processor {kind!r} is not supported")
