"""Property-based fuzzing of the request models: whatever strings, numbers and dates a client
sends, a model either refuses them with a ValidationError (a 422) or holds values every
service can take: text that encodes as UTF-8, dates a protobuf Timestamp can carry, numbers
within their limits, and a message that serializes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from gateway import conversions as conv
from gateway import schemas
from service_kit.limits import MAX_TOP_K

# Every code point, lone surrogates and NUL included: JSON can carry them all.
any_text = st.text(alphabet=st.characters(codec=None, categories=None), max_size=40)
odd_text = st.sampled_from(["\ud800", "\udfff", "\x00", "\x07", "\u202e", "\ufeff", " ", ""])
text = st.one_of(any_text, odd_text, st.builds(lambda a, b: a + b, any_text, odd_text))
numbers = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
datetimes = st.one_of(
    st.datetimes(timezones=st.one_of(st.none(), offsets)).map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+05:00", "9999-12-31T23:30:00-01:00"]),
    numbers,
    text,
)
scalars = st.one_of(text, numbers, st.none())
filters = st.fixed_dictionaries(
    {},
    optional={
        "providers": st.lists(scalars, max_size=3),
        "conversation_id": scalars,
        "kind": st.one_of(st.sampled_from(["prompt", "response"]), scalars),
        "created_after": datetimes,
        "created_before": datetimes,
    },
)
metadata = st.dictionaries(text, st.one_of(text, numbers), max_size=3)
common = {
    "user_id": scalars,
    "conversation_id": scalars,
    "message_id": scalars,
    "url": scalars,
    "metadata": metadata,
    "provider": scalars,
}
bodies: dict[type[BaseModel], Any] = {
    schemas.SavePrompt: st.fixed_dictionaries({"prompt": text}, optional=common),
    schemas.SaveResponse: st.fixed_dictionaries(
        {"response": text},
        optional={**common, "prompt_id": scalars, "response_message_id": scalars},
    ),
    schemas.SearchQuery: st.fixed_dictionaries(
        {"query": text},
        optional={"top_k": numbers, "mode": scalars, "filters": filters, "user_id": scalars},
    ),
    schemas.ContextQuery: st.fixed_dictionaries(
        {"prompt": text},
        optional={"top_k": numbers, "max_tokens": numbers, "filters": filters},
    ),
    schemas.ChatQuery: st.fixed_dictionaries(
        {"message": text},
        optional={
            "top_k": numbers,
            "provider": scalars,
            "model": scalars,
            "history": st.lists(
                st.fixed_dictionaries(
                    {"role": st.sampled_from(["user", "assistant", "system"]), "content": text}
                ),
                max_size=3,
            ),
        },
    ),
}


def strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, BaseModel):
        return strings_in(value.model_dump())
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in strings_in(k) + strings_in(v)]
    if isinstance(value, list | tuple):
        return [s for item in value for s in strings_in(item)]
    return []


def to_messages(body: BaseModel) -> list[Any]:
    if isinstance(body, schemas.SavePrompt):
        return [conv.save_prompt_to_pb(body, body.message_id or "")]
    if isinstance(body, schemas.SaveResponse):
        return [conv.save_response_to_pb(body, body.response_message_id or "")]
    if isinstance(body, schemas.SearchQuery | schemas.ContextQuery):
        query = body.query if isinstance(body, schemas.SearchQuery) else body.prompt
        return [conv.search_to_pb(query, body.top_k, body.mode, body.filters)]
    assert isinstance(body, schemas.ChatQuery)
    return [conv.chat_to_pb(body)]


@pytest.mark.parametrize("model", list(bodies), ids=lambda m: m.__name__)
def test_a_request_model_refuses_cleanly_or_holds_values_every_service_takes(
    model: type[BaseModel],
) -> None:
    @given(bodies[model])
    @settings(max_examples=300, deadline=None, database=None)
    def check(raw: dict[str, Any]) -> None:
        try:
            body = model.model_validate(raw)
        except ValidationError:
            return
        for value in strings_in(body):
            value.encode("utf-8")
            assert "\x00" not in value
        filters = getattr(body, "filters", None)
        for when in (filters.created_after, filters.created_before) if filters else ():
            if when is not None:
                assert when.tzinfo is UTC
                assert datetime(1970, 1, 1, tzinfo=UTC) <= when
        top_k = getattr(body, "top_k", 1)
        assert 1 <= top_k <= MAX_TOP_K
        for message in to_messages(body):
            assert message.SerializeToString()

    check()


@given(st.text(alphabet=st.characters(codec=None, categories=None), min_size=1, max_size=60))
@settings(max_examples=300, deadline=None, database=None)
def test_captured_text_is_kept_with_replacement_characters_identifiers_refused(
    typed: str,
) -> None:
    expected = "".join("\ufffd" if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in typed)
    if expected.strip():
        assert schemas.SavePrompt(prompt=typed).prompt == expected
    bad = any(
        c in "\x7f" or c < " " or "\x80" <= c <= "\x9f" or "\ud800" <= c <= "\udfff" for c in typed
    )
    try:
        schemas.SavePrompt(prompt="p", conversation_id=typed)
    except ValidationError:
        assert bad
    else:
        assert not bad


@pytest.mark.parametrize(
    "when",
    [
        "0001-01-01T00:00:00+05:00",
        "9999-12-31T23:00:00-05:00",
        "1969-12-31T23:59:59+00:00",
        "0001-01-01T00:00:00",
    ],
)
def test_dates_outside_what_the_store_keeps_are_refused_after_conversion_to_utc(
    when: str,
) -> None:
    with pytest.raises(ValidationError):
        schemas.Filters(created_after=when)  # type: ignore[arg-type]


def test_dates_at_the_edges_are_kept_in_utc() -> None:
    filters = schemas.Filters(
        created_after="1970-01-01T05:00:00+05:00",  # type: ignore[arg-type]
        created_before="9999-12-31T22:00:00-01:59",  # type: ignore[arg-type]
    )
    assert filters.created_after == datetime(1970, 1, 1, tzinfo=UTC)
    assert filters.created_before == datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
