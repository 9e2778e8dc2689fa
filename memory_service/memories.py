"""What the memory service does: validate, embed, store and find one user's memories."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import qdrant_edge

from memory_service import metrics, timeframes
from memory_service.embedding.scheduler import Embedder
from memory_service.group_commit import GroupCommit
from memory_service.models import (
    Memory,
    MemoryKind,
    MemoryPoint,
    ScoredMemory,
    SearchFilters,
    SearchMode,
    SparseVector,
    memory_point_id,
    new_memory_id,
    normalised_text,
)
from memory_service.search import search_memories
from memory_service.store import MemoryStore, ownership, paging
from memory_service.store.interface import Range
from service_kit.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError
from service_kit.identity import Identity
from service_kit.limits import (
    MAX_FIELD_CHARS,
    MAX_METADATA_ENTRIES,
    MAX_PAGE_SIZE,
    MAX_QUERY_CHARS,
    MAX_TEXT_CHARS,
    MAX_TOP_K,
)
from service_kit.time_zones import time_zone as named_zone

DEFAULT_PAGE_SIZE = 50
# One user's deletes and edits run this many at a time, however many arrive at once: a
# burst from one user (a client deleting thousands of memories concurrently) then takes a
# bounded share of the cores, and everyone else's searches keep theirs.
WRITES_PER_USER = 2


@dataclass(frozen=True, slots=True)
class NewMemory:
    text: str
    kind: MemoryKind = MemoryKind.PROMPT
    provider: str = ""
    conversation_id: str = ""
    message_id: str = ""
    url: str = ""
    metadata: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class StoreStats:
    total_memories: int
    users: int
    collection: str
    model: str
    dimension: int
    backend: str


@dataclass(frozen=True, slots=True)
class UserStats:
    total: int
    # (provider, count), most memories first.
    providers: list[tuple[str, int]]
    # Memories created in each span between consecutive bounds.
    span_counts: list[int]


# Most spans one stats request counts (a year of days, with room for a leap year); most
# providers it lists.
MAX_STATS_SPANS = 366
MAX_STATS_PROVIDERS = 100


@contextmanager
def _timed(operation: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        metrics.STORE_SECONDS.labels(operation).observe(time.perf_counter() - started)


def _check_text(text: str, what: str = "text") -> str:
    if not text or not text.strip():
        raise InvalidArgumentError(f"{what} must not be empty")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidArgumentError(
            f"{what} is {len(text)} characters; the limit is {MAX_TEXT_CHARS}"
        )
    return text


def _check_field(value: str, name: str) -> str:
    if len(value) > MAX_FIELD_CHARS:
        raise InvalidArgumentError(f"{name} is longer than {MAX_FIELD_CHARS} characters")
    return value


def _check_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    metadata = dict(metadata or {})
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise InvalidArgumentError(f"metadata has more than {MAX_METADATA_ENTRIES} entries")
    for key, value in metadata.items():
        _check_field(key, "a metadata key")
        _check_field(value, f"metadata[{key!r}]")
    return metadata


@dataclass
class _UserSlots:
    semaphore: asyncio.Semaphore
    # Calls that hold or wait for the semaphore.
    users: int = 0


class PerUserLimit:
    """At most `limit` holders at a time for each user; a user nobody holds for costs
    nothing."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._users: dict[str, _UserSlots] = {}

    @asynccontextmanager
    async def hold(self, user_id: str) -> AsyncIterator[None]:
        slots = self._users.get(user_id)
        if slots is None:
            slots = self._users[user_id] = _UserSlots(asyncio.Semaphore(self.limit))
        slots.users += 1
        try:
            async with slots.semaphore:
                yield
        finally:
            slots.users -= 1
            if slots.users == 0:
                del self._users[user_id]

    def __len__(self) -> int:
        return len(self._users)


