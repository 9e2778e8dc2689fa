"""mem0's side of bench_vs_mem0.py, run by it inside mem0's own venv (mem0 is not a project
dependency): the same saves and searches, in process, with the same bundled model.

Reads a JSON plan on stdin ({model_path, data_dir, concurrency, saves: [[user, text]...],
checkpoints: [3000, 20000], queries: [[user, query]...], top_k, load_after_first}) and
prints one JSON line with, per checkpoint, the saves/s of the saves up to it (null where
they were loaded in bulk) and the search latencies there.
Only the standard library and mem0 are imported: this file runs outside the project.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any


def memory_config(model_path: str, data_dir: str) -> dict[str, Any]:
    return {
        "embedder": {
            "provider": "huggingface",
            "config": {"model": model_path, "embedding_dims": 384},
        },
        "vector_store": {
            "provider": "qdrant",
            "config": {
                "collection_name": "bench",
                "path": os.path.join(data_dir, "qdrant"),
                "embedding_model_dims": 384,
                "on_disk": True,
            },
        },
        # infer=False never calls the LLM; mem0 still builds a client at start.
        "llm": {"provider": "openai", "config": {"api_key": "unused", "model": "unused"}},
        "history_db_path": os.path.join(data_dir, "history.db"),
    }


async def run(plan: dict[str, Any]) -> dict[str, Any]:
    from mem0 import AsyncMemory

    # Concurrent adds, through AsyncMemory or the synchronous Memory on a thread pool,
    # break mem0's local Qdrant here (sqlite3 "no more rows available", "not an error"):
    # plan["concurrency"] is 1 unless asked otherwise.
    memory = AsyncMemory.from_config(memory_config(plan["model_path"], plan["data_dir"]))
    saves = [tuple(s) for s in plan["saves"]]
    queries = [tuple(q) for q in plan["queries"]]
    concurrency = int(plan["concurrency"])
    top_k = int(plan["top_k"])

    async def save(user: str, text: str) -> None:
        await memory.add([{"role": "user", "content": text}], user_id=user, infer=False)

    async def search(user: str, query: str) -> None:
        await memory.search(query, filters={"user_id": user}, top_k=top_k)

    # Warm the model and the store before anything is timed.
    await save("mem0-warmup", "warm up the model and the store")
    await search("mem0-warmup", "warm up")

    async def load(part: list[tuple[str, str]]) -> None:
        """What add(infer=False) stores, with the texts embedded in batches first: the same
        points in mem0's store, minutes sooner than one add at a time."""
        for start in range(0, len(part), 64):
            chunk = part[start : start + 64]
            vectors = memory.embedding_model.embed_batch([text for _, text in chunk], "add")
            for (user, text), vector in zip(chunk, vectors, strict=True):
                metadata = {"user_id": user, "role": "user"}
                await memory._create_memory(text, {text: vector}, metadata)

    results = []
    done = 0
    for n, checkpoint in enumerate(plan["checkpoints"]):
        part = saves[done:checkpoint]
        started = time.perf_counter()
        rate = None
        if n > 0 and plan.get("load_after_first"):
            await load(part)
        else:
            pending = iter(part)

            async def worker() -> None:
                for user, text in pending:  # noqa: B023 - one shared iterator per checkpoint
                    await save(user, text)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            rate = len(part) / (time.perf_counter() - started)
        done = checkpoint
        latencies = []
        for user, query in queries:
            started = time.perf_counter()
            await search(user, query)
            latencies.append(time.perf_counter() - started)
        results.append({"memories": checkpoint, "saves_per_s": rate, "search_s": latencies})
    return {"mem0_version": _version(), "checkpoints": results}


def _version() -> str:
    from importlib.metadata import version

    return version("mem0ai")


def main() -> None:
    plan = json.loads(sys.stdin.read())
    print(json.dumps(asyncio.run(run(plan))))


if __name__ == "__main__":
    main()
