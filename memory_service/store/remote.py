"""Remote store: a Qdrant server or cluster through qdrant-client's async client."""

from __future__ import annotations

import asyncio
import functools
import math
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from memory_service.models import Memory, MemoryPoint
from memory_service.models import SparseVector as Sparse
from memory_service.store import interface
from memory_service.store.ownership import memory_conditions, stored_or_own, tenant_conditions
from memory_service.store.payload import memory_of, to_payload


def _condition(cond: interface.Condition) -> Any:
    match cond:
        case interface.Match(key, value):
            return models.FieldCondition(key=key, match=models.MatchValue(value=value))
        case interface.MatchAny(key, values):
            return models.FieldCondition(key=key, match=models.MatchAny(any=list(values)))
        case interface.Range(key, gte, lte):
            return models.FieldCondition(key=key, range=models.Range(gte=gte, lte=lte))
        case interface.HasId(point_id):
            return models.HasIdCondition(has_id=[point_id])
    raise ValueError(f"unknown condition {cond!r}")


def _filter(conditions: list[interface.Condition]) -> models.Filter:
    excluded: list[int | str | uuid.UUID] = [
        i for c in conditions if isinstance(c, interface.NotIds) for i in c.point_ids
    ]
    must = [_condition(c) for c in conditions if not isinstance(c, interface.NotIds)]
    if not excluded:
        return models.Filter(must=must)
    return models.Filter(must=must, must_not=[models.HasIdCondition(has_id=excluded)])


DEFAULT_TIMEOUT_SECONDS = 3.0
P = ParamSpec("P")
T = TypeVar("T")
Store = TypeVar("Store", bound="ServerMemoryStore")


