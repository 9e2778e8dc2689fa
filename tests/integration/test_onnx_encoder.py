# ruff: noqa: RUF001 (full-width punctuation belongs in the CJK texts)
"""The service's encoder (ONNX Runtime) with the real bundled model against sentence-transformers
in float32, the reference it replaces: the same vectors on a fixed corpus, long text as the
mean of its windows, queries from their first window, and the same vectors however texts are
grouped into model calls or spread over threads."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from memory_service.embedding.encoder import (
    CHUNK_OVERLAP_TOKENS,
    MAX_WINDOWS_PER_TEXT,
    LongText,
    mean_of_windows,
    token_windows,
)
from memory_service.embedding.graph import Precision, bert_graph
from memory_service.embedding.model_dir import bundled_model_path, open_model_dir
from memory_service.embedding.onnx_encoder import OnnxEncoder, length_groups, open_session
from memory_service.embedding.scheduler import Embedder

pytestmark = pytest.mark.slow

PARITY_COSINE = 0.9999

_CHAT = [
    "How do I rotate a JWT signing key without logging every user out?",
    "My daughter's piano recital is on the 14th at 6pm, remind me to leave work early.",
    "I'm allergic to penicillin and shellfish; keep that in mind for any recipe ideas.",
    "We decided to move the staging database to the eu-west region after the outage.",
    "Prefer answers in British English, with metric units and 24-hour times.",
    "ERR_7731 again when the worker restarts; the queue keeps the message but the ack is lost "
    "and the consumer sees it twice, which breaks the idempotency check in the billing job.",
    "The flat in Lisbon has a 30-day notice period and the landlord wants it in writing.",
    "Summarise the meeting: budget approved, hiring frozen until Q3, offsite in Porto.",
    "I run on Arch with Wayland and sway; clipboard tools must work without X11.",
    "Book club picks this year: Middlemarch, The Dispossessed, and Piranesi.",
    "Can you explain why my sourdough starter smells like nail polish remover?",
    "Remember that Sam prefers tea, never coffee, and is vegetarian.",
    "The car's MOT is due in March and the insurance renews on April 2nd.",
    "Draft a polite reply declining the conference invitation for next week.",
]
_UNICODE = [
    "Ünïcödé, emoji 🙂 and CJK 漢字 in one prompt",
    "我明天早上九点要去北京开会，请提醒我带上护照。",
    "東京の天気は明日雨の予報なので、傘を持って行きます。",
    "서울에서 부산까지 KTX로 두 시간 반 걸려요.",
    "Привет! Я переезжаю в Берлин в следующем месяце.",
    "مرحبا، أريد حجز طاولة لشخصين مساء الجمعة",
    "🎉🎂🥳 birthday party at 7 🍕🍺",
    "naïve café résumé — coöperate façade ½ ≥ ≠ ∑",
    "Zürich → München: 3h 30m 🚆",
    "  leading and trailing spaces  ",
]
_CODE = [
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)",
    "SELECT user_id, count(*) FROM memories GROUP BY user_id HAVING count(*) > 100;",
    "const add = (a, b) => a + b; export default add;",
    'curl -X POST http://localhost:8000/v1/memories -d \'{"text": "hi"}\'',
    'fn main() { println!("{}", std::env::args().count()); }',
    '<div class="card"><span>{{ user.name }}</span></div>',
    "git rebase -i HEAD~3 && git push --force-with-lease",
    "kubectl -n memory-layer rollout restart deployment/memory-service",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "docker run --rm -p 6333:6333 -v $PWD/qdrant:/qdrant/storage qdrant/qdrant",
]
_SHORT = ["hi", "ok", "thanks!", "yes", "Berlin", "?", "a", "coffee, black", "42", "noted"]
# Near the model window (254 tokens of text): the whole text still fits one window.
_NEAR_WINDOW = [
    " ".join(f"item{i}" for i in range(106)),
    "the cat sat on a mat and looked at the dog while it rained outside " * 16,
    "会议纪要：" + "预算已经批准，招聘冻结到第三季度。" * 14,
    "import os\n" + "print(os.getcwd())\n" * 24,
    "Ünïcödé 🙂 " * 120,
    "Meeting notes. " + "We agreed to ship on Friday, then review the metrics on Monday. " * 16,
]
CORPUS = _SHORT + _CHAT + _UNICODE + _CODE + _NEAR_WINDOW


@pytest.fixture(scope="module")
def encoder() -> OnnxEncoder:
    """The encoder in float32, the precision whose vectors are sentence-transformers'."""
    return OnnxEncoder(open_model_dir(None), precision="float32")


@pytest.fixture(scope="module")
def int8() -> OnnxEncoder:
    """The encoder as the service runs it by default."""
    return OnnxEncoder(open_model_dir(None))


@pytest.fixture(scope="module")
def reference() -> SentenceTransformer:
    """sentence-transformers in float32 on the same model directory."""
    return SentenceTransformer(str(bundled_model_path()), device="cpu")


