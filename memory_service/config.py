"""Settings of the memory service, read from MEMORY_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from service_kit.identity import Peer
from service_kit.settings import ServiceSettings, secret


class MemorySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MEMORY_", extra="ignore", populate_by_name=True)

    port: int = 50051
    metrics_port: int = 9101

    # Each caller's own service token. Only the gateway's may act for an admin.
    gateway_token: SecretStr | None = None
    chat_token: SecretStr | None = None

    # Unset: the embedded Qdrant engine persisted under data_dir.
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    # Longest wait for one store operation on the Qdrant server before it counts as down.
    # Well under the gateway's deadline (10 s), so that a read retried on UNAVAILABLE
    # three times still ends as a 503 the client can retry, not a 504.
    qdrant_timeout_seconds: float = Field(default=3.0, gt=0, le=300)
    data_dir: Path = Path("./data/memory")
    # Embedded store: shards a new store is split into (users spread by a hash of their
    # id); an existing store keeps its own.
    embedded_shards: int = Field(default=8, ge=1, le=256)
    collection_prefix: str = "memories"
    # Copies of each shard when the service creates the collection on a Qdrant cluster.
    qdrant_replication_factor: int = Field(default=1, ge=1)
    # Embedded store: how often the service checks whether to merge segments and drop
    # deleted points (0: never), the share of points deleted since the last run that
    # makes a run worth it, and the points in the appendable segment that make one worth
    # it (the engine keeps that segment's indexes in memory until it is sealed).
    maintenance_interval_seconds: float = Field(default=600.0, ge=0)
    maintenance_min_deleted_share: float = Field(default=0.02, ge=0, le=1)
    maintenance_min_appendable_points: int = Field(default=50_000, ge=1)

    # A sentence-transformers model directory or name; unset: the bundled all-MiniLM-L6-v2.
    model: str | None = None
    # Keep only the first N dimensions of each embedding (Matryoshka-style); unset: all.
    embedding_dim: int | None = Field(default=None, ge=8)
    embed_batch_size: int = Field(default=32, ge=1, le=512)
    embed_batch_wait_ms: float = Field(default=4.0, ge=0, le=1000)
    # While another batch is being embedded: how long a batch waits for more texts.
    embed_busy_wait_ms: float = Field(default=10.0, ge=0, le=1000)
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
    # Workers of a lane (bulk or interactive, see embedder.py) one user's batches may hold
    # at once; 0: all of them.
    embed_workers_per_user: int = Field(default=0, ge=0, le=64)
    # Threads for the model; 0: torch's default, which counts the node's cores, not the
    # container's CPU limit.
    torch_threads: int = Field(default=0, ge=0)

    # Memories scoring below this are never injected into a prompt (/context, chat). Scores
    # are calibrated (README, "Scores"): 0.3 needs a best match of cosine 0.30. Prompts about
    # none of a user's memories were measured at cosine <= 0.21 (score <= 0.12), prompts
    # about one of them at >= 0.36 (score >= 0.42).
    relevance_floor: float = Field(default=0.3, ge=0, le=1)

    def caller_tokens(self) -> dict[str, Peer]:
        return {
            secret(self.gateway_token): Peer("gateway", may_grant_admin=True),
            secret(self.chat_token): Peer("chat_service"),
        }
