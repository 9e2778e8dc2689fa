"""What the embedder asks of a model: the `Encoder` protocol, and the windowing of long text
that any encoder with a fixed token window shares: which windows a text is embedded from
(`LongText`) and how their vectors make one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from memory_service.embedding.calibration import Calibration

CHUNK_OVERLAP_TOKENS = 32
# Windows embedded for one text at most: a save's cost is bounded whatever its length.
MAX_WINDOWS_PER_TEXT = 32


@dataclass(frozen=True, slots=True)
class LongText:
    """How a text longer than the model's window is represented: the normalized mean of its
    first `windows` windows, or of all of them (0; MAX_WINDOWS_PER_TEXT at most, spread over
    the text). MEMORY_LONG_TEXT names it: "mean" (all), "first" (1), "first:N"."""

    windows: int = 0

    @classmethod
    def parse(cls, value: str) -> LongText:
        name, _, count = value.strip().lower().partition(":")
        if name == "mean" and not count:
            return cls(0)
        if name == "first" and not count:
            return cls(1)
        if name == "first" and count.isdigit() and 1 <= int(count) <= MAX_WINDOWS_PER_TEXT:
            return cls(int(count))
        raise ValueError(f"expected mean, first or first:N (1 <= N <= {MAX_WINDOWS_PER_TEXT})")

    def __str__(self) -> str:
        return {0: "mean", 1: "first"}.get(self.windows, f"first:{self.windows}")

    def spans(self, n: int, window: int) -> list[tuple[int, int]]:
        """Token ranges of the windows an n-token text is embedded from."""
        if self.windows == 0:
            return token_windows(n, window)
        return contiguous_windows(n, window)[: self.windows]


# MEMORY_LONG_TEXT's default, the first window: on LongMemEval dev it ranked the right turn
# higher than the mean of all windows at the same recall, dense and hybrid, and a long text
# costs one window (bench/bench_long_text.py, docs/benchmarks.md).
DEFAULT_LONG_TEXT = LongText(1)


class Encoder(Protocol):
    """Turns texts into unit-length float32 vectors, on the embedder's worker threads.

    The embedder decides which texts go together and when; the encoder decides how: it
    tokenizes, splits long text into windows, runs the model and pools. `encode` may be
    called from several threads at once (one per embedding worker)."""

    @property
    def model_name(self) -> str:
        """The name the collection is keyed by."""
        ...

    @property
    def dimension(self) -> int: ...

    @property
    def calibration(self) -> Calibration:
        """What the model's cosines mean (calibration.py)."""
        ...

    @property
    def mode(self) -> str:
        """How it runs, for the startup log (e.g. "onnxruntime float32")."""
        ...

    def prepare_thread(self) -> None:
        """Called once on each worker thread before its first `encode`."""
        ...

    def encode(self, texts: Sequence[str], first_window_only: Sequence[bool]) -> list[np.ndarray]:
        """One L2-normalized float32 vector per text. A text longer than the model's window
        is the normalized mean of the windows its `LongText` picks or, where
        `first_window_only`, the vector of its first window."""
        ...


def contiguous_windows(n: int, window: int) -> list[tuple[int, int]]:
    """Token ranges of all the windows of an n-token text from its start, overlapping a
    little at the seams."""
    if n <= window:
        return [(0, n)]
    step = window - CHUNK_OVERLAP_TOKENS
    spans = []
    for start in range(0, n, step):
        spans.append((start, min(start + window, n)))
        if start + window >= n:
            break
    return spans


def token_windows(n: int, window: int) -> list[tuple[int, int]]:
    """Token ranges of the windows of an n-token text, overlapping a little at the seams;
    past MAX_WINDOWS_PER_TEXT, that many spread evenly from its start to its end."""
    spans = contiguous_windows(n, window)
    if len(spans) > MAX_WINDOWS_PER_TEXT:
        # Bounded work for the longest texts (50,000 CJK characters are ~220 windows),
        # still drawn from all of the text rather than cut off after its start.
        last = len(spans) - 1
        picked = sorted(
            {round(i * last / (MAX_WINDOWS_PER_TEXT - 1)) for i in range(MAX_WINDOWS_PER_TEXT)}
        )
        spans = [spans[i] for i in picked]
    return spans


def mean_of_windows(window_vectors: np.ndarray) -> np.ndarray:
    """A text's vector from its windows' unit vectors: their mean, normalized again."""
    if len(window_vectors) == 1:
        return window_vectors[0]
    mean = window_vectors.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 0 else mean