def window_vectors(model: SentenceTransformer, sequences: Sequence[Sequence[int]]) -> np.ndarray:
    """sentence-transformers' own modules on exactly these token ids: the reference for text
    longer than its window, which its encode() would cut off."""
    vectors = []
    with torch.inference_mode():
        for ids in sequences:
            features = {
                "input_ids": torch.tensor([list(ids)]),
                "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
            }
            vectors.append(model(features)["sentence_embedding"][0].numpy())
    return np.array(vectors)


def unit_mean(vectors: np.ndarray) -> np.ndarray:
    mean = vectors.mean(axis=0)
    return mean / np.linalg.norm(mean)


def test_the_corpus_covers_short_text_up_to_the_model_window(encoder: OnnxEncoder) -> None:
    assert len(CORPUS) >= 50
    lengths = [len(ids) for ids in encoder.token_ids(CORPUS)]
    assert min(lengths) == 1
    assert max(lengths) <= encoder.window == 254
    assert sum(length >= 240 for length in lengths) >= 4


async def test_vectors_match_sentence_transformers(
    encoder: OnnxEncoder, reference: SentenceTransformer
) -> None:
    embedder = Embedder(encoder, batch_size=32, max_wait_ms=5)
    try:
        ours = np.array(await asyncio.gather(*(embedder.embed(t) for t in CORPUS)))
    finally:
        await embedder.stop()
    theirs = reference.encode(CORPUS, normalize_embeddings=True, convert_to_numpy=True)
    assert ours.shape == (len(CORPUS), 384)
    cosines = (ours * theirs).sum(axis=1)
    worst = int(np.argmin(cosines))
    assert cosines.min() >= PARITY_COSINE, (CORPUS[worst], float(cosines[worst]))
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_int8_vectors_stay_near_float32(encoder: OnnxEncoder, int8: OnnxEncoder) -> None:
    """The default precision: int8 weights in the dense layers, within a small angle of the
    float32 vectors on every text of the corpus."""
    assert int8.precision == "int8"
    flags = [False] * len(CORPUS)
    cosines = (np.array(int8.encode(CORPUS, flags)) * np.array(encoder.encode(CORPUS, flags))).sum(
        1
    )
    worst = int(np.argmin(cosines))
    assert cosines.mean() >= 0.99
    assert cosines.min() >= 0.97, (CORPUS[worst], float(cosines[worst]))


def with_long_text(encoder: OnnxEncoder, long_text: str) -> OnnxEncoder:
    """The encoder (its session shared) representing long text as MEMORY_LONG_TEXT says."""
    other = copy.copy(encoder)
    other.long_text = LongText.parse(long_text)
    return other


def test_a_long_text_is_the_mean_of_its_windows(
    encoder: OnnxEncoder, reference: SentenceTransformer
) -> None:
    text = " ".join(_CHAT) * 8 + " Finally: the wifi password is under the router."
    encoder = with_long_text(encoder, "mean")
    windows = encoder.windows(text)
    assert len(windows) > 2
    assert all(len(w) <= 256 for w in windows)
    # Consecutive windows overlap, so no token falls between two of them.
    assert windows[0][-1 - CHUNK_OVERLAP_TOKENS : -1] == windows[1][1 : 1 + CHUNK_OVERLAP_TOKENS]
    ids = encoder.token_ids([text])[0]
    assert windows[-1][-2] == ids[-1]

    (vector,) = encoder.encode([text], [False])
    expected = unit_mean(window_vectors(reference, windows))
    assert float(vector @ expected) >= PARITY_COSINE


@pytest.mark.parametrize("long_text", ["first", "first:2", "first:3"])
def test_a_long_text_is_embedded_from_its_first_windows(
    encoder: OnnxEncoder, long_text: str
) -> None:
    """first: the vector of the first window alone; first:N the normalized mean of the
    first N windows' vectors."""
    text = " ".join(_CHAT) * 8 + " Finally: the wifi password is under the router."
    every = with_long_text(encoder, "mean").windows(text)
    assert len(every) > 3
    chosen = with_long_text(encoder, long_text)
    count = LongText.parse(long_text).windows
    assert chosen.windows(text) == every[:count]
    (vector,) = chosen.encode([text], [False])
    expected = mean_of_windows(encoder.encode_sequences(every[:count]))
    assert np.allclose(vector, expected, atol=1e-5)
    assert float(np.linalg.norm(vector)) == pytest.approx(1.0, abs=1e-5)
    (whole,) = with_long_text(encoder, "mean").encode([text], [False])
    assert float(vector @ whole) < 0.999
    # A text within one window is the same whatever the setting.
    assert np.array_equal(
        chosen.encode(_CHAT, [False] * len(_CHAT)), encoder.encode(_CHAT, [False] * len(_CHAT))
    )


def test_a_query_is_embedded_from_its_first_window_only(
    encoder: OnnxEncoder, reference: SentenceTransformer
) -> None:
    first = " ".join(f"alpha{i}" for i in range(120))
    text = first + " " + " ".join(f"omega{i}" for i in range(900))
    (query,) = encoder.encode([text], [True])
    (whole,) = with_long_text(encoder, "mean").encode([text], [False])
    assert encoder.windows(text, first_window_only=True) == encoder.windows(text)[:1]
    (first_window,) = window_vectors(reference, encoder.windows(text)[:1])
    assert float(query @ first_window) >= PARITY_COSINE
    assert float(query @ whole) < 0.99
    # Short text is its own first window.
    assert np.array_equal(*encoder.encode(["short text"] * 2, [True, False]))


