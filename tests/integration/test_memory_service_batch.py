"""SaveMemories over real gRPC against the real model and embedded store: one store write per
batch, ids brought from an export scoped to their user, and refusals that stay per item."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from memory_service import metrics
from memory_service.models import scoped_client_id
from memory_service.server import MemoryServer
from protos.memory.v1 import memory_pb2 as pb
from protos.memory.v1 import memory_pb2_grpc
from service_kit.identity import Identity, outgoing_metadata
from tests.support.auth import new_user
from tests.support.stack import SERVICE_TOKEN


@pytest.fixture
async def stub(memory_server: MemoryServer) -> AsyncIterator[memory_pb2_grpc.MemoryServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{memory_server.port}") as channel:
        yield memory_pb2_grpc.MemoryServiceStub(channel)


def caller(user: str) -> tuple[tuple[str, str], ...]:
    return outgoing_metadata(Identity(user), SERVICE_TOKEN)


def upserts() -> float:
    for family in metrics.STORE_SECONDS.collect():
        for sample in family.samples:
            if sample.name.endswith("_count") and sample.labels.get("operation") == "upsert":
                return sample.value
    return 0.0


async def test_a_batch_is_embedded_and_written_once(
    stub: memory_pb2_grpc.MemoryServiceStub,
) -> None:
    user = new_user()
    items = [
        pb.SaveItem(text=f"note number {n} about gardening", message_id=f"g{n}") for n in range(40)
    ]
    before = upserts()
    reply = await stub.SaveMemories(pb.SaveMemoriesRequest(items=items), metadata=caller(user))
    assert upserts() - before == 1
    assert [r.status for r in reply.results] == [pb.SAVE_STATUS_STORED] * 40
    found = await stub.Search(
        pb.SearchRequest(query="note number 7 about gardening", top_k=1), metadata=caller(user)
    )
    assert found.results[0].memory.message_id == "g7"


async def test_two_users_each_save_an_item_with_the_same_client_id_and_neither_learns_of_the_other(
    stub: memory_pb2_grpc.MemoryServiceStub,
) -> None:
    alice, bob = new_user(), new_user()
    client_id = str(uuid.uuid4())
    item = pb.SaveItem(text="Saved without a message id", id=client_id)
    first = await stub.SaveMemories(pb.SaveMemoriesRequest(items=[item]), metadata=caller(alice))
    assert first.results[0].status == pb.SAVE_STATUS_STORED
    alices = first.results[0].memory.id
    # The id is scoped to its user; what it maps to needs nobody else's memories to compute.
    assert alices == scoped_client_id(alice, client_id)
    again = await stub.SaveMemories(pb.SaveMemoriesRequest(items=[item]), metadata=caller(alice))
    assert again.results[0].status == pb.SAVE_STATUS_ALREADY_PRESENT
    assert again.results[0].memory.id == alices

    bobs_item = pb.SaveItem(text="Bob's own note", id=client_id)
    bobs = await stub.SaveMemories(pb.SaveMemoriesRequest(items=[bobs_item]), metadata=caller(bob))
    # Bob's answer is the one he gets whether or not anyone holds that id.
    assert bobs.results[0].status == pb.SAVE_STATUS_STORED
    assert bobs.results[0].reason == ""
    assert bobs.results[0].memory.id == scoped_client_id(bob, client_id) != alices
    # Alice's own id, brought by Bob, is scoped to Bob as well: no oracle, no overwrite.
    borrowed = pb.SaveItem(text="Bob claims Alice's id", id=alices)
    claimed = await stub.SaveMemories(
        pb.SaveMemoriesRequest(items=[borrowed]), metadata=caller(bob)
    )
    assert claimed.results[0].status == pb.SAVE_STATUS_STORED
    assert claimed.results[0].memory.id == scoped_client_id(bob, alices)

    mine = await stub.GetMemory(pb.GetMemoryRequest(id=alices), metadata=caller(alice))
    assert mine.user_id == alice and mine.text == "Saved without a message id"
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await stub.GetMemory(pb.GetMemoryRequest(id=alices), metadata=caller(bob))
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    # The id Alice's memory has (as an export carries it) is hers as it is.
    restored = pb.SaveItem(text="Saved without a message id", id=alices)
    back = await stub.SaveMemories(pb.SaveMemoriesRequest(items=[restored]), metadata=caller(alice))
    assert back.results[0].status == pb.SAVE_STATUS_ALREADY_PRESENT
    assert back.results[0].memory.id == alices
    # A backup restored after everything was deleted keeps the ids it had.
    await stub.DeleteUserMemories(pb.DeleteUserMemoriesRequest(), metadata=caller(alice))
    again = await stub.SaveMemories(
        pb.SaveMemoriesRequest(items=[restored]), metadata=caller(alice)
    )
    assert again.results[0].status == pb.SAVE_STATUS_STORED
    assert again.results[0].memory.id == alices


async def test_an_answer_names_a_prompt_by_the_id_its_item_brought(
    stub: memory_pb2_grpc.MemoryServiceStub,
) -> None:
    user = new_user()
    prompt_id, answer_id = str(uuid.uuid4()), str(uuid.uuid4())
    items = [
        pb.SaveItem(text="Which bus goes to the zoo?", id=prompt_id),
        pb.SaveItem(
            text="The 42.", kind=pb.MEMORY_KIND_RESPONSE, id=answer_id, prompt_id=prompt_id
        ),
    ]
    reply = await stub.SaveMemories(pb.SaveMemoriesRequest(items=items), metadata=caller(user))
    assert [r.status for r in reply.results] == [pb.SAVE_STATUS_STORED] * 2
    prompt, answer = (r.memory for r in reply.results)
    assert answer.prompt_id == prompt.id == scoped_client_id(user, prompt_id)
    # A later batch names the same prompt the same way.
    later = pb.SaveItem(
        text="Or the 7.", kind=pb.MEMORY_KIND_RESPONSE, message_id="later", prompt_id=prompt_id
    )
    linked = await stub.SaveMemories(pb.SaveMemoriesRequest(items=[later]), metadata=caller(user))
    assert linked.results[0].status == pb.SAVE_STATUS_STORED
    assert linked.results[0].memory.prompt_id == prompt.id


async def test_unreadable_items_are_refused_alone_and_oversized_batches_whole(
    stub: memory_pb2_grpc.MemoryServiceStub,
) -> None:
    user = new_user()
    items = [
        pb.SaveItem(text="fine", message_id="ok"),
        pb.SaveItem(text="odd kind", kind=7),  # type: ignore[arg-type]
        pb.SaveItem(text="not a uuid", id="not-a-uuid"),
        pb.SaveItem(text="an answer naming nothing", kind=pb.MEMORY_KIND_RESPONSE),
    ]
    reply = await stub.SaveMemories(pb.SaveMemoriesRequest(items=items), metadata=caller(user))
    assert [r.status for r in reply.results] == [
        pb.SAVE_STATUS_STORED,
        pb.SAVE_STATUS_REFUSED,
        pb.SAVE_STATUS_REFUSED,
        pb.SAVE_STATUS_REFUSED,
    ]
    assert [r.reason for r in reply.results[1:]] == [
        "unknown memory kind 7",
        "id 'not-a-uuid' is not a UUID",
        "a response names its prompt: prompt_id or prompt_message_id",
    ]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.SaveMemories(
            pb.SaveMemoriesRequest(items=[pb.SaveItem(text="x")] * 257), metadata=caller(user)
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 256 items" in (refused.value.details() or "")


async def test_without_message_ids_the_same_text_is_one_memory_unless_it_was_edited(
    stub: memory_pb2_grpc.MemoryServiceStub,
) -> None:
    user = new_user()
    text = pb.SaveItem(text="Remember the spare key is under the mat")
    first = await stub.SaveMemories(pb.SaveMemoriesRequest(items=[text]), metadata=caller(user))
    again = await stub.SaveMemories(
        pb.SaveMemoriesRequest(items=[text, text]), metadata=caller(user)
    )
    original = first.results[0].memory.id
    assert [r.status for r in again.results] == [pb.SAVE_STATUS_ALREADY_PRESENT] * 2
    assert {r.memory.id for r in again.results} == {original}

    await stub.UpdateMemory(
        pb.UpdateMemoryRequest(id=original, text="The spare key moved to the neighbour"),
        metadata=caller(user),
    )
    after_edit = await stub.SaveMemories(
        pb.SaveMemoriesRequest(items=[text]), metadata=caller(user)
    )
    assert after_edit.results[0].status == pb.SAVE_STATUS_STORED
    assert after_edit.results[0].memory.id != original
    assert after_edit.results[0].memory.text == text.text
