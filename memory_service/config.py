"""Settings of the memory service, read from MEMORY_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Limits a caller can rely on; the gateway enforces the same numbers.
MAX_TEXT_CHARS = 50_000
MAX_TOP_K = 50
MAX_PAGE_SIZE = 200
MAX_METADATA_ENTRIES = 32


class MemorySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEMORY_", extra="ignore", populate_by_name=True)

    host: str = "0.0.0.0"
    port: int = 50051
    # Prometheus metrics on their own port; 0 picks a free one, -1 turns them off.
    metrics_port: int = 9101

    # Unset: the embedded Qdrant engine persisted under data_dir.
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    data_dir: Path = Path("./data/memory")
    collection_prefix: str = "memories"
    # Copies of each shard when the service creates the collection on a Qdrant cluster.
    qdrant_replication_factor: int = Field(default=1, ge=1)

    # A sentence-transformers model directory or name; unset: the bundled all-MiniLM-L6-v2.
    model: str | None = None
    # Keep only the first N dimensions of each embedding (Matryoshka-style); unset: all.
    embedding_dim: int | None = Field(default=None, ge=8)
    embed_batch_size: int = Field(default=32, ge=1, le=512)
    embed_batch_wait_ms: float = Field(default=4.0, ge=0, le=1000)
    # BERT models with mean pooling (the bundled one) run packed: compute goes to real tokens
    # only. false, or any other model: sentence-transformers' padded encode().
    embed_packed: bool = True
    # Padded encode() only: texts per forward pass within a coalesced batch.
    embed_encode_batch_size: int = Field(default=8, ge=1, le=512)
    # bfloat16 matrix products run ~2.5x faster where the CPU has them natively (AVX512-BF16,
    # AMX) and give vectors within 1e-4 cosine of float32; auto picks it there.
    embed_precision: Literal["auto", "float32", "bfloat16"] = "auto"
    # Batches embedded at once, each on torch_threads / embed_workers threads; 0: one worker
    # per thread.
    embed_workers: int = Field(default=0, ge=0, le=64)
    # Threads for the model; 0: torch's default, which counts the node's cores, not the
    # container's CPU limit.
    torch_threads: int = Field(default=0, ge=0)

    service_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MEMORY_LAYER_SERVICE_TOKEN", "MEMORY_SERVICE_TOKEN"),
    )

    # Graceful shutdown: how long in-flight RPCs get to finish after SIGTERM.
    drain_seconds: float = Field(default=10.0, ge=0)
    # Servers close connections after this age so clients rebalance onto new pods.
    max_connection_age_seconds: float = Field(default=300.0, gt=0)
    log_level: str = "INFO"
