"""A Qdrant server on loopback for tests that need one: the REST routes qdrant-client's
`AsyncQdrantClient(url=..., prefer_grpc=False)` calls, each request parsed into
qdrant-client's own models and answered by a real engine (qdrant-client's local mode), with
a switch that makes it stop answering, as a server does when it hangs or its node goes away.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, TypeAdapter, ValidationError
from qdrant_client import QdrantClient, models

# The server version the client checks itself against: the one it was released beside.
VERSION = {"title": "qdrant - vector search engine", "version": version("qdrant-client")}
Route = Callable[[QdrantClient, str, Any], Any]

_POINTS = TypeAdapter(models.PointInsertOperations)
_SELECTOR = TypeAdapter(models.PointsSelector)


def _done() -> models.UpdateResult:
    return models.UpdateResult(operation_id=0, status=models.UpdateStatus.COMPLETED)


def _create_collection(engine: QdrantClient, name: str, body: Any) -> bool:
    spec = models.CreateCollection.model_validate(body)
    return engine.create_collection(
        name, vectors_config=spec.vectors or {}, sparse_vectors_config=spec.sparse_vectors
    )


def _create_index(engine: QdrantClient, name: str, body: Any) -> models.UpdateResult:
    models.CreateFieldIndex.model_validate(body)
    # Local mode keeps no payload indexes (it warns and ignores them), and filters the same
    # with or without; checking that the request is well formed is all there is to do.
    engine.get_collection(name)
    return _done()


def _upsert(engine: QdrantClient, name: str, body: Any) -> models.UpdateResult:
    operation = _POINTS.validate_python(body)
    if not isinstance(operation, models.PointsList):
        raise ValueError("the stand-in takes points as a list")
    engine.upsert(
        name,
        points=operation.points,
        update_filter=operation.update_filter,
        update_mode=operation.update_mode,
    )
    return _done()


def _scroll(engine: QdrantClient, name: str, body: Any) -> models.ScrollResult:
    request = models.ScrollRequest.model_validate(body)
    points, next_offset = engine.scroll(
        name,
        scroll_filter=request.filter,
        limit=request.limit or 10,
        offset=request.offset,
        order_by=request.order_by,
        with_payload=request.with_payload if request.with_payload is not None else True,
        with_vectors=request.with_vector or False,
    )
    return models.ScrollResult(points=points, next_page_offset=next_offset)


def _query(engine: QdrantClient, name: str, body: Any) -> models.QueryResponse:
    request = models.QueryRequest.model_validate(body)
    return engine.query_points(
        name,
        query=request.query,
        using=request.using,
        prefetch=request.prefetch,
        query_filter=request.filter,
        score_threshold=request.score_threshold,
        limit=request.limit or 10,
        offset=request.offset,
        with_payload=request.with_payload if request.with_payload is not None else False,
        with_vectors=request.with_vector or False,
    )


def _query_batch(engine: QdrantClient, name: str, body: Any) -> list[Any]:
    batch = models.QueryRequestBatch.model_validate(body)
    return [
        _query(engine, name, request.model_dump(exclude_unset=True)).model_dump(mode="json")
        for request in batch.searches
    ]


def _retrieve(engine: QdrantClient, name: str, body: Any) -> list[Any]:
    request = models.PointRequest.model_validate(body)
    records = engine.retrieve(
        name,
        ids=request.ids,
        with_payload=request.with_payload if request.with_payload is not None else True,
        with_vectors=request.with_vector or False,
    )
    return [record.model_dump(mode="json") for record in records]


def _count(engine: QdrantClient, name: str, body: Any) -> models.CountResult:
    request = models.CountRequest.model_validate(body)
    return engine.count(name, count_filter=request.filter, exact=request.exact is not False)


def _facet(engine: QdrantClient, name: str, body: Any) -> models.FacetResponse:
    request = models.FacetRequest.model_validate(body)
    return engine.facet(
        name,
        key=request.key,
        facet_filter=request.filter,
        limit=request.limit or 10,
        exact=bool(request.exact),
    )


def _delete(engine: QdrantClient, name: str, body: Any) -> models.UpdateResult:
    engine.delete(name, points_selector=_SELECTOR.validate_python(body))
    return _done()


def _set_payload(engine: QdrantClient, name: str, body: Any) -> models.UpdateResult:
    request = models.SetPayload.model_validate(body)
    selector: Any = (
        models.FilterSelector(filter=request.filter) if request.filter else request.points
    )
    engine.set_payload(name, payload=request.payload, points=selector, key=request.key)
    return _done()


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "exists"): lambda engine, name, _: models.CollectionExistence(
        exists=engine.collection_exists(name)
    ),
    ("GET", ""): lambda engine, name, _: engine.get_collection(name),
    ("PUT", ""): _create_collection,
    ("DELETE", ""): lambda engine, name, _: engine.delete_collection(name),
    ("PUT", "index"): _create_index,
    ("PUT", "points"): _upsert,
    ("POST", "points/scroll"): _scroll,
    ("POST", "points/query"): _query,
    ("POST", "points/query/batch"): _query_batch,
    ("POST", "points"): _retrieve,
    ("POST", "points/count"): _count,
    ("POST", "facet"): _facet,
    ("POST", "points/delete"): _delete,
    ("POST", "points/payload"): _set_payload,
}
_COLLECTION_PATH = re.compile(r"^/collections/(?P<name>[^/]+)/?(?P<rest>.*)$")


class QdrantStandIn:
    """Serves until stop(). stall() holds every request unanswered (and unapplied) until
    answer(), then drops it: a server that took the request and went silent, with nothing
    the client gave up on landing later behind its back. hang_up() closes each connection
    as soon as a request arrives: a node that went away mid-conversation. fail_with(status)
    answers every request with that HTTP error, as a server does when it is overloaded (503,
    429) or refuses a request (4xx)."""

    def __init__(self) -> None:
        self.engine = QdrantClient(location=":memory:")
        # Local mode is not thread-safe; the HTTP server runs one thread per connection.
        self._engine_lock = threading.Lock()
        self._answering = threading.Event()
        self._answering.set()
        self._hanging_up = False
        self._failing_with: int | None = None
        self.requests: list[tuple[str, str]] = []
        # Requests that got no answer: held by a stall, or hung up on.
        self.held = 0
        self._count_lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as a real Qdrant: the client's pooled connections stay open.
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if owner._hanging_up:
                    with owner._count_lock:
                        owner.held += 1
                    self.close_connection = True
                    return
                if not owner._answering.is_set():
                    with owner._count_lock:
                        owner.held += 1
                    owner._answering.wait()
                    self.close_connection = True
                    return
                if owner._failing_with is not None:
                    status: int = owner._failing_with
                    payload: Any = {"status": {"error": "failing on purpose"}}
                else:
                    status, payload = owner.dispatch(self.command, self.path, raw)
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> QdrantStandIn:
        self._thread.start()
        return self

    def stall(self) -> None:
        self._answering.clear()

    def hang_up(self) -> None:
        self._hanging_up = True

    def fail_with(self, status: int) -> None:
        self._failing_with = status

    def answer(self) -> None:
        self._hanging_up = False
        self._failing_with = None
        self._answering.set()

    def stop(self) -> None:
        self._answering.set()
        self._server.shutdown()
        self._server.server_close()
        self.engine.close()

    def dispatch(self, method: str, target: str, raw: bytes) -> tuple[int, Any]:
        started = time.perf_counter()
        path = urlsplit(target).path
        self.requests.append((method, path))
        if method == "GET" and path == "/":
            return 200, VERSION
        found = _COLLECTION_PATH.match(path)
        route = ROUTES.get((method, found["rest"])) if found else None
        if found is None or route is None:
            return 404, {"status": {"error": f"the stand-in does not serve {method} {path}"}}
        try:
            body = json.loads(raw) if raw else None
            with self._engine_lock:
                result = route(self.engine, found["name"], body)
        except (ValidationError, ValueError, KeyError) as exc:
            # Local mode says a missing collection with ValueError, as the server does with 404.
            status = 404 if "not found" in str(exc).lower() else 400
            return status, {"status": {"error": str(exc)}}
        except Exception as exc:
            # What the server does with its own failures: a 500 with the reason, not a hang-up.
            return 500, {"status": {"error": f"{type(exc).__name__}: {exc}"}}
        if isinstance(result, BaseModel):
            result = result.model_dump(mode="json")
        return 200, {"result": result, "status": "ok", "time": time.perf_counter() - started}
