"""Saving what the user typed and the answer they got."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header

from gateway.deps import CurrentCallerDep, MemoryClientDep, check_user_id
from gateway.schemas import Memory, SavePrompt, SaveResponse

router = APIRouter(tags=["memories"])

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=512)]


@router.post("/save-prompt", response_model=Memory)
async def save_prompt(
    body: SavePrompt,
    caller: CurrentCallerDep,
    memory: MemoryClientDep,
    idempotency_key: IdempotencyKey = None,
) -> Memory:
    """Store a prompt. A `message_id` (or `Idempotency-Key` header) makes retries return the
    same memory instead of storing a duplicate."""
    check_user_id(caller, body.user_id)
    return await memory.save_prompt(caller, body, body.message_id or idempotency_key or "")


@router.post("/save-response", response_model=Memory)
async def save_response(
    body: SaveResponse,
    caller: CurrentCallerDep,
    memory: MemoryClientDep,
    idempotency_key: IdempotencyKey = None,
) -> Memory:
    """Store an answer and link it to the prompt named by `prompt_id` or `message_id`."""
    check_user_id(caller, body.user_id)
    return await memory.save_response(
        caller, body, body.response_message_id or idempotency_key or ""
    )
