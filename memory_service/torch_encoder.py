"""The `Encoder` over a sentence-transformers model in torch: long text split into
model-sized windows rather than cut off, BERT models with mean pooling run packed."""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from memory_service.encoder import mean_of_windows, token_windows
from memory_service.model_loading import Precision, precision_scope, set_model_threads
from memory_service.packed import PackedBertEncoder

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


class TorchEncoder:
    """Encodes with a SentenceTransformer on the calling thread.

    Tokenizing, chunking and the model all run on the embedder's worker threads. BERT
    models with mean pooling (the bundled one) run packed (see packed.py): compute goes to
    real tokens, not to padding; any other model goes through `SentenceTransformer.encode`.
    Each worker thread runs the model on `model_threads` intra-op threads of its own."""

    def __init__(
        self,
        model: SentenceTransformer,
        model_name: str,
        *,
        precision: Precision = "float32",
        packed: bool = True,
        encode_batch_size: int = 8,
        model_threads: int = 0,
    ) -> None:
        self.model = model
        self.model_name = model_name
        self.precision = precision
        self.encode_batch_size = encode_batch_size
        self.model_threads = model_threads
        get_dim = getattr(model, "get_embedding_dimension", None) or (
            model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if dim is None:
            raise ValueError(f"model {model_name!r} does not report its embedding dimension")
        self.dimension = int(dim)
        # Tokens per chunk: the model window less the [CLS]/[SEP] it adds.
        self.window = int(model.max_seq_length or 256) - 2
        self._packed = (
            PackedBertEncoder(model, model.truncate_dim, precision)
            if packed and PackedBertEncoder.supports(model)
            else None
        )
        # encode() tokenizes with the model's own tokenizer: one padded call at a time.
        self._encode_lock = threading.Lock()
        # The fast tokenizer keeps padding state and is not thread-safe, and encode() uses
        # the model's own: chunking gets a copy of its own, used by one thread at a time.
        self._chunk_tokenizer = copy.deepcopy(model.tokenizer)
        self._chunk_lock = threading.Lock()

    @property
    def mode(self) -> str:
        return f"{'packed' if self._packed else 'padded'} {self.precision}"

    def prepare_thread(self) -> None:
        set_model_threads(self.model_threads)

    def _token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        with self._chunk_lock:
            encoding = self._chunk_tokenizer(
                list(texts),
                add_special_tokens=False,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,
            )
        return list(encoding["input_ids"])

    def chunk(self, text: str) -> list[str]:
        """Split text into pieces the model sees whole, overlapping a little at the seams."""
        # A token covers at least one character, so short text never needs the tokenizer.
        if len(text) <= self.window:
            return [text]
        with self._chunk_lock:
            encoding = self._chunk_tokenizer(
                text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
            )
        offsets = encoding["offset_mapping"]
        return [
            text[offsets[start][0] : offsets[end - 1][1]]
            for start, end in token_windows(len(offsets), self.window)
        ]

    def encode(self, texts: Sequence[str], first_window_only: Sequence[bool]) -> list[np.ndarray]:
        if self._packed is not None:
            vectors, counts = self._encode_packed(texts, first_window_only)
        else:
            with precision_scope(self.precision):
                vectors, counts = self._encode_padded(texts, first_window_only)
        combined: list[np.ndarray] = []
        at = 0
        for n in counts:
            combined.append(mean_of_windows(vectors[at : at + n]))
            at += n
        return combined

    def _encode_packed(
        self, texts: Sequence[str], first_window_only: Sequence[bool]
    ) -> tuple[np.ndarray, list[int]]:
        assert self._packed is not None
        tokenizer = self._chunk_tokenizer
        cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        sequences: list[list[int]] = []
        counts: list[int] = []
        for ids, first_only in zip(self._token_ids(texts), first_window_only, strict=True):
            spans = (
                [(0, min(len(ids), self.window))]
                if first_only
                else token_windows(len(ids), self.window)
            )
            sequences.extend([cls, *ids[start:end], sep] for start, end in spans)
            counts.append(len(spans))
        return self._packed.encode(sequences), counts

    def _encode_padded(
        self, texts: Sequence[str], first_window_only: Sequence[bool]
    ) -> tuple[np.ndarray, list[int]]:
        pieces = [
            self.chunk(t)[:1] if first_only else self.chunk(t)
            for t, first_only in zip(texts, first_window_only, strict=True)
        ]
        # encode() sorts by length before splitting into model batches, so small model
        # batches keep texts of similar length together and little compute goes to padding.
        with self._encode_lock:
            vectors: Any = self.model.encode(
                [c for p in pieces for c in p],
                batch_size=self.encode_batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32), [len(p) for p in pieces]
