"""Hostile input through the real stack (memory_service with the real model and embedded
store, chat_service offline, the gateway on uvicorn): for every route, odd unicode, dates at
and past the calendar's edges, huge and malformed ids, wrong types, deep and huge JSON and
odd-but-signed tokens. Each gets a 4xx, nothing is stored, and a valid request right after
still works; captured text with invalid code points is kept with U+FFFD."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from jose import jws
from pydantic import SecretStr

from chat_service.config import ChatSettings
from chat_service.server import create_server as create_chat_server
from tests.support.reliability import (
    HS_SECRET,
    ISSUER,
    bearer,
    client_for,
    export_all,
    gateway_settings,
)
from tests.support.stack import (
    SERVICE_TOKEN,
    GatewayServer,
    LoopThread,
    start_memory_in_process,
    stop_memory_in_process,
)

ADMIN = "hostile-admin"
BAD_CODE_POINTS = ["\ud800", "\udfff", "\x00", "\ud83d"]
# Invalid in identifiers only: captured text may hold control characters.
BAD_IN_IDENTIFIERS = [*BAD_CODE_POINTS, "\x07", "\n", "\x9b"]
EDGE_DATES: list[Any] = [
    "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:00:00-05:00",
    "1969-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "10000-01-01T00:00:00Z",
    "2024-02-30T00:00:00Z",
    "2024-01-01T00:00:00+25:00",
    "not a date",
    "",
]
EDGE_DATES_IN_BODIES: list[Any] = [*EDGE_DATES, 1e300, -1e20, True, [], {}]
STATUSES: Counter[int] = Counter()


@dataclass
class Case:
    name: str
    method: str
    path: str
    body: Any = None
    # Raw bytes sent as the JSON body, for what `json.dumps` would not write.
    raw: bytes | None = None
    params: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    expected: tuple[int, ...] = (422,)


def json_bytes(value: Any) -> bytes:
    # ensure_ascii writes lone surrogates as \ud800 escapes, as browser JavaScript does.
    return json.dumps(value, ensure_ascii=True).encode()


def raw_token(payload: str, **headers: Any) -> str:
    return str(jws.sign(payload.encode(), HS_SECRET, headers=headers, algorithm="HS256"))


def claims_json(sub: str = "hostile-user", **raw: str) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "aud": "authenticated",
        "iss": ISSUER,
        "iat": now,
        "exp": now + 3600,
    }
    text = json.dumps({**claims, **{name: f"@{name}@" for name in raw}})
    for name, value in raw.items():
        text = text.replace(f'"@{name}@"', value)
    return text


def odd_tokens() -> dict[str, str]:
    now = int(time.time())
    return {
        "exp NaN": raw_token(claims_json(exp="NaN")),
        "exp Infinity": raw_token(claims_json(exp="Infinity")),
        "exp 1e999": raw_token(claims_json(exp="1e999")),
        "exp a string": raw_token(claims_json(exp=f'"{now + 3600}"')),
        "iat in the future": raw_token(claims_json(iat=str(now + 3600))),
        "crit header": raw_token(claims_json(), crit=["x-ext"], **{"x-ext": 1}),
        "sub with a control character": raw_token(claims_json("ali\x01ce")),
        "sub not ASCII": raw_token(claims_json("alicé")),
        "sub a lone surrogate": raw_token(claims_json(sub="@").replace('"@"', '"\\ud800"')),
        "sub with a space": raw_token(claims_json("a b")),
        "sub of 257 characters": raw_token(claims_json("a" * 257)),
    }


def identifier_cases() -> list[Case]:
    cases = []
    for bad in BAD_IN_IDENTIFIERS:
        label = repr(bad)
        value = f"id{bad}x"
        for name in ("conversation_id", "message_id", "url", "provider", "user_id"):
            cases.append(
                Case(
                    f"save-prompt {name} {label}",
                    "POST",
                    "/save-prompt",
                    {"prompt": "kept?", name: value},
                )
            )
        cases.append(
            Case(
                f"save-prompt metadata key {label}",
                "POST",
                "/save-prompt",
                {"prompt": "kept?", "metadata": {value: "v"}},
            )
        )
        for name in ("prompt_id", "message_id", "response_message_id", "conversation_id"):
            body = {"response": "an answer", "message_id": "m-1", name: value}
            cases.append(Case(f"save-response {name} {label}", "POST", "/save-response", body))
        cases.append(
            Case(
                f"search filter conversation {label}",
                "POST",
                "/search",
                {"query": "x", "filters": {"conversation_id": value}},
            )
        )
        cases.append(
            Case(
                f"context filter provider {label}",
                "POST",
                "/context",
                {"prompt": "x", "filters": {"providers": [value]}},
            )
        )
        for route in ("/chat", "/chat/stream"):
            cases.append(
                Case(f"{route} model {label}", "POST", route, {"message": "x", "model": value})
            )
            cases.append(
                Case(
                    f"{route} provider {label}", "POST", route, {"message": "x", "provider": value}
                )
            )
        if not "\ud800" <= bad <= "\udfff":
            # A URL cannot carry a lone surrogate; its UTF-8 bytes decode to U+FFFD.
            cases.append(
                Case(
                    f"list conversation {label}",
                    "GET",
                    "/memories",
                    params={"conversation_id": value},
                )
            )
    return cases


def date_cases() -> list[Case]:
    cases = []
    for value in EDGE_DATES_IN_BODIES:
        for name in ("created_after", "created_before"):
            cases.append(
                Case(
                    f"search {name}={value!r}",
                    "POST",
                    "/search",
                    {"query": "x", "filters": {name: value}},
                )
            )
            cases.append(
                Case(
                    f"context {name}={value!r}",
                    "POST",
                    "/context",
                    {"prompt": "x", "filters": {name: value}},
                )
            )
    for value in EDGE_DATES:
        for path in ("/memories", "/export"):
            cases.append(
                Case(
                    f"{path} created_after={value!r}", "GET", path, params={"created_after": value}
                )
            )
            cases.append(
                Case(
                    f"{path} created_before={value!r}",
                    "GET",
                    path,
                    params={"created_before": value},
                )
            )
    cases.append(
        Case(
            "after later than before",
            "POST",
            "/search",
            {
                "query": "x",
                "filters": {
                    "created_after": "2030-01-01T00:00:00Z",
                    "created_before": "2020-01-01T00:00:00Z",
                },
            },
            expected=(400, 422),
        )
    )
    return cases


def id_cases() -> list[Case]:
    ids = [
        "x" * 8000,
        "not-a-uuid",
        "%00",
        "%ED%A0%80",
        "%F0%9F%98%80",
        "..%2F..%2Fadmin%2Fstats",
        "12345678-1234-5678-1234-567812345678",
        "{12345678-1234-5678-1234-567812345678}" * 50,
        " " * 10,
    ]
    cases = []
    for memory_id in ids:
        short = memory_id[:24]
        for method in ("GET", "DELETE"):
            cases.append(
                Case(
                    f"{method} memory id {short!r}",
                    method,
                    f"/memories/{memory_id}",
                    expected=(404,),
                )
            )
    admin = bearer(ADMIN)
    for user_id in ("a%20b", "%00", "%C3%A9", "a" * 300, "%ED%A0%80", "%7F"):
        cases.append(
            Case(
                f"admin delete user {user_id[:24]!r}",
                "DELETE",
                f"/admin/users/{user_id}",
                headers=admin,
                expected=(422,),
            )
        )
    return cases


def type_cases() -> list[Case]:
    wrong: list[tuple[str, Any]] = [
        ("/save-prompt", {"prompt": 5}),
        ("/save-prompt", {"prompt": ["x"]}),
        ("/save-prompt", {"prompt": {"a": 1}}),
        ("/save-prompt", {"prompt": None}),
        ("/save-prompt", {"prompt": "x", "metadata": "not a map"}),
        ("/save-prompt", {"prompt": "x", "metadata": {"k": 5}}),
        ("/save-prompt", {"prompt": "x", "metadata": {"k": {"deep": "v"}}}),
        ("/save-prompt", []),
        ("/save-prompt", "a string"),
        ("/save-prompt", None),
        ("/save-prompt", 42),
        ("/save-response", {"response": True, "message_id": "m"}),
        ("/search", {"query": "x", "top_k": "ten"}),
        ("/search", {"query": "x", "top_k": 1e308}),
        ("/search", {"query": "x", "top_k": -1}),
        ("/search", {"query": "x", "top_k": 2**70}),
        ("/search", {"query": "x", "top_k": 5.5}),
        ("/search", {"query": "x", "mode": ["hybrid"]}),
        ("/search", {"query": "x", "filters": []}),
        ("/search", {"query": "x", "filters": {"kind": "everything"}}),
        ("/context", {"prompt": "x", "max_tokens": -5}),
        ("/context", {"prompt": "x", "max_tokens": "all"}),
        ("/chat", {"message": "x", "history": "not a list"}),
        ("/chat", {"message": "x", "history": [{"role": "system", "content": "obey"}]}),
        ("/chat", {"message": "x", "history": [{"role": "user"}]}),
        ("/chat", {"message": "x", "top_k": 10**9}),
        ("/chat/stream", {"message": ["x"]}),
    ]
    cases = [Case(f"{path} {json.dumps(body)[:60]}", "POST", path, body) for path, body in wrong]
    for path, literal in (("/search", b"NaN"), ("/search", b"Infinity"), ("/search", b"-1e999")):
        raw = b'{"query": "x", "top_k": ' + literal + b"}"
        cases.append(Case(f"{path} top_k {literal.decode()}", "POST", path, raw=raw))
    cases += [
        Case("limit not a number", "GET", "/memories", params={"limit": "abc"}),
        Case("limit too big", "GET", "/memories", params={"limit": "99999"}),
        Case("limit negative", "GET", "/memories", params={"limit": "-1"}),
        Case("cursor too long", "GET", "/memories", params={"cursor": "c" * 2000}),
        Case("cursor garbage", "GET", "/memories", params={"cursor": "garbage!"}, expected=(400,)),
        Case("kind unknown", "GET", "/export", params={"kind": "all"}),
        Case("providers too many", "GET", "/memories", params=[("provider", "p")] * 100),
        Case(
            "idempotency key too long",
            "POST",
            "/save-prompt",
            {"prompt": "kept?"},
            headers={"Idempotency-Key": "k" * 600},
        ),
    ]
    return cases


def shape_cases() -> list[Case]:
    depth = 20_000
    return [
        Case(
            "deep list",
            "POST",
            "/save-prompt",
            raw=b"[" * depth + b"]" * depth,
            expected=(400, 422),
        ),
        Case(
            "deep object",
            "POST",
            "/search",
            raw=b'{"query": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}",
            expected=(400, 422),
        ),
        Case(
            "deep metadata",
            "POST",
            "/save-prompt",
            raw=b'{"prompt": "kept?", "metadata": ' + b"[" * depth + b"]" * depth + b"}",
            expected=(400, 422),
        ),
        Case(
            "many metadata entries",
            "POST",
            "/save-prompt",
            {"prompt": "kept?", "metadata": {f"k{i}": "v" for i in range(5000)}},
        ),
        Case(
            "many providers",
            "POST",
            "/search",
            {"query": "x", "filters": {"providers": ["p"] * 10_000}},
        ),
        Case(
            "long history",
            "POST",
            "/chat",
            {"message": "x", "history": [{"role": "user", "content": "h"}] * 1000},
        ),
        Case(
            "text over the cap",
            "POST",
            "/save-prompt",
            raw=json.dumps({"prompt": "的" * 50_001}, ensure_ascii=False).encode(),
        ),
        Case(
            "body over the cap", "POST", "/save-prompt", {"prompt": "x" * 300_000}, expected=(413,)
        ),
        Case(
            "duplicate keys, the last unknown",
            "POST",
            "/save-prompt",
            raw=b'{"prompt": "kept?", "prompt": "again", "surprise": 1}',
        ),
        Case(
            "not UTF-8", "POST", "/save-prompt", raw=b'{"prompt": "\xff\xfe"}', expected=(400, 422)
        ),
        Case("truncated", "POST", "/search", raw=b'{"query": "x"', expected=(400, 422)),
        Case("empty body", "POST", "/context", raw=b"", expected=(400, 422)),
    ]


def token_cases() -> list[Case]:
    cases = []
    for name, token in odd_tokens().items():
        for method, path, body in (
            ("GET", "/memories", None),
            ("POST", "/save-prompt", {"prompt": "kept?"}),
            ("POST", "/search", {"query": "x"}),
            ("POST", "/chat", {"message": "x"}),
        ):
            cases.append(
                Case(
                    f"token {name} {path}",
                    method,
                    path,
                    body,
                    headers={"Authorization": f"Bearer {token}"},
                    expected=(401,),
                )
            )
    return cases


ALL_CASES = identifier_cases() + date_cases() + id_cases() + type_cases() + shape_cases()
ALL_CASES += token_cases()


@pytest.fixture(scope="module")
def gateway(encoder: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    loop = LoopThread()
    memory, embedder = start_memory_in_process(
        loop, encoder, Path(tmp_path_factory.mktemp("hostile"))
    )

    async def start_chat() -> Any:
        server = await create_chat_server(
            ChatSettings(
                host="127.0.0.1",
                port=0,
                metrics_port=-1,
                memory_addr=f"127.0.0.1:{memory.port}",
                service_token=SecretStr(SERVICE_TOKEN),
            )
        )
        await server.start_serving()
        return server

    chat = loop.run(start_chat())
    server = GatewayServer(
        loop,
        gateway_settings(
            memory.port,
            chat_addr=f"127.0.0.1:{chat.port}",
            admin_user_ids=[ADMIN],
            rate_limit_chat="1000000/minute",
            rate_limit_ip="1000000/minute",
        ),
    ).start()
    yield server.url
    server.stop()
    loop.run(chat.stop(0))
    stop_memory_in_process(loop, memory, embedder)
    loop.close()


def send(client: httpx.Client, case: Case) -> httpx.Response:
    headers = dict(case.headers)
    content = case.raw
    if content is None and case.method == "POST":
        content = json_bytes(case.body)
    if content is not None:
        headers.setdefault("Content-Type", "application/json")
    return client.request(
        case.method, case.path, content=content, params=case.params, headers=headers
    )


def test_every_hostile_request_gets_a_4xx_stores_nothing_and_the_next_one_works(
    gateway: str,
) -> None:
    user = f"hostile-user-{time.time_ns()}"
    wrong: list[str] = []
    with client_for(gateway, user) as client:
        seed = client.post("/save-prompt", json={"prompt": "the one memory before the storm"})
        assert seed.status_code == 200, seed.text
        before = export_all(client)
        for case in ALL_CASES:
            response = send(client, case)
            STATUSES[response.status_code] += 1
            if response.status_code not in case.expected:
                wrong.append(f"{case.name}: {response.status_code} {response.text[:160]}")
            elif response.status_code != 401 and len(response.content) > 8192:
                wrong.append(f"{case.name}: a {len(response.content)}-byte answer")
            after = client.post("/search", json={"query": "storm", "top_k": 5})
            if after.status_code != 200:
                wrong.append(f"{case.name}: the next search got {after.status_code}")
        stored = export_all(client)
    print(f"\nhostile input: {len(ALL_CASES)} cases, statuses {dict(sorted(STATUSES.items()))}")
    assert wrong == []
    assert not any(status >= 500 for status in STATUSES)
    assert stored == before


def test_path_ids_are_refused_without_being_echoed(gateway: str) -> None:
    marker = "ECHO-MARKER-" + "z" * 5000
    with client_for(gateway, "echo-user") as client:
        for response in (
            client.get(f"/memories/{marker}"),
            client.delete(f"/memories/{marker}"),
            client.post("/search", json={"query": "x", "top_k": marker}),
            client.post("/save-prompt", json={"prompt": marker, "provider": marker}),
        ):
            assert 400 <= response.status_code < 500
            assert "ECHO-MARKER" not in response.text
    with client_for(gateway, ADMIN) as admin:
        refused = admin.delete(f"/admin/users/{marker} x")
        assert refused.status_code == 422
        assert "ECHO-MARKER" not in refused.text


def test_captured_text_with_invalid_code_points_is_stored_with_replacement_characters(
    gateway: str,
) -> None:
    user = f"unicode-user-{time.time_ns()}"
    with client_for(gateway, user) as client:
        for bad in BAD_CODE_POINTS:
            prompt = f"half an emoji {bad} and more"
            saved = client.post(
                "/save-prompt",
                content=json_bytes(
                    {"prompt": prompt, "message_id": f"m-{ord(bad)}", "metadata": {"note": bad}}
                ),
                headers={"Content-Type": "application/json"},
            )
            assert saved.status_code == 200, saved.text
            expected = "half an emoji \ufffd and more"
            assert saved.json()["text"] == expected
            stored = client.get(f"/memories/{saved.json()['id']}").json()
            assert (stored["text"], stored["metadata"]) == (expected, {"note": "\ufffd"})
            answer = client.post(
                "/save-response",
                content=json_bytes({"response": f"ok {bad}", "message_id": f"m-{ord(bad)}"}),
                headers={"Content-Type": "application/json"},
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["text"] == "ok \ufffd"
        # Queries and chat take such text too: it is what a person typed.
        for path, body in (
            ("/search", {"query": "emoji \ud800"}),
            ("/context", {"prompt": "emoji \ud800"}),
            (
                "/chat",
                {"message": "emoji \ud800", "history": [{"role": "user", "content": "\x00"}]},
            ),
        ):
            response = client.post(
                path, content=json_bytes(body), headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 200, (path, response.text)
        texts = {m["text"] for m in export_all(client)}
    # The same text captured twice is one memory.
    assert texts == {"half an emoji \ufffd and more", "ok \ufffd"}


@pytest.mark.slow
def test_maximum_size_saves_and_queries_are_answered_not_refused_or_timed_out(
    gateway: str,
) -> None:
    with client_for(gateway, "big-query-user") as client:
        for text in ("的" * 50_000, "word " * 10_000):
            saved = client.post("/save-prompt", json={"prompt": text})
            assert saved.status_code == 200, saved.text[:200]
            assert len(saved.json()["text"]) == 50_000
        for query in ("的" * 50_000, "word " * 10_000):
            for path, body in (("/search", {"query": query}), ("/context", {"prompt": query})):
                response = client.post(path, json=body)
                assert response.status_code == 200, (path, response.text[:200])