class Memories:
    """One user's memories, as seen through a verified identity."""

    def __init__(
        self,
        embedder: Embedder,
        store: MemoryStore,
        *,
        id_key: bytes,
        relevance_floor: float = 0.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.embedder = embedder
        self.store = store
        # Keys the ids derived from text (memory_point_id).
        self.id_key = id_key
        self.relevance_floor = relevance_floor
        self.commits = GroupCommit(store)
        self.user_writes = PerUserLimit(WRITES_PER_USER)
        self.bm25 = qdrant_edge.Bm25()
        # When a query is asked: its "yesterday" is the day before this one.
        self.clock = clock

    def _sparse_document(self, text: str) -> SparseVector:
        vec = self.bm25.embed_document(text)
        return SparseVector(list(vec.indices), list(vec.values))

    def _sparse_query(self, text: str) -> SparseVector:
        vec = self.bm25.embed_query(text)
        return SparseVector(list(vec.indices), list(vec.values))

    async def save(self, who: Identity, new: NewMemory) -> Memory:
        text = _check_text(new.text)
        for name in ("provider", "conversation_id", "message_id", "url"):
            _check_field(getattr(new, name), name)
        memory_id = memory_point_id(
            who.user_id, new.message_id, new.kind, text, text_key=self.id_key
        )
        # A retried save returns what the first one stored instead of writing again; so does
        # the same text saved again without a message id, which lands on the same point.
        existing = await self.store.get(who.user_id, memory_id)
        if existing is not None and new.message_id:
            return existing
        if existing is not None:
            if normalised_text(existing.text) == normalised_text(text):
                await self._seen_again(who, existing)
                return existing
            # That memory was edited since: this text is new again, under an id of its own.
            memory_id = new_memory_id(who.user_id)
        memory = Memory(
            id=memory_id,
            user_id=who.user_id,
            kind=new.kind,
            text=text,
            created_at=datetime.now(UTC),
            provider=new.provider.strip().lower(),
            conversation_id=new.conversation_id,
            message_id=new.message_id,
            url=new.url,
            metadata=_check_metadata(new.metadata),
        )
        dense = await self.embedder.embed(text, who.user_id)
        point = MemoryPoint(memory, dense, self._sparse_document(text))
        # Saves racing to the same point (a retry in flight, the same text twice) store one:
        # the write is insert-only and answers with what the point holds.
        with _timed("upsert"):
            stored = await self.commits.insert(point)
        if stored is memory:
            metrics.MEMORIES_SAVED.labels(memory.kind.value).inc()
        return stored

    async def _seen_again(self, who: Identity, memory: Memory) -> None:
        memory.seen_count += 1
        with _timed("set_payload"):
            await self.store.set_fields(
                who.user_id,
                memory.id,
                {"seen_count": memory.seen_count, "last_seen_at": datetime.now(UTC).timestamp()},
            )

    async def attach_response(
        self, who: Identity, new: NewMemory, *, prompt_id: str = "", prompt_message_id: str = ""
    ) -> Memory:
        if not prompt_id and not prompt_message_id:
            raise InvalidArgumentError("name the prompt: prompt_id or prompt_message_id")
        if not prompt_id:
            prompt_id = memory_point_id(who.user_id, prompt_message_id)
        prompt = await self.get(who, prompt_id)
        response = await self.save(
            who,
            replace(
                new,
                kind=MemoryKind.RESPONSE,
                conversation_id=new.conversation_id or prompt.conversation_id,
                provider=new.provider or prompt.provider,
            ),
        )
        if response.prompt_id != prompt.id:
            with _timed("set_payload"):
                await self.store.set_fields(who.user_id, response.id, {"prompt_id": prompt.id})
                await self.store.set_fields(who.user_id, prompt.id, {"response_id": response.id})
            response.prompt_id = prompt.id
        return response

    async def search(
        self,
        who: Identity,
        query: str,
        top_k: int,
        mode: SearchMode,
        filters: SearchFilters,
        *,
        min_score: float = 0.0,
        relevant_only: bool = False,
        explain: bool = False,
        time_zone: str = "",
    ) -> list[ScoredMemory]:
        """The caller's best `top_k` memories for `query`, scored in [0, 1]; with
        `relevant_only` (memories about to be injected), none below the relevance floor; with
        `explain`, hybrid results carry each ranking feature's contribution. Days (the
        query's "yesterday", the day a memory was saved on) are those of `time_zone`, an IANA
        name, UTC when empty."""
        _check_text(query, "query")
        try:
            local = timeframes.LocalCalendar.at(named_zone(time_zone), self.clock())
        except ValueError as exc:
            raise InvalidArgumentError(str(exc)) from None
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidArgumentError(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
        if not 0.0 <= min_score <= 1.0:
            raise InvalidArgumentError(f"min_score must be between 0 and 1, got {min_score}")
        floor = max(min_score, self.relevance_floor) if relevant_only else min_score
        # Cut, not refused: /context and chat pass whole prompts, and their start says what
        # they are about. Keyword terms come from these characters, the embedding from the
        # model's first window of them, so a query's cost is bounded whatever its size.
        query = query[:MAX_QUERY_CHARS]
        sparse = self._sparse_query(query) if mode is not SearchMode.SEMANTIC else None
        if mode is SearchMode.KEYWORD and sparse is not None and not sparse.indices:
            return []
        # Keyword mode embeds the query too: its scores are scaled by the best dense match.
        dense = await self.embedder.embed(query, who.user_id, first_window_only=True)
        if (
            mode in (SearchMode.HYBRID, SearchMode.RRF)
            and sparse is not None
            and not sparse.indices
        ):
            # Nothing but stop words: the keyword side has nothing to add.
            mode, sparse = SearchMode.SEMANTIC, None
        with _timed("search"):
            results = await search_memories(
                self.store,
                who.user_id,
                dense=dense,
                sparse=sparse,
                mode=mode,
                filters=filters,
                limit=top_k,
                query=query,
                document_terms=self._sparse_document,
                explain=explain,
                calibration=self.embedder.calibration,
                local=local,
            )
        return [r for r in results if r.score >= floor] if floor > 0 else results

    async def get(self, who: Identity, memory_id: str) -> Memory:
        with _timed("get"):
            memory = await self.store.get(who.user_id, _check_id(memory_id))
        if memory is None:
            raise NotFoundError("memory not found")
        return memory

    async def update(
        self,
        who: Identity,
        memory_id: str,
        *,
        text: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Memory:
        """A new text and/or metadata for one of the caller's memories; id and created_at stay."""
        if text is None and metadata is None:
            raise InvalidArgumentError("nothing to change: give text, metadata or both")
        if text is not None:
            _check_text(text)
        if metadata is not None:
            metadata = _check_metadata(metadata)
        async with self.user_writes.hold(who.user_id):
            return await self._update(who, memory_id, text, metadata)

    async def _update(
        self, who: Identity, memory_id: str, text: str | None, metadata: dict[str, str] | None
    ) -> Memory:
        memory = await self.get(who, memory_id)
        memory.updated_at = datetime.now(UTC)
        if metadata is not None:
            memory.metadata = metadata
        if text is None:
            # Only the payload changes; the vectors still describe the text.
            fields = {"metadata": memory.metadata, "updated_at": memory.updated_at.timestamp()}
            with _timed("set_payload"):
                await self.store.set_fields(who.user_id, memory.id, fields)
            return memory
        memory.text = text
        dense = await self.embedder.embed(text, who.user_id)
        # The same point id: an upsert replaces the vectors and the payload in one write.
        with _timed("upsert"):
            await self.store.upsert([MemoryPoint(memory, dense, self._sparse_document(text))])
        return memory

    async def list(
        self, who: Identity, page_size: int, cursor: str, filters: SearchFilters
    ) -> tuple[list[Memory], str | None]:
        page_size = page_size or DEFAULT_PAGE_SIZE
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgumentError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        try:
            with _timed("scroll"):
                return await paging.scroll(
                    self.store, who.user_id, filters, page_size, cursor or None
                )
        except ValueError as exc:
            raise InvalidArgumentError(str(exc)) from exc

    async def delete(self, who: Identity, memory_id: str) -> None:
        async with self.user_writes.hold(who.user_id):
            with _timed("delete"):
                deleted = await self.store.delete(who.user_id, _check_id(memory_id))
        if not deleted:
            raise NotFoundError("memory not found")

    async def delete_user(self, who: Identity, user_id: str = "") -> int:
        target = user_id or who.user_id
        if target != who.user_id and not who.is_admin:
            raise PermissionDeniedError("only an admin may delete another user's memories")
        with _timed("delete_user"):
            return await self.store.delete_user(target)

    async def export(self, who: Identity, filters: SearchFilters) -> AsyncIterator[Memory]:
        async for memory in paging.iterate(self.store, who.user_id, filters):
            yield memory

    async def stats(self, who: Identity) -> StoreStats:
        if not who.is_admin:
            raise PermissionDeniedError("store statistics are for admins")
        return StoreStats(
            total_memories=await self.store.count(None),
            users=await self.store.count_users(),
            collection=self.store.spec.name,
            model=self.store.spec.model,
            dimension=self.store.spec.dimension,
            backend=self.store.backend,
        )

    async def user_stats(self, who: Identity, bounds: Sequence[datetime]) -> UserStats:
        """The caller's figures from the store's counts alone: a fixed number of index lookups,
        whatever the number of memories."""
        if len(bounds) > MAX_STATS_SPANS + 1:
            raise InvalidArgumentError(f"at most {MAX_STATS_SPANS + 1} span bounds")
        if any(later <= earlier for earlier, later in itertools.pairwise(bounds)):
            raise InvalidArgumentError("span bounds must be in increasing order")
        tenant = ownership.tenant_conditions(who.user_id)
        with _timed("count"):
            total = await self.store.count_matching(tenant)
            providers = await self.store.facet(tenant, "provider", MAX_STATS_PROVIDERS)
            spans = [
                await self.store.count_matching(
                    # A span ends just before the next begins (times are stored to the
                    # microsecond), so a memory at a bound counts once.
                    [*tenant, Range("created_at", start.timestamp(), end.timestamp() - 1e-6)]
                )
                for start, end in itertools.pairwise(bounds)
            ]
        ranked = sorted(providers.items(), key=lambda item: (-item[1], item[0]))
        return UserStats(total=total, providers=ranked, span_counts=spans)


def _check_id(memory_id: str) -> str:

    try:
        return str(uuid.UUID(memory_id))
    except (ValueError, AttributeError, TypeError):
        # Ids are UUIDs; anything else cannot name a stored memory.
        raise NotFoundError("memory not found") from None
