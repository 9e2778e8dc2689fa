"""POST /memories/batch over real sockets: per-item results, links inside a batch, original
times, idempotency, and the batch's own budget and body cap."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx

from tests.support.auth import Keys, bearer, new_user
from tests.support.stack import StartGateway


async def test_a_mixed_batch_gets_one_result_per_item_and_stores_only_the_valid_ones(
    api: httpx.AsyncClient, keys: Keys
) -> None:
    user = new_user()
    auth = bearer(keys.es256(user))
    items = [
        {"prompt": "Which train goes to Lyon?", "message_id": "m-1", "conversation_id": "c-1"},
        {"prompt": "   ", "message_id": "m-empty"},
        {"prompt": "Which train goes to Lyon? (again)", "message_id": "m-1"},
        {
            "response": "The TGV from Gare de Lyon, hourly.",
            "message_id": "m-1",
            "response_message_id": "m-2",
        },
        {"response": "An answer to nothing", "message_id": "m-none", "response_message_id": "m-3"},
        "not an object",
    ]
    response = await api.post("/memories/batch", json={"items": items}, headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    results = body["results"]
    assert [r["status"] for r in results] == [
        "stored",
        "refused",
        "already_present",
        "stored",
        "refused",
        "refused",
    ]
    assert (body["stored"], body["already_present"], body["refused"]) == (2, 1, 3)
    assert "must not be empty" in results[1]["reason"]
    assert results[4]["reason"] == "prompt 'm-none' not found"
    assert "JSON object" in results[5]["reason"]
    prompt_id, answer_id = results[0]["id"], results[3]["id"]
    # The repeated message id names the same memory, not a second one.
    assert results[2]["id"] == prompt_id

    prompt = (await api.get(f"/memories/{prompt_id}", headers=auth)).json()
    answer = (await api.get(f"/memories/{answer_id}", headers=auth)).json()
    assert prompt["text"] == "Which train goes to Lyon?"
    assert prompt["response_id"] == answer_id
    assert answer["prompt_id"] == prompt_id
    assert answer["kind"] == "response"
    # The answer takes its prompt's conversation, as /save-response does.
    assert answer["conversation_id"] == "c-1"
    listed = (await api.get("/memories", headers=auth)).json()["memories"]
    assert sorted(m["id"] for m in listed) == sorted([prompt_id, answer_id])

    again = await api.post("/memories/batch", json={"items": items[:1] + items[3:4]}, headers=auth)
    assert [r["status"] for r in again.json()["results"]] == ["already_present"] * 2
    assert [r["id"] for r in again.json()["results"]] == [prompt_id, answer_id]


async def test_an_answer_links_to_a_prompt_saved_in_an_earlier_batch(
    api: httpx.AsyncClient, keys: Keys
) -> None:
    auth = bearer(keys.es256(new_user()))
    first = await api.post(
        "/memories/batch", json={"items": [{"prompt": "Best pizza dough?", "message_id": "p"}]}
    )
    assert first.status_code == 401
    first = await api.post(
        "/memories/batch",
        json={"items": [{"prompt": "Best pizza dough?", "message_id": "p"}]},
        headers=auth,
    )
    prompt_id = first.json()["results"][0]["id"]
    second = await api.post(
        "/memories/batch",
        json={"items": [{"response": "72 h cold ferment.", "prompt_id": prompt_id}]},
        headers=auth,
    )
    answer_id = second.json()["results"][0]["id"]
    assert second.json()["results"][0]["status"] == "stored"
    prompt = (await api.get(f"/memories/{prompt_id}", headers=auth)).json()
    assert prompt["response_id"] == answer_id


async def test_created_at_is_kept_and_refused_per_item_when_future_pre_1970_or_naive(
    api: httpx.AsyncClient, keys: Keys
) -> None:
    auth = bearer(keys.es256(new_user()))
    spring = datetime(2024, 4, 2, 9, 30, tzinfo=UTC)
    future = datetime.now(UTC) + timedelta(days=2)
    items = [
        {"prompt": "Tulips or daffodils?", "message_id": "t1", "created_at": spring.isoformat()},
        {"prompt": "From the future", "message_id": "t2", "created_at": future.isoformat()},
        {"prompt": "From 1969", "message_id": "t3", "created_at": "1969-07-20T20:17:00+00:00"},
        {"prompt": "No timezone", "message_id": "t4", "created_at": "2024-04-02T09:30:00"},
        {"prompt": "Not a time", "message_id": "t5", "created_at": "last spring"},
        {"prompt": "Saved now", "message_id": "t6"},
    ]
    before = datetime.now(UTC)
    response = await api.post("/memories/batch", json={"items": items}, headers=auth)
    results = response.json()["results"]
    assert [r["status"] for r in results] == [
        "stored",
        "refused",
        "refused",
        "refused",
        "refused",
        "stored",
    ]
    assert "is in the future" in results[1]["reason"]
    assert "before 1970" in results[2]["reason"]
    assert results[3]["reason"] == "created_at: Input should have timezone info"
    assert results[4]["reason"].startswith("created_at: Input should be a valid datetime")

    kept = (await api.get(f"/memories/{results[0]['id']}", headers=auth)).json()
    assert datetime.fromisoformat(kept["created_at"]) == spring
    now = (await api.get(f"/memories/{results[5]['id']}", headers=auth)).json()
    assert datetime.fromisoformat(now["created_at"]) >= before - timedelta(seconds=1)

    window = {"created_after": "2024-04-01T00:00:00Z", "created_before": "2024-04-30T00:00:00Z"}
    found = (await api.get("/memories", params=window, headers=auth)).json()["memories"]
    assert [m["id"] for m in found] == [results[0]["id"]]


async def test_single_saves_do_not_take_created_at(api: httpx.AsyncClient, keys: Keys) -> None:
    auth = bearer(keys.es256(new_user()))
    response = await api.post(
        "/save-prompt",
        json={"prompt": "Backdated?", "created_at": "2020-01-01T00:00:00Z"},
        headers=auth,
    )
    assert response.status_code == 422


async def test_batch_items_count_against_their_own_budget(
    start_gateway: StartGateway, keys: Keys
) -> None:
    gateway = await start_gateway(rate_limit_batch_items="5/minute", rate_limit_user="10/minute")
    auth = bearer(keys.es256(new_user()))
    items = [{"prompt": f"budget item {n}", "message_id": f"b{n}"} for n in range(3)]
    async with gateway.client() as client:
        first = await client.post("/memories/batch", json={"items": items}, headers=auth)
        second = await client.post("/memories/batch", json={"items": items[:2]}, headers=auth)
        third = await client.post("/memories/batch", json={"items": items[:1]}, headers=auth)
    assert first.status_code == 200, first.text
    assert first.headers["RateLimit-Remaining"] == "2"
    assert second.status_code == 200
    assert third.status_code == 429
    assert int(third.headers["Retry-After"]) >= 1


async def test_refused_batch_requests_count_against_the_user_limit(
    start_gateway: StartGateway, keys: Keys, api: httpx.AsyncClient
) -> None:
    gateway = await start_gateway(rate_limit_user="3/minute")
    owner = new_user()
    created = await api.post(
        "/keys", json={"name": "reader", "scopes": ["read"]}, headers=bearer(keys.es256(owner))
    )
    read_only = bearer(created.json()["key"])
    items = [{"prompt": "refused for its scope", "message_id": "scope-1"}]
    async with gateway.client() as client:
        refused = [
            (await client.post("/memories/batch", json={"items": items}, headers=read_only))
            for _ in range(8)
        ]
        invalid_user = bearer(keys.es256(new_user()))
        invalid = [
            (await client.post("/memories/batch", json={"items": []}, headers=invalid_user))
            for _ in range(5)
        ]
    assert [r.status_code for r in refused] == [403] * 3 + [429] * 5
    assert all(int(r.headers["Retry-After"]) >= 1 for r in refused[3:])
    assert [r.status_code for r in invalid] == [422] * 3 + [429] * 2


async def test_two_users_each_save_an_item_with_the_same_id_and_neither_learns_of_the_other(
    api: httpx.AsyncClient, keys: Keys
) -> None:
    alice, bob = bearer(keys.es256(new_user())), bearer(keys.es256(new_user()))
    shared = str(uuid.uuid4())
    first = await api.post(
        "/memories/batch", json={"items": [{"prompt": "Alice's note", "id": shared}]}, headers=alice
    )
    second = await api.post(
        "/memories/batch", json={"items": [{"prompt": "Bob's note", "id": shared}]}, headers=bob
    )
    [alices], [bobs] = first.json()["results"], second.json()["results"]
    # The same answer either way: stored, no reason, an id of one's own.
    assert alices["status"] == bobs["status"] == "stored"
    assert alices["reason"] is None and bobs["reason"] is None
    assert alices["id"] != bobs["id"]
    assert (await api.get(f"/memories/{alices['id']}", headers=bob)).status_code == 404
    assert (await api.get(f"/memories/{bobs['id']}", headers=alice)).status_code == 404
    assert (await api.get(f"/memories/{alices['id']}", headers=alice)).json()["text"] == (
        "Alice's note"
    )
    # Bob bringing Alice's id stores his own memory and leaves hers alone.
    claimed = await api.post(
        "/memories/batch",
        json={"items": [{"prompt": "Bob claims it", "id": alices["id"]}]},
        headers=bob,
    )
    [result] = claimed.json()["results"]
    assert result["status"] == "stored" and result["id"] not in (alices["id"], bobs["id"])
    assert (await api.get(f"/memories/{alices['id']}", headers=alice)).json()["text"] == (
        "Alice's note"
    )


async def test_batch_has_its_own_body_cap(start_gateway: StartGateway, keys: Keys) -> None:
    gateway = await start_gateway(max_body_bytes=2048, max_batch_body_bytes=64 * 1024)
    auth = bearer(keys.es256(new_user()))
    items = [{"prompt": f"{n} " + "x" * 1000, "message_id": f"big{n}"} for n in range(10)]
    async with gateway.client() as client:
        batch = await client.post("/memories/batch", json={"items": items}, headers=auth)
        single = await client.post("/save-prompt", json={"prompt": "y" * 3000}, headers=auth)
        huge = await client.post("/memories/batch", json={"items": items * 7}, headers=auth)
    assert batch.status_code == 200, batch.text
    assert single.status_code == 413
    assert huge.status_code == 413
    assert huge.json()["detail"] == "Request body is larger than 65536 bytes"


async def test_the_limits_a_client_keeps_to_are_stated_without_a_key(
    start_gateway: StartGateway, api: httpx.AsyncClient, keys: Keys
) -> None:
    gateway = await start_gateway(max_body_bytes=2048, max_batch_body_bytes=64 * 1024)
    async with gateway.client() as client:
        assert (await client.get("/limits")).json() == {
            "max_text_chars": 50_000,
            "max_field_chars": 512,
            "max_metadata_entries": 32,
            "max_batch_items": 256,
            "max_body_bytes": 2048,
            "max_batch_body_bytes": 64 * 1024,
        }

    # What it states is what a batch holds to: at each limit stored, one past it refused.
    stated = (await api.get("/limits")).json()
    text, field = stated["max_text_chars"], stated["max_field_chars"]
    items = [
        {"prompt": "x" * text, "message_id": "at-limit"},
        {"prompt": "y" * (text + 1), "message_id": "over-limit"},
        {"prompt": "fits", "message_id": "m" * field},
        {"prompt": "too long an id", "message_id": "n" * (field + 1)},
    ]
    auth = bearer(keys.es256(new_user()))
    response = await api.post("/memories/batch", json={"items": items}, headers=auth)
    assert [r["status"] for r in response.json()["results"]] == [
        "stored",
        "refused",
        "stored",
        "refused",
    ]


async def test_more_than_256_items_are_refused_whole(api: httpx.AsyncClient, keys: Keys) -> None:
    auth = bearer(keys.es256(new_user()))
    items = [{"prompt": f"p{n}"} for n in range(257)]
    response = await api.post("/memories/batch", json={"items": items}, headers=auth)
    assert response.status_code == 422
