"""The caps a client must keep to, stated once for everyone: texts and fields from
service_kit's limits, request bodies from this gateway's settings. Open to unauthenticated
callers, so a client can size its requests before it holds a working key."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.deps import SettingsDep
from gateway.schemas import Limits
from service_kit.limits import (
    MAX_BATCH_ITEMS,
    MAX_FIELD_CHARS,
    MAX_METADATA_ENTRIES,
    MAX_TEXT_CHARS,
)

router = APIRouter(tags=["limits"])

LIMITS_PATH = "/limits"


@router.get(LIMITS_PATH, response_model=Limits)
async def limits(settings: SettingsDep) -> Limits:
    """What a save may hold: a longer text or field is refused, a larger body gets 413."""
    return Limits(
        max_text_chars=MAX_TEXT_CHARS,
        max_field_chars=MAX_FIELD_CHARS,
        max_metadata_entries=MAX_METADATA_ENTRIES,
        max_batch_items=MAX_BATCH_ITEMS,
        max_body_bytes=settings.max_body_bytes,
        max_batch_body_bytes=settings.max_batch_body_bytes,
    )