def test_the_longest_texts_are_embedded_from_windows_spread_over_all_of_them(
    encoder: OnnxEncoder,
) -> None:
    text = " ".join(f"w{i}" for i in range(60_000))
    encoder = with_long_text(encoder, "mean")
    ids = encoder.token_ids([text])[0]
    windows = encoder.windows(text)
    assert len(windows) == MAX_WINDOWS_PER_TEXT
    spans = token_windows(len(ids), encoder.window)
    assert windows == [[101, *ids[start:end], 102] for start, end in spans]
    assert spans[0][0] == 0 and spans[-1][1] == len(ids)


def test_grouping_by_length_gives_the_vectors_of_one_at_a_time(encoder: OnnxEncoder) -> None:
    sequences = [w for text in CORPUS for w in encoder.windows(text)]
    together = encoder.encode_sequences(sequences)
    alone = np.array([encoder.encode_sequences([s])[0] for s in sequences])
    assert np.abs(together - alone).max() < 1e-5
    # Sequences did share model calls.
    assert len(length_groups(sorted(len(s) for s in sequences))) < len(sequences)


def test_threads_sharing_the_session_get_the_vectors_of_one_thread(encoder: OnnxEncoder) -> None:
    batches = [CORPUS[i::4] for i in range(4)]
    alone = [np.array(encoder.encode(b, [False] * len(b))) for b in batches]
    assert alone[0].dtype == np.float32
    results: dict[int, list[np.ndarray]] = {}
    start = threading.Barrier(len(batches) * 2)

    def run(i: int) -> None:
        start.wait()
        for _ in range(3):
            batch = batches[i % len(batches)]
            results.setdefault(i, []).append(np.array(encoder.encode(batch, [False] * len(batch))))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(batches) * 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, runs in results.items():
        for vectors in runs:
            assert np.array_equal(vectors, alone[i % len(batches)])
    assert len(results) == len(threads)


async def test_parallel_workers_give_the_vectors_of_sentence_transformers(
    reference: SentenceTransformer,
) -> None:
    shared = OnnxEncoder(open_model_dir(None), model_threads=1, precision="float32")
    embedder = Embedder(shared, batch_size=8, max_wait_ms=2, workers=2)
    assert embedder.mode.startswith("onnxruntime float32, 1 thread(s) per call, cosine ")
    assert embedder.mode.endswith(", 2 workers")
    texts = [f"note {i}: " + "about the garden " * (i % 9) for i in range(48)]
    try:
        vectors = np.array(await asyncio.gather(*(embedder.embed(t) for t in texts)))
    finally:
        await embedder.stop()
    theirs = reference.encode(texts, normalize_embeddings=True)
    assert (vectors * theirs).sum(axis=1).min() >= PARITY_COSINE


def test_a_truncated_dimension_matches_sentence_transformers() -> None:
    encoder = OnnxEncoder(open_model_dir(None), dimension=128, precision="float32")
    assert encoder.dimension == 128
    texts = CORPUS[10:20]
    ours = np.array(encoder.encode(texts, [False] * len(texts)))
    reference = SentenceTransformer(str(bundled_model_path()), device="cpu", truncate_dim=128)
    theirs = reference.encode(texts, normalize_embeddings=True)
    assert ours.shape == (10, 128)
    assert (ours * theirs).sum(axis=1).min() >= PARITY_COSINE


def test_the_model_is_built_to_the_same_bytes_every_time() -> None:
    model = open_model_dir(None)
    first = bert_graph(model)
    again = bert_graph(model)
    assert again.model_bytes == first.model_bytes
    assert again.weights.keys() == first.weights.keys()
    assert all(np.array_equal(again.weights[k], v) for k, v in first.weights.items())
    assert bert_graph(model, 128).model_bytes != first.model_bytes
    int8 = bert_graph(model, precision="int8")
    assert bert_graph(model, precision="int8").model_bytes == int8.model_bytes
    assert all(
        np.array_equal(bert_graph(model, precision="int8").weights[k], v)
        for k, v in int8.weights.items()
    )


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_the_session_keeps_no_hold_on_the_weights_it_was_handed(precision: Precision) -> None:
    """The encoder drops the weight arrays once its session is built: the session must have
    copied them. Overwritten afterwards, they change nothing."""
    graph = bert_graph(open_model_dir(None), precision=precision)
    session = open_session(graph, model_threads=1)
    ids = np.array([[101, 1996, 4937, 2938, 2006, 1996, 13523, 102]])
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    (before,) = session.run(None, feed)
    for array in graph.weights.values():
        array.fill(0)
    (after,) = session.run(None, feed)
    assert np.array_equal(before, after)
    assert float(np.abs(before).sum()) > 0
