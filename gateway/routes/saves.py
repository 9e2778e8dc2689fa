"""Saving what the user typed and the answer they got."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request, Response
from pydantic import ValidationError

from gateway.deps import (
    USER_ID_MISMATCH,
    CurrentCallerDep,
    MemoryClientDep,
    SettingsDep,
    check_user_id,
)
from gateway.ratelimit import RateLimits
from gateway.schemas import (
    BatchPrompt,
    BatchResponse,
    Memory,
    SaveBatch,
    SavePrompt,
    SaveResponse,
    SaveResult,
    SaveResults,
)

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


BATCH_PATH = "/memories/batch"


def _item(raw: Any) -> BatchPrompt | BatchResponse | str:
    """The item as a save body, or why it is not one."""
    if not isinstance(raw, dict):
        return "an item is a JSON object"
    model: type[BatchPrompt | BatchResponse] = BatchResponse if "response" in raw else BatchPrompt
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        return "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'item'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )[:500]


@router.post(BATCH_PATH, response_model=SaveResults)
async def save_batch(
    body: SaveBatch,
    request: Request,
    response: Response,
    caller: CurrentCallerDep,
    memory: MemoryClientDep,
    settings: SettingsDep,
) -> SaveResults:
    """Save up to 256 prompts and answers at once, one result per item in order. Items are
    /save-prompt and /save-response bodies; an answer may name a prompt of the same batch by
    its `message_id`. Items may carry `created_at`, their original time. Counted as a request
    against GATEWAY_RATE_LIMIT_USER, whatever the answer, and per item against
    GATEWAY_RATE_LIMIT_BATCH_ITEMS; message ids make every item idempotent."""
    limits: RateLimits = request.app.state.limits
    decision = await limits.hit(
        limits.per_user_batch_items, "batch", caller.identity.user_id, cost=len(body.items)
    )
    if not decision.allowed:
        raise HTTPException(429, "Too many items, retry later", headers=decision.headers())
    response.headers.update(decision.headers())
    results: list[SaveResult | None] = []
    valid: list[BatchPrompt | BatchResponse] = []
    for raw in body.items:
        item = _item(raw)
        if isinstance(item, str):
            results.append(SaveResult(status="refused", reason=item))
        elif item.user_id is not None and item.user_id != caller.identity.user_id:
            results.append(SaveResult(status="refused", reason=USER_ID_MISMATCH))
        else:
            results.append(None)
            valid.append(item)
    saved = iter(
        await memory.save_batch(caller, valid, settings.batch_timeout_seconds) if valid else []
    )
    merged = [result if result is not None else next(saved) for result in results]
    return SaveResults(
        results=merged,
        stored=sum(r.status == "stored" for r in merged),
        already_present=sum(r.status == "already_present" for r in merged),
        refused=sum(r.status == "refused" for r in merged),
    )
