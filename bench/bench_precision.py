"""int8 against float32 embedding, same run: encode speed on chat-length and
LongMemEval-length texts, vectors' cosine to float32, and dense-only recall on LongMemEval dev.

Speed: texts/s of the service's encoder (one session, batches of 32, one call per core at
once) in each precision, alternated three times on the same texts; the ratio of the medians.
Chat-length: the chat corpus of the benches (corpus.py prompts); LongMemEval-length: 640
turns drawn from LongMemEval dev (~990 characters on average).
Recall: for the first `--questions` questions (the same each run), every turn of the
question's haystack embedded, the question embedded from its first window, the 10 nearest
turns by cosine; recall@10 is the share of evidence turns among them.
Target: int8/float32 texts/s >= 1.6 on both; recall@10 within 0.005.

    python bench/bench_precision.py
    python bench/bench_precision.py --questions 60
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import numpy as np
from corpus import prompt_texts
from encoders import encode

from memory_service.embedding.model_dir import open_model_dir
from memory_service.embedding.onnx_encoder import OnnxEncoder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "longmemeval-dev"
PRECISIONS = ("float32", "int8")


def rate(encoder: OnnxEncoder, texts: list[str]) -> float:
    started = time.perf_counter()
    encode(encoder, texts)
    return len(texts) / (time.perf_counter() - started)


def recall(encoder: OnnxEncoder, data: dict, questions: int, k: int = 10) -> float:
    conversations = {c["user"]: c for c in data["conversations"]}
    found = wanted = 0
    for question in data["questions"][:questions]:
        turns = conversations[question["user"]]["turns"]
        vectors = encode(encoder, [t["text"] for t in turns])
        (query,) = encoder.encode([question["q"]], [True])
        top = np.argsort(-(vectors @ query))[:k]
        ids = {turns[i]["id"] for i in top}
        found += sum(e in ids for e in question["evidence"])
        wanted += len(question["evidence"])
    return found / wanted


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--questions", type=int, default=12, help="LongMemEval questions for the recall rows"
    )
    args = parser.parse_args()
    if args.questions < 1:
        parser.error("--questions must be at least 1")
    data = json.loads((DATA / "longmemeval-dev.json").read_text())
    turns = [t["text"] for c in data["conversations"] for t in c["turns"]]
    random.Random(7).shuffle(turns)
    long_texts = turns[:640]
    chat = prompt_texts(640)
    model = open_model_dir(None)
    encoders = {p: OnnxEncoder(model, model_threads=1, precision=p) for p in PRECISIONS}
    for p, e in encoders.items():
        print(f"{p}: {e.mode}")
    for name, texts in (("chat", chat), ("longmemeval", long_texts)):
        chars = sum(map(len, texts)) / len(texts)
        rates: dict[str, list[float]] = {p: [] for p in PRECISIONS}
        for _ in range(3):
            for p in PRECISIONS:
                rates[p].append(rate(encoders[p], texts))
        medians = {p: statistics.median(r) for p, r in rates.items()}
        print(
            f"{name} ({chars:.0f} chars avg): float32 {medians['float32']:.1f} texts/s, "
            f"int8 {medians['int8']:.1f} texts/s, int8/float32 "
            f"{medians['int8'] / medians['float32']:.2f}x"
        )
    sample = long_texts[:200] + chat[:200]
    f32 = encode(encoders["float32"], sample)
    i8 = encode(encoders["int8"], sample)
    cosines = (f32 * i8).sum(axis=1)
    print(
        f"int8 vs float32 cosine on 400 texts: mean {cosines.mean():.4f}, worst {cosines.min():.4f}"
    )
    for p in PRECISIONS:
        value = recall(encoders[p], data, args.questions)
        print(
            f"{p}: dense-only recall@10 on {args.questions} LongMemEval dev questions {value:.4f}"
        )


if __name__ == "__main__":
    main()
