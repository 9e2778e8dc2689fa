"""Settings of the memory service, read from MEMORY_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from memory_service.embedding.encoder import LongText
from service_kit.identity import Peer
from service_kit.settings import ServiceSettings, secret


class MemorySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MEMORY_")

    port: int = 50051
    """gRPC listen port."""
    metrics_port: int = 9101
    """Port of the Prometheus metrics endpoint; 0 picks a free one, -1 turns metrics off."""

    gateway_token: SecretStr | None = None
    """The token the gateway presents here. Only the gateway may act for an admin."""
    chat_token: SecretStr | None = None
    """The token chat_service presents here; accepted without the admin role (no stats, no other
    user's memories).
    """

    qdrant_url: str | None = None
    """URL of a Qdrant server or cluster. Unset: the embedded Qdrant engine, persisted under
    MEMORY_DATA_DIR.
    """
    qdrant_api_key: SecretStr | None = None
    """API key of the Qdrant server."""
    qdrant_timeout_seconds: float = Field(default=3.0, gt=0, le=300)
    """Longest wait for one operation on the Qdrant server before it counts as down. Well under
    the gateway's deadline (10 s), so that a read retried three times on UNAVAILABLE still
    ends as a 503 the client can retry, not a 504.
    """
    id_key: SecretStr | None = None
    """Key of the ids derived from a memory's text (saves without a message id), so that
    nobody else can tell from an id which text it stands for. Unset: the embedded store keeps
    a random one in MEMORY_DATA_DIR (id.key); with MEMORY_QDRANT_URL set it is required, the
    same on every replica (e.g. openssl rand -hex 32). Changing it makes the same text saved
    again a memory of its own.
    """
    data_dir: Path = Path("./data/memory")
    """Embedded store: the directory it is persisted in. Its write-ahead logs are sparse files;
    back it up with `memory-layer export` or a copy that keeps sparse files
    (docs/operations/deploy.md). It remembers the model and dimension it was built with, and
    one process at a time may open it.
    """
    embedded_shards: int = Field(default=8, ge=1, le=256)
    """Embedded store: shards a new store is split into (users spread by a hash of their id); an
    existing store keeps its own.
    """
    collection_prefix: str = "memories"
    """Start of the collection's name; the rest names the model and dimension."""
    qdrant_replication_factor: int = Field(default=1, ge=1)
    """Copies of each shard when the service creates the collection on a Qdrant cluster."""
    maintenance_interval_seconds: float = Field(default=600.0, ge=0)
    """Embedded store: how often the service checks whether to merge segments and drop deleted
    points (0: never).
    """
    maintenance_min_deleted_share: float = Field(default=0.02, ge=0, le=1)
    """Embedded store: the share of points deleted since the last maintenance run that makes a
    run worth it.
    """
    maintenance_min_appendable_points: int = Field(default=50_000, ge=1)
    """Embedded store: points in the appendable segment that make a maintenance run worth it
    (the engine keeps that segment's indexes in memory until it is sealed).
    """

    model: str | None = None
    """A sentence-transformers model directory: a BERT encoder with mean pooling, with
    config.json, model.safetensors and tokenizer.json (the service says what is missing or
    unsupported). Unset: the bundled all-MiniLM-L6-v2. Changing it changes the collection
    name; memories are not re-embedded.
    """
    embedding_dim: int | None = Field(default=None, ge=8)
    """Keep only the first N dimensions of each embedding (Matryoshka-style); unset: all."""
    embed_precision: Literal["int8", "float32"] = "int8"
    """int8: the model's dense layers run on int8 weights quantized at startup (about 2x the
    texts/s of float32 on long texts, more on short ones; vectors at cosine >= 0.97 to
    float32's); float32: the model's own weights, the vectors of sentence-transformers.
    Stored vectors are kept when it changes.
    """
    long_text: str = "first"
    """How a memory longer than the model's window (256 tokens, ~1,000 characters of English)
    is embedded for search: first, from its first window (as a query is); first:N, the mean
    of its first N windows; mean, the mean of all its windows (32 at most, spread over the
    text). BM25 always sees the whole text. first ranked LongMemEval's right turns higher
    than mean, at a recall as high or higher, and embeds long texts 1.8x as fast
    (docs/benchmarks.md). Stored vectors are kept when it changes.
    """
    embed_batch_size: int = Field(default=32, ge=1, le=512)
    """Most texts embedded in one coalesced batch."""
    embed_batch_wait_ms: float = Field(default=4.0, ge=0, le=1000)
    """How long a batch waits for more texts when the model is idle."""
    embed_busy_wait_ms: float = Field(default=10.0, ge=0, le=1000)
    """While another batch is being embedded: how long the next batch waits for the texts on
    their way (a query never waits): a model call costs a fixed part whatever its size, so
    waiting for texts on their way beats embedding one alone.
    """
    embed_workers: int = Field(default=0, ge=0, le=64)
    """Batches embedded at once, each on MEMORY_EMBED_THREADS / MEMORY_EMBED_WORKERS threads; 0:
    one worker per thread.
    """
    embed_workers_per_user: int = Field(default=0, ge=0, le=64)
    """Workers of a lane (bulk or interactive) one user's batches may hold at once; 0: all of
    them.
    """
    embed_threads: int = Field(
        default=0,
        ge=0,
        validation_alias=AliasChoices("MEMORY_EMBED_THREADS", "MEMORY_TORCH_THREADS"),
    )
    """Threads for the model (MEMORY_TORCH_THREADS is read too, its former name); 0: the cores
    this process may run on, which in a container counts the node's cores, not its CPU limit:
    set it to that limit.
    """

    relevance_floor: float = Field(default=0.3, ge=0, le=1)
    """Memories scoring below this are never injected into a prompt (/context, chat). Scores are
    calibrated (docs/api/http.md): 0.3 needs a best match of cosine 0.30. Prompts about none
    of a user's memories were measured at score <= 0.12, prompts about one of them at >=
    0.42. /search applies it only when asked with min_score.
    """

    @field_validator("long_text")
    @classmethod
    def _long_text(cls, value: str) -> str:
        return str(LongText.parse(value))

    @model_validator(mode="after")
    def _id_key_for_a_shared_store(self) -> MemorySettings:
        if self.qdrant_url and not secret(self.id_key):
            raise ValueError(
                "MEMORY_ID_KEY must be set (the same on every replica) when MEMORY_QDRANT_URL is"
            )
        return self

    def caller_tokens(self) -> dict[str, Peer]:
        return {
            secret(self.gateway_token): Peer("gateway", may_grant_admin=True),
            secret(self.chat_token): Peer("chat_service"),
        }
