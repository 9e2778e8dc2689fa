"""Point ids: message ids as UUIDv5 of user and message id, every other id in its user's own
space, which says whose an id can be without a store or a secret."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memory_service.models import (
    MemoryKind,
    in_users_space,
    memory_point_id,
    new_memory_id,
    scoped_client_id,
    user_scoped_id,
)

users = st.text(min_size=1, max_size=40)


@given(users, users, st.binary(min_size=8, max_size=8))
def test_an_id_in_one_users_space_is_in_no_other(alice: str, bob: str, seed: bytes) -> None:
    memory_id = user_scoped_id(alice, seed)
    assert uuid.UUID(memory_id).version == 4
    assert in_users_space(alice, memory_id)
    assert in_users_space(bob, memory_id) is (alice == bob)


@given(users, users, st.uuids().map(str))
def test_a_brought_id_is_scoped_to_whoever_brings_it(alice: str, bob: str, brought: str) -> None:
    mine, theirs = scoped_client_id(alice, brought), scoped_client_id(bob, brought)
    assert mine == scoped_client_id(alice, brought)
    assert in_users_space(alice, mine) and in_users_space(bob, theirs)
    assert (mine == theirs) is (alice == bob)


def test_text_ids_are_the_users_own_and_message_ids_stay_uuid5() -> None:
    key = b"models-test-id-key"
    text_id = memory_point_id("alice", "", MemoryKind.PROMPT, "I  like TEA", text_key=key)
    assert text_id == memory_point_id("alice", "", MemoryKind.PROMPT, "i like tea", text_key=key)
    assert in_users_space("alice", text_id) and not in_users_space("bob", text_id)
    with pytest.raises(ValueError, match="id key"):
        memory_point_id("alice", "", MemoryKind.PROMPT, "i like tea")
    message = memory_point_id("alice", "m-1")
    assert uuid.UUID(message).version == 5
    assert in_users_space("alice", new_memory_id("alice"))
    assert not in_users_space("alice", "not-a-uuid")
