"""Import of a synthetic 20,000-message ChatGPT export through `memory-layer import` into the
real stack, against the model's own batched speed on the same texts.

The export is a zip like ChatGPT's: conversations of 2-30 exchanges, prompts of 5-80 words
(skewed short) and answers of 8-700 words (log-normal, median 110 words: about 200 tokens on
average, as in public chat logs), each message with its own time over the past two years.
`memory-layer up` starts the three services with default settings in a temp dir, and
`memory-layer import` loads the zip; its wall time, parse and count pass included, gives
messages/s. Then GET /export checks that every message was stored once, with the export's
time. The baseline is the service's own encoder (ONNX Runtime, in the service's precision,
on all cores) on the same 20,000 texts in this process in batches of 32, half of them before
the import and half after, while the stack is idle.
Target: import messages/s / baseline texts/s >= 0.8.

    python bench/bench_import.py                           # 20,000 messages
    python bench/bench_import.py --messages 2000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from corpus import DETAILS, SUBJECTS, prompt_texts
from encoders import encode, service_encoder
from service_process import REPO_ROOT, ServiceProcess, free_port, http_ready, service_precision

from memory_service.embedding.onnx_encoder import OnnxEncoder

TARGET = 0.8
CLI = [sys.executable, "-m", "memory_layer_cli"]
ANSWER_SENTENCES = [
    "Here is a step by step approach that should work in most cases.",
    "First, check that {s} is set up the way you expect.",
    "The most common cause is a small configuration mistake.",
    "You can verify this by running the command again with verbose output.",
    "If that does not help, try isolating the problem in a minimal example.",
    "In short, {s} depends mostly on the inputs you give it.",
    "A good rule of thumb is to change one thing at a time and measure.",
    "Keep in mind that the defaults are chosen for the typical case.",
    "This approach trades a little speed for much simpler code.",
    "Let me know if you want a version with more detail or examples.",
    "For example, with 3 items at 12 dollars each the total is 36 dollars.",
    "Another option is to split the work into smaller pieces and review each one.",
    "Most people find the second method easier to maintain over time.",
    "Be careful with edge cases such as empty input or very large values.",
    "The documentation describes this under the section on advanced settings.",
    "Summary: start simple, test early, and only optimise what you measured.",
]


def answer_text(rng: random.Random) -> str:
    words = int(min(700, max(8, rng.lognormvariate(math.log(110), 0.8))))
    subject = rng.choice(SUBJECTS)
    sentences: list[str] = []
    count = 0
    while count < words:
        sentence = rng.choice(ANSWER_SENTENCES).format(s=subject)
        sentence += rng.choice(["", f" ({rng.choice(DETAILS)[:-1].lower()})"])
        sentences.append(sentence)
        count += len(sentence.split())
    return " ".join(" ".join(sentences).split()[:words])


def synthetic_export(path: Path, messages: int, seed: int = 3) -> dict[str, tuple[str, float]]:
    """Write a ChatGPT export zip; returns each message's (text, create_time) by id."""
    rng = random.Random(seed)
    prompts = iter(prompt_texts(messages // 2 + 1, seed=seed))
    start = datetime.now(UTC) - timedelta(days=730)
    step = timedelta(days=720) / max(messages, 1)
    expected: dict[str, tuple[str, float]] = {}
    conversations: list[dict[str, Any]] = []
    n = 0
    while n < messages:
        c = len(conversations)
        exchanges = min(rng.randint(2, 30), (messages - n) // 2 or 1)
        mapping: dict[str, Any] = {"root": {"id": "root", "message": None, "parent": None}}
        parent = "root"
        for e in range(exchanges):
            for role in ("user", "assistant"):
                if n >= messages:
                    break
                node = f"msg-{c}-{e}-{role}"
                text = next(prompts) if role == "user" else answer_text(rng)
                created = (start + step * n).timestamp()
                n += 1
                mapping[parent].setdefault("children", []).append(node)
                mapping[node] = {
                    "id": node,
                    "parent": parent,
                    "children": [],
                    "message": {
                        "id": node,
                        "author": {"role": role},
                        "create_time": created,
                        "content": {"content_type": "text", "parts": [text]},
                        "metadata": {},
                    },
                }
                expected[node] = (text, created)
                parent = node
        conversations.append(
            {
                "id": f"conv-{c}",
                "conversation_id": f"conv-{c}",
                "title": f"Chat {c}",
                "create_time": mapping[mapping["root"]["children"][0]]["message"]["create_time"],
                "current_node": parent,
                "mapping": mapping,
            }
        )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("conversations.json", json.dumps(conversations))
        archive.writestr("chat.html", "<html></html>")
    return expected


class Stack:
    """`memory-layer up` in its own process group on a free port and a temp data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.up = ServiceProcess(
            "memory-layer up",
            [*CLI, "up", "--port", str(self.port), "--data-dir", str(self.data_dir)],
            os.environ,
            log_path=self.data_dir / "up.log",
            new_session=True,
        )

    def __enter__(self) -> Stack:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.up.spawn().wait_ready(http_ready(f"{self.url}/readyz"), timeout=300)
        return self

    def __exit__(self, *exc: object) -> None:
        self.up.stop(timeout=60)

    def token(self, user: str) -> str:
        out = subprocess.run(
            [*CLI, "token", "--user", user, "--data-dir", str(self.data_dir)],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()


def exported(url: str, token: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.stream("GET", f"{url}/export", headers=headers, timeout=600) as response:
        response.raise_for_status()
        return [json.loads(line) for line in response.iter_lines() if line.strip()]


def encode_seconds(encoder: OnnxEncoder, texts: list[str]) -> float:
    started = time.perf_counter()
    encode(encoder, texts)
    return time.perf_counter() - started


def main() -> None:
    print(f"embedding precision: {service_precision()}", flush=True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-import-"))
    try:
        export = tmp / "chatgpt-export.zip"
        expected = synthetic_export(export, args.messages)
        texts = [text for text, _ in expected.values()]
        encoder = service_encoder()
        encode(encoder, texts[:256])
        # Half the baseline before the import and half after, so that load from other work
        # on a shared machine weighs on both sides alike.
        baseline_seconds = encode_seconds(encoder, texts[::2])
        words = sorted(len(t.split()) for t in texts)
        print(
            f"export: {len(expected):,} messages, {export.stat().st_size / 1e6:.1f} MB zipped, "
            f"{words[0]}-{words[-1]} words (median {words[len(words) // 2]})"
        )
        with Stack(tmp / "data") as stack:
            print(f"stack up at {stack.url}")
            started = time.perf_counter()
            run = subprocess.run(
                [*CLI, "import", str(export), "--user", "bench", "--url", stack.url,
                 "--data-dir", str(stack.data_dir)],
                cwd=REPO_ROOT, capture_output=True, text=True,
                env={**os.environ, "COLUMNS": "120"},
            )  # fmt: skip
            seconds = time.perf_counter() - started
            summary = [line for line in run.stderr.splitlines() if "Imported" in line]
            print(summary[-1] if summary else run.stderr[-2000:])
            if run.returncode != 0:
                raise SystemExit(f"import failed ({run.returncode})")
            memories = exported(stack.url, stack.token("bench"))
            baseline_seconds += encode_seconds(encoder, texts[1::2])
            baseline = len(texts) / baseline_seconds
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    by_message = {m["message_id"]: m for m in memories}
    once = len(memories) == len(by_message) == len(expected) and by_message.keys() == set(expected)
    timed = sum(
        abs(datetime.fromisoformat(m["created_at"]).timestamp() - expected[mid][1]) < 1e-3
        for mid, m in by_message.items()
        if mid in expected
    )
    rate = len(expected) / seconds
    ratio = rate / baseline
    target = TARGET
    print()
    print(
        f"import: {len(expected):,} messages in {seconds:.1f} s = {rate:.1f} messages/s "
        "(memory-layer import, wall time)"
    )
    print(
        f"baseline: the service's encoder (ONNX Runtime, {service_precision()}) in this "
        f"process, batches of 32, on the same texts: {baseline:.1f} texts/s"
    )
    print(
        f"stored: {len(memories):,} memories, {len(by_message):,} distinct message ids, "
        f"each once: {once}; with the export's own time: {timed:,}"
    )
    met = ratio >= target and once and timed == len(expected)
    print(f"ratio {ratio:.2f} (target >= {target}) -> {'MET' if met else 'NOT MET'}")


if __name__ == "__main__":
    main()
