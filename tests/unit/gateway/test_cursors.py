"""Sealed list cursors: only a cursor this server gave this user opens."""

from __future__ import annotations

import pytest
from fastapi import HTTPException

from gateway.cursors import INVALID_CURSOR, CursorSeal


def refused(seal: CursorSeal, user_id: str, cursor: str) -> None:
    with pytest.raises(HTTPException) as raised:
        seal.open(user_id, cursor)
    assert (raised.value.status_code, raised.value.detail) == (400, INVALID_CURSOR)


def test_a_sealed_cursor_opens_for_its_user_only() -> None:
    seal = CursorSeal("a-server-secret")
    cursor = seal.seal("alice", "1700000000000/3")
    assert seal.open("alice", cursor) == "1700000000000/3"
    refused(seal, "bob", cursor)
    refused(CursorSeal("another-secret"), "alice", cursor)


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        ".",
        "1e18/100000",
        "1e18/100000.",
        "1e18/100000.AAAAAAAAAAAAAAAAAAAAAA",
        "é.ü",
        "1/2.\u00e9",
    ],
)
def test_a_cursor_not_given_out_is_a_400_never_an_error(cursor: str) -> None:
    refused(CursorSeal("a-server-secret"), "alice", cursor)
