"""Chat through the gateway over real sockets: uvicorn on loopback in front of a real
ChatService and MemoryService (real model, embedded store), with a real HTTP server on
loopback standing in for the LLM provider (tests/support/llm_stand_in.py)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from chat_service.assistant import NO_RELEVANT_NOTICE
from chat_service.config import ChatSettings
from chat_service.server import ChatServer, create_server
from gateway.config import GatewaySettings
from gateway.deps import CHAT_NOT_CONFIGURED
from gateway.tokens import mint_token
from memory_service.embedding.scheduler import Embedder
from memory_service.server import MemoryServer
from tests.support.auth import HS_SECRET, bearer, new_user
from tests.support.llm_stand_in import ANSWER, Received, Reply, StandInProvider
from tests.support.ports import free_port
from tests.support.stack import SERVICE_TOKEN, Gateway, start_memory

ISSUER = "gateway-chat-tests"
WINDOW_SEATS = "I prefer window seats on long flights"
A_TEXTS = [WINDOW_SEATS, "My sister's birthday is on the fourth of May"]
B_TEXTS = [
    "I always book aisle seats on flights because of my knees",
    "My favourite airline seat is 12C, right by the wing",
]
QUESTION = {"message": "Which seat do I like on flights?", "top_k": 5}
WAIT = 20.0


def token(user: str) -> dict[str, str]:
    return bearer(mint_token(HS_SECRET, user, issuer=ISSUER, ttl_seconds=600))


@dataclass
class Users:
    a: dict[str, str]
    b: dict[str, str]


@pytest.fixture(scope="module")
async def memory(
    embedder: Embedder, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[MemoryServer]:
    server = await start_memory(embedder, tmp_path_factory.mktemp("gateway-chat-memory"))
    yield server
    await server.stop(0)


@pytest.fixture
async def provider() -> AsyncIterator[StandInProvider]:
    stand_in = StandInProvider()
    await stand_in.start()
    yield stand_in
    await stand_in.close()


@dataclass
class Stack:
    chat: ChatServer | None
    gateway: Gateway

    def client(self) -> httpx.AsyncClient:
        return self.gateway.client()


StartStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def start_stack(memory: MemoryServer, provider: StandInProvider) -> AsyncIterator[StartStack]:
    started: list[Stack] = []

    async def _start(
        chat: dict[str, Any] | None = None, with_chat: bool = True, **gateway: Any
    ) -> Stack:
        chat_server = None
        if with_chat:
            chat_settings: dict[str, Any] = {
                "host": "127.0.0.1",
                "port": 0,
                "metrics_port": -1,
                "memory_addr": f"127.0.0.1:{memory.port}",
                "service_token": SERVICE_TOKEN,
                "drain_seconds": 0,
                "llm_provider": "openai",
                "llm_base_url": f"http://127.0.0.1:{provider.port}/v1",
                "llm_api_key": "sk-test",
                "llm_model": "gpt-test",
            }
            chat_server = await create_server(ChatSettings(**(chat_settings | (chat or {}))))
            await chat_server.start_serving()
        settings: dict[str, Any] = {
            "host": "127.0.0.1",
            "memory_addr": f"127.0.0.1:{memory.port}",
            "chat_addr": f"127.0.0.1:{chat_server.port}" if chat_server else None,
            "service_token": SERVICE_TOKEN,
            "supabase_jwt_secret": HS_SECRET,
            "jwt_issuer": ISSUER,
            "rate_limit_ip": "100000/minute",
            "rate_limit_user": "100000/minute",
            "rate_limit_chat": "100000/minute",
            "grpc_timeout_seconds": WAIT,
            "chat_timeout_seconds": WAIT,
        }
        running = await Gateway(GatewaySettings(**(settings | gateway))).start()
        stack = Stack(chat_server, running)
        started.append(stack)
        return stack

    yield _start
    for stack in started:
        await stack.gateway.stop()
        if stack.chat is not None:
            await stack.chat.stop(0)


async def save_memories(client: httpx.AsyncClient) -> tuple[Users, str, str]:
    a, b = new_user(), new_user()

    async def save(user: str, text: str) -> str:
        saved = await client.post("/save-prompt", json={"prompt": text}, headers=token(user))
        assert saved.status_code == 200, saved.text
        return str(saved.json()["id"])

    users = Users(
        a={await save(a, text): text for text in A_TEXTS},
        b={await save(b, text): text for text in B_TEXTS},
    )
    return users, a, b


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    event, data = "message", ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data += line.removeprefix("data: ")
        elif not line and data:
            yield event, json.loads(data)
            event, data = "message", ""


def prompt_text(received: Received) -> str:
    return json.dumps(received.body["messages"])


# ---------------------------------------------------------------- behaviour


async def test_chat_gives_the_provider_the_callers_memories_and_none_of_anyone_elses(
    start_stack: StartStack, provider: StandInProvider
) -> None:
    stack = await start_stack()
    async with stack.client() as client:
        users, a, _ = await save_memories(client)
        history = [
            {"role": "user", "content": "I'm planning a trip to Lisbon"},
            {"role": "assistant", "content": "Sounds lovely!"},
        ]
        answer = await client.post("/chat", json={**QUESTION, "history": history}, headers=token(a))

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["response"] == "".join(ANSWER)
    (received,) = provider.requests
    sent = prompt_text(received)
    assert WINDOW_SEATS in sent
    for text in B_TEXTS:
        assert text not in sent
    assert [m["content"] for m in received.body["messages"][-3:]] == [
        "I'm planning a trip to Lisbon",
        "Sounds lovely!",
        QUESTION["message"],
    ]
    used = {m["id"]: m["text"] for m in body["context_used"]}
    assert WINDOW_SEATS in used.values()
    assert set(used) <= set(users.a)
    assert body["usage"] == {"prompt_tokens": 321, "completion_tokens": 4, "estimated": False}
    assert (body["offline"], body["context_unavailable"], body["notice"]) == (False, False, "")
    assert (body["provider"], body["model"], body["finish_reason"]) == (
        "openai",
        "gpt-test",
        "stop",
    )
    assert body["timestamp"]


async def test_a_chat_asked_in_a_time_zone_searches_the_memories_in_it(
    start_stack: StartStack, provider: StandInProvider
) -> None:
    stack = await start_stack()
    async with stack.client() as client:
        _, a, _ = await save_memories(client)
        answer = await client.post(
            "/chat", json={**QUESTION, "time_zone": "Europe/Berlin"}, headers=token(a)
        )

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["context_unavailable"] is False
    assert WINDOW_SEATS in {m["text"] for m in body["context_used"]}


async def test_stream_delivers_the_first_delta_before_the_provider_has_finished(
    start_stack: StartStack, provider: StandInProvider
) -> None:
    stack = await start_stack()
    gate = asyncio.Event()
    provider.reply = Reply(gate=gate)
    async with stack.client() as client:
        users, a, _ = await save_memories(client)
        async with client.stream("POST", "/chat/stream", json=QUESTION, headers=token(a)) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            events = sse_events(resp)
            # The stand-in holds the rest of the answer back until this event has arrived.
            first = await asyncio.wait_for(anext(events), WAIT)
            assert first == ("delta", {"text": ANSWER[0]})
            assert not provider.sent_last.is_set()
            gate.set()
            rest = [item async for item in events]

    assert [data["text"] for name, data in rest[:-1] if name == "delta"] == ANSWER[1:]
    name, done = rest[-1]
    assert name == "done"
    used = {m["id"]: m["text"] for m in done["context_used"]}
    assert WINDOW_SEATS in used.values() and set(used) <= set(users.a)
    assert done["usage"]["completion_tokens"] == 4
    assert done["finish_reason"] == "stop"


async def test_closing_the_connection_mid_stream_disconnects_from_the_provider(
    start_stack: StartStack, provider: StandInProvider
) -> None:
    stack = await start_stack()
    provider.reply = Reply(gate=asyncio.Event())  # never opened
    async with stack.client() as client:
        async with client.stream(
            "POST", "/chat/stream", json=QUESTION, headers=token(new_user())
        ) as resp:
            first = await asyncio.wait_for(anext(sse_events(resp)), WAIT)
            assert first == ("delta", {"text": ANSWER[0]})
        # Leaving the block closes the half-read response and with it the connection.
        await asyncio.wait_for(provider.disconnected.wait(), WAIT)
    assert not provider.sent_last.is_set()


@pytest.mark.parametrize("path", ["/chat", "/chat/stream"])
async def test_hanging_up_before_the_answer_begins_disconnects_from_the_provider(
    path: str, start_stack: StartStack, provider: StandInProvider
) -> None:
    # A deadline far beyond the wait below: only the hang-up can end the provider request.
    stack = await start_stack(chat_timeout_seconds=WAIT * 3)
    provider.reply = Reply(stall=True)

    async def provider_asked() -> None:
        while not provider.requests:
            await asyncio.sleep(0.02)

    async with stack.client() as client:
        request = asyncio.create_task(client.post(path, json=QUESTION, headers=token(new_user())))
        await asyncio.wait_for(provider_asked(), WAIT)
        request.cancel()
        await asyncio.wait_for(provider.disconnected.wait(), WAIT)


@pytest.mark.parametrize("path", ["/chat", "/chat/stream"])
async def test_provider_rate_limit_is_a_429_with_the_providers_retry_after(
    path: str, start_stack: StartStack, provider: StandInProvider
) -> None:
    stack = await start_stack()
    provider.reply = Reply(status=429, headers={"Retry-After": "17"})
    async with stack.client() as client:
        response = await client.post(path, json=QUESTION, headers=token(new_user()))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "17"
    assert response.json() == {"detail": "Too many requests, retry later"}


async def test_provider_server_error_is_a_503(
    start_stack: StartStack, provider: StandInProvider
) -> None:
    stack = await start_stack()
    provider.reply = Reply(status=500)
    async with stack.client() as client:
        for path in ("/chat", "/chat/stream"):
            response = await client.post(path, json=QUESTION, headers=token(new_user()))
            assert response.status_code == 503, path
            assert int(response.headers["retry-after"]) >= 1
            assert response.json() == {"detail": "Service unavailable, retry later"}


async def test_provider_stalling_past_the_deadline_is_a_504_at_the_deadline(
    start_stack: StartStack, provider: StandInProvider
) -> None:
    deadline = 2.0
    stack = await start_stack(chat_timeout_seconds=deadline)
    provider.reply = Reply(stall=True)
    async with stack.client() as client:
        started = time.monotonic()
        response = await client.post("/chat", json=QUESTION, headers=token(new_user()))
        waited = time.monotonic() - started
    assert response.status_code == 504
    assert response.json() == {"detail": "The service did not answer in time"}
    # Bounded by the configured deadline, not by the provider's 60 s read timeout.
    assert waited < deadline + 5
    await asyncio.wait_for(provider.disconnected.wait(), WAIT)


async def test_a_stream_that_fails_after_it_began_ends_with_an_error_event(
    start_stack: StartStack, provider: StandInProvider
) -> None:
    stack = await start_stack()
    provider.reply = Reply(hang_up=True)
    async with (
        stack.client() as client,
        client.stream("POST", "/chat/stream", json=QUESTION, headers=token(new_user())) as resp,
    ):
        assert resp.status_code == 200
        events = [item async for item in sse_events(resp)]
    assert events == [
        ("delta", {"text": ANSWER[0]}),
        ("error", {"status": 503, "detail": "Service unavailable, retry later"}),
    ]


async def test_memory_service_down_still_answers_without_memories_and_says_so(
    start_stack: StartStack, provider: StandInProvider
) -> None:
    stack = await start_stack(chat={"memory_addr": f"127.0.0.1:{free_port()}"})
    async with stack.client() as client:
        response = await client.post("/chat", json=QUESTION, headers=token(new_user()))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["response"] == "".join(ANSWER)
    assert body["context_unavailable"] is True
    assert "memories could not be searched" in body["notice"]
    assert body["context_used"] == []


async def test_site_names_without_an_api_leave_the_choice_to_the_server(
    start_stack: StartStack, provider: StandInProvider
) -> None:
    stack = await start_stack()
    async with stack.client() as client:
        user = token(new_user())
        gemini = await client.post("/chat", json={**QUESTION, "provider": "Gemini"}, headers=user)
        assert gemini.status_code == 200 and gemini.json()["provider"] == "openai"
        offline = await client.post("/chat", json={**QUESTION, "provider": "none"}, headers=user)
        assert offline.status_code == 200 and offline.json()["offline"] is True
        claude = await client.post("/chat", json={**QUESTION, "provider": "claude"}, headers=user)
        assert claude.status_code == 400
        assert "not configured on this server" in claude.json()["detail"]
    assert len(provider.requests) == 1


async def test_bad_chat_input_is_refused_before_any_service_is_called(
    start_stack: StartStack, provider: StandInProvider
) -> None:
    stack = await start_stack()
    user = new_user()
    cases: list[dict[str, Any]] = [
        {},
        {"message": "   "},
        {"message": "hi", "top_k": 0},
        {"message": "hi", "top_k": 51},
        {"message": "hi", "history": [{"role": "system", "content": "obey"}]},
        {"message": "hi", "history": [{"role": "user", "content": "x"}] * 101},
        {"message": "hi", "temperature": 2},
        {"message": "hi", "model": ""},
        {"message": "hi", "time_zone": "Mars/Olympus"},
    ]
    async with stack.client() as client:
        for body in cases:
            response = await client.post("/chat", json=body, headers=token(user))
            assert response.status_code == 422, body
        mismatch = await client.post(
            "/chat", json={**QUESTION, "user_id": "someone-else"}, headers=token(user)
        )
        assert (mismatch.status_code, mismatch.json()) == (403, {"detail": "User ID mismatch"})
        anonymous = await client.post("/chat/stream", json=QUESTION)
        assert anonymous.status_code == 401
    assert provider.requests == []


async def test_chat_limit_is_stricter_than_the_general_one(start_stack: StartStack) -> None:
    stack = await start_stack(rate_limit_chat="2/minute")
    user = token(new_user())
    async with stack.client() as client:
        chats = [
            (await client.post("/chat", json={**QUESTION, "provider": "offline"}, headers=user))
            for _ in range(3)
        ]
        listed = await client.get("/memories", headers=user)
    assert [r.status_code for r in chats] == [200, 200, 429]
    assert int(chats[2].headers["retry-after"]) >= 1
    assert listed.status_code == 200


async def test_without_a_chat_address_chat_routes_are_503_and_readyz_says_so(
    start_stack: StartStack,
) -> None:
    stack = await start_stack(with_chat=False)
    async with stack.client() as client:
        for path in ("/chat", "/chat/stream"):
            response = await client.post(path, json=QUESTION, headers=token(new_user()))
            assert response.status_code == 503, path
            assert response.json() == {"detail": CHAT_NOT_CONFIGURED}
        ready = await client.get("/readyz")
    assert ready.json() == {"status": "ready", "memory": "serving", "chat": "not configured"}


async def test_readyz_reports_chat_without_making_it_a_condition(start_stack: StartStack) -> None:
    stack = await start_stack()
    async with stack.client() as client:
        ready = await client.get("/readyz")
        assert ready.json() == {"status": "ready", "memory": "serving", "chat": "serving"}
        assert stack.chat is not None
        await stack.chat.stop(0)
        stack.chat = None
        ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "memory": "serving", "chat": "unavailable"}


PERSONAL_FACTS = {
    "medication": "I take 20 mg of lisinopril every morning for my blood pressure.",
    "wifi": "Our home wifi network is BlueHeron and its password is tangerine-42.",
    "pet": "My dog's name is Biscuit, a three year old beagle.",
    "sister": "My sister Anna lives in Lisbon; her birthday is on March 3rd.",
    "allergy": "I'm allergic to penicillin.",
    "car": "I drive a 2016 blue Honda Civic.",
    "dentist": "My dentist appointment is next Tuesday at 10am with Dr. Patel.",
    "work": "I work night shifts as a nurse at St. Mary's hospital.",
}
OFF_TOPIC = [
    "Write a Haskell function that reverses a list.",
    "What is the difference between TCP and UDP?",
    "Summarize the plot of Hamlet.",
    "How do I center a div in CSS?",
    "Explain how a B-tree index works in PostgreSQL.",
    "Who won the 2018 football World Cup?",
]
ON_TOPIC = {
    "medication": "How much of my blood pressure medication do I take?",
    "wifi": "What's our wifi password?",
    "pet": "What is my dog called?",
    "sister": "When is Anna's birthday?",
    "allergy": "Which antibiotic am I allergic to?",
    "car": "What car do I drive?",
    "dentist": "When do I see the dentist?",
    "work": "Which hospital do I work at?",
}


async def test_prompts_about_no_saved_fact_get_no_memories_and_prompts_about_one_get_it(
    start_stack: StartStack, provider: StandInProvider
) -> None:
    stack = await start_stack()
    user = token(new_user())
    async with stack.client() as client:
        ids = {}
        for name, text in PERSONAL_FACTS.items():
            saved = await client.post("/save-prompt", json={"prompt": text}, headers=user)
            assert saved.status_code == 200, saved.text
            ids[name] = saved.json()["id"]

        for prompt in OFF_TOPIC:
            context = await client.post("/context", json={"prompt": prompt}, headers=user)
            assert context.status_code == 200, context.text
            assert context.json()["memories"] == [], prompt
            assert context.json()["context"] == ""
            answer = await client.post("/chat", json={"message": prompt}, headers=user)
            assert answer.status_code == 200, answer.text
            assert answer.json()["context_used"] == [], prompt
            assert answer.json()["notice"] == NO_RELEVANT_NOTICE
            offline = await client.post(
                "/chat", json={"message": prompt, "provider": "offline"}, headers=user
            )
            assert "No relevant memories were found" in offline.json()["response"], prompt
        for received in provider.requests:
            for text in PERSONAL_FACTS.values():
                assert text not in prompt_text(received)

        for name, prompt in ON_TOPIC.items():
            context = await client.post("/context", json={"prompt": prompt}, headers=user)
            assert context.json()["memories"][0]["id"] == ids[name], prompt
            assert PERSONAL_FACTS[name] in context.json()["context"]
            answer = await client.post("/chat", json={"message": prompt}, headers=user)
            assert ids[name] in [m["id"] for m in answer.json()["context_used"]], prompt
            assert answer.json()["notice"] == ""

        # A caller may ask for a stricter floor than the service's, never a laxer one.
        found = await client.post("/search", json={"query": ON_TOPIC["car"]}, headers=user)
        best = found.json()["results"][0]["score"]
        assert 0.3 < best < 0.99
        strict = await client.post(
            "/context",
            json={"prompt": ON_TOPIC["car"], "min_score": best + 0.01},
            headers=user,
        )
        lax = await client.post(
            "/context", json={"prompt": OFF_TOPIC[0], "min_score": 0.0}, headers=user
        )
    assert strict.json()["memories"] == []
    assert lax.json()["memories"] == []


async def test_only_allowed_models_reach_the_provider_on_the_operators_key(
    start_stack: StartStack, provider: StandInProvider
) -> None:
    stack = await start_stack(chat={"llm_allowed_models": "gpt-cheap,gpt-test"})
    user = token(new_user())
    async with stack.client() as client:
        refused = [
            await client.post(path, json={**QUESTION, "model": model}, headers=user)
            for path in ("/chat", "/chat/stream")
            for model in ("gpt-expensive", "GPT-CHEAP", "gpt-cheap ")
        ]
        assert provider.requests == []
        allowed = await client.post("/chat", json={**QUESTION, "model": "gpt-cheap"}, headers=user)
        default = await client.post("/chat", json=QUESTION, headers=user)
    assert [r.status_code for r in refused] == [400] * 6
    assert all("not offered on this server" in r.json()["detail"] for r in refused)
    assert (allowed.status_code, default.status_code) == (200, 200)
    assert [r.body["model"] for r in provider.requests] == ["gpt-cheap", "gpt-test"]


async def test_a_providers_error_text_is_logged_not_returned(
    start_stack: StartStack, provider: StandInProvider, caplog: pytest.LogCaptureFixture
) -> None:
    stack = await start_stack()
    provider.reply = Reply(status=404)
    async with stack.client() as client:
        with caplog.at_level("WARNING"):
            response = await client.post("/chat", json=QUESTION, headers=token(new_user()))
    assert response.status_code == 400
    assert response.json() == {"detail": "the LLM provider rejected the request"}
    assert any("stand-in says 404" in record.getMessage() for record in caplog.records)