def _translated(
    method: Callable[Concatenate[Store, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Store, P], Coroutine[Any, Any, T]]:
    """Bound a store operation in time and tell Qdrant's failures as this store's errors.

    The client's own timeout bounds each phase of a request (connect, each read); this bounds
    the whole operation, so a server that accepts and then trickles or stalls lets go too."""

    @functools.wraps(method)
    async def bounded(self: Store, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            async with asyncio.timeout(self.timeout):
                return await method(self, *args, **kwargs)
        except TimeoutError as exc:
            raise interface.StoreUnavailableError(
                f"Qdrant did not answer within {self.timeout:g} s"
            ) from exc
        except (ResponseHandlingException, OSError) as exc:
            raise interface.StoreUnavailableError(f"cannot reach Qdrant: {exc}") from exc
        except UnexpectedResponse as exc:
            status = exc.status_code or 0
            if status == 429 or status >= 500:
                raise interface.StoreUnavailableError(
                    f"Qdrant answered {exc.status_code} {exc.reason_phrase}"
                ) from exc
            raise interface.StoreError(
                f"Qdrant refused a request: {exc.status_code} {exc.reason_phrase}"
            ) from exc

    return bounded


def _vector(vector: list[float] | Sparse) -> Any:
    if isinstance(vector, Sparse):
        return models.SparseVector(indices=vector.indices, values=vector.values)
    return vector


def _point(p: MemoryPoint) -> models.PointStruct:
    return models.PointStruct(
        id=p.memory.id,
        vector={
            interface.DENSE_VECTOR: p.dense,
            interface.SPARSE_VECTOR: models.SparseVector(
                indices=p.sparse.indices, values=p.sparse.values
            ),
        },
        payload=to_payload(p.memory),
    )


class ServerMemoryStore(interface.MemoryStore):
    backend = "server"

    def __init__(
        self,
        client: AsyncQdrantClient,
        spec: interface.CollectionSpec,
        *,
        replication_factor: int = 1,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.client = client
        self.spec = spec
        self.replication_factor = replication_factor
        self.timeout = timeout

    @classmethod
    def connect(
        cls,
        url: str,
        api_key: str | None,
        spec: interface.CollectionSpec,
        *,
        replication_factor: int = 1,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> ServerMemoryStore:
        # REST, as the outage test's stand-in serves it; the client takes whole seconds.
        client = AsyncQdrantClient(
            url=url, api_key=api_key, timeout=max(1, math.ceil(timeout)), prefer_grpc=False
        )
        return cls(client, spec, replication_factor=replication_factor, timeout=timeout)

    @property
    def name(self) -> str:
        return self.spec.name

    @_translated
    async def open(self) -> None:
        if await self.client.collection_exists(self.name):
            info = await self.client.get_collection(self.name)
            vectors = info.config.params.vectors
            size = vectors[interface.DENSE_VECTOR].size if isinstance(vectors, dict) else None
            if size != self.spec.dimension:
                raise interface.DimensionMismatchError(
                    f"collection {self.name!r} holds {size}-dimensional embeddings, but the "
                    f"configured model {self.spec.model!r} produces {self.spec.dimension}"
                )
        else:
            await self.client.create_collection(
                self.name,
                vectors_config={
                    interface.DENSE_VECTOR: models.VectorParams(
                        size=self.spec.dimension, distance=models.Distance.COSINE
                    )
                },
                sparse_vectors_config={
                    interface.SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)
                },
                replication_factor=self.replication_factor,
                # A write is acknowledged once a majority of the copies have it.
                write_consistency_factor=self.replication_factor // 2 + 1,
            )
        await self.client.create_payload_index(
            self.name,
            "user_id",
            models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
            wait=True,
        )
        for key in ("provider", "conversation_id", "kind"):
            await self.client.create_payload_index(
                self.name, key, models.PayloadSchemaType.KEYWORD, wait=True
            )
        await self.client.create_payload_index(
            self.name, "created_at", models.PayloadSchemaType.FLOAT, wait=True
        )

    async def close(self) -> None:
        await self.client.close()

    @_translated
    async def upsert(self, points: Sequence[MemoryPoint]) -> None:
        await self.client.upsert(self.name, points=[_point(p) for p in points], wait=True)

    @_translated
    async def insert_new(self, points: Sequence[MemoryPoint]) -> list[Memory]:
        ids = list(dict.fromkeys(p.memory.id for p in points))
        records = await self.client.retrieve(self.name, ids, with_payload=True)
        fresh, result = stored_or_own(points, records)
        if fresh:
            # Insert-only: a replica or another pod that stored the same id in the meantime
            # keeps its copy instead of being overwritten.
            await self.client.upsert(
                self.name,
                points=[_point(p) for p in fresh],
                update_mode=models.UpdateMode.INSERT_ONLY,
                wait=True,
            )
        return result

    @_translated
    async def get(self, user_id: str, memory_id: str) -> Memory | None:
        records, _ = await self.client.scroll(
            self.name,
            scroll_filter=_filter(memory_conditions(user_id, memory_id)),
            limit=1,
            with_payload=True,
        )
        return memory_of(records[0]) if records else None

    @_translated
    async def query(
        self, conditions: list[interface.Condition], queries: Sequence[interface.NearestQuery]
    ) -> list[list[models.ScoredPoint]]:
        flt = _filter(conditions)
        responses = await self.client.query_batch_points(
            self.name,
            requests=[
                models.QueryRequest(
                    query=_vector(q.vector),
                    using=q.using,
                    filter=flt,
                    limit=q.limit,
                    with_payload=True,
                )
                for q in queries
            ],
        )
        return [response.points for response in responses]

    @_translated
    async def retrieve(
        self, memory_ids: Sequence[str], owner: str | None = None
    ) -> list[models.Record]:
        # One collection for every user: the owner narrows nothing here.
        return await self.client.retrieve(self.name, list(memory_ids), with_payload=True)

    @_translated
    async def rrf(
        self,
        conditions: list[interface.Condition],
        prefetches: Sequence[interface.NearestQuery],
        limit: int,
    ) -> list[models.ScoredPoint]:
        flt = _filter(conditions)
        response = await self.client.query_points(
            self.name,
            prefetch=[
                models.Prefetch(query=_vector(q.vector), using=q.using, limit=q.limit, filter=flt)
                for q in prefetches
            ],
            query=models.RrfQuery(rrf=models.Rrf(k=interface.RRF_K)),
            query_filter=flt,
            limit=limit,
            with_payload=True,
        )
        return response.points

    @_translated
    async def newest(
        self, conditions: list[interface.Condition], start: float | None, window: int
    ) -> list[models.Record]:
        records, _ = await self.client.scroll(
            self.name,
            scroll_filter=_filter(conditions),
            limit=window,
            with_payload=True,
            order_by=models.OrderBy(
                key="created_at", direction=models.Direction.DESC, start_from=start
            ),
        )
        return records

    @_translated
    async def count(self, user_id: str | None = None) -> int:
        flt = _filter(tenant_conditions(user_id)) if user_id is not None else None
        result = await self.client.count(self.name, count_filter=flt, exact=True)
        return int(result.count)

    @_translated
    async def count_matching(self, conditions: list[interface.Condition]) -> int:
        result = await self.client.count(self.name, count_filter=_filter(conditions), exact=True)
        return int(result.count)

    @_translated
    async def facet(
        self, conditions: list[interface.Condition], key: str, limit: int
    ) -> dict[str, int]:
        response = await self.client.facet(
            self.name, key=key, facet_filter=_filter(conditions), limit=limit, exact=True
        )
        return {str(hit.value): int(hit.count) for hit in response.hits}

    @_translated
    async def count_users(self) -> int:
        response = await self.client.facet(self.name, key="user_id", limit=1_000_000, exact=False)
        return len(response.hits)

    @_translated
    async def delete(self, user_id: str, memory_id: str) -> bool:
        if await self.get(user_id, memory_id) is None:
            return False
        await self.client.delete(
            self.name,
            points_selector=models.FilterSelector(
                filter=_filter(memory_conditions(user_id, memory_id))
            ),
            wait=True,
        )
        return True

    @_translated
    async def delete_user(self, user_id: str) -> int:
        flt = _filter(tenant_conditions(user_id))
        count = (await self.client.count(self.name, count_filter=flt, exact=True)).count
        await self.client.delete(
            self.name, points_selector=models.FilterSelector(filter=flt), wait=True
        )
        return int(count)

    @_translated
    async def set_fields(self, user_id: str, memory_id: str, fields: dict[str, Any]) -> None:
        await self.client.set_payload(
            self.name,
            payload=fields,
            points=models.FilterSelector(filter=_filter(memory_conditions(user_id, memory_id))),
            wait=True,
        )


__all__ = ["ServerMemoryStore"]
