import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_USER: _ClassVar[Role]
    ROLE_ASSISTANT: _ClassVar[Role]
ROLE_UNSPECIFIED: Role
ROLE_USER: Role
ROLE_ASSISTANT: Role

class Turn(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: Role
    content: str
    def __init__(self, role: _Optional[_Union[Role, str]] = ..., content: _Optional[str] = ...) -> None: ...

class ChatRequest(_message.Message):
    __slots__ = ("message", "top_k", "history", "provider", "model", "time_zone")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    message: str
    top_k: int
    history: _containers.RepeatedCompositeFieldContainer[Turn]
    provider: str
    model: str
    time_zone: str
    def __init__(self, message: _Optional[str] = ..., top_k: _Optional[int] = ..., history: _Optional[_Iterable[_Union[Turn, _Mapping]]] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., time_zone: _Optional[str] = ...) -> None: ...

class ContextMemory(_message.Message):
    __slots__ = ("id", "text", "score", "provider", "created_at", "truncated")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    score: float
    provider: str
    created_at: _timestamp_pb2.Timestamp
    truncated: bool
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., score: _Optional[float] = ..., provider: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "estimated")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    estimated: bool
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., estimated: _Optional[bool] = ...) -> None: ...

class AnswerDetails(_message.Message):
    __slots__ = ("context_used", "usage", "offline", "context_unavailable", "notice", "provider", "model", "finish_reason")
    CONTEXT_USED_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    context_used: _containers.RepeatedCompositeFieldContainer[ContextMemory]
    usage: Usage
    offline: bool
    context_unavailable: bool
    notice: str
    provider: str
    model: str
    finish_reason: str
    def __init__(self, context_used: _Optional[_Iterable[_Union[ContextMemory, _Mapping]]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., offline: _Optional[bool] = ..., context_unavailable: _Optional[bool] = ..., notice: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., finish_reason: _Optional[str] = ...) -> None: ...

class ChatResponse(_message.Message):
    __slots__ = ("response", "details")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    response: str
    details: AnswerDetails
    def __init__(self, response: _Optional[str] = ..., details: _Optional[_Union[AnswerDetails, _Mapping]] = ...) -> None: ...

class ChatStreamEvent(_message.Message):
    __slots__ = ("delta", "done")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    delta: str
    done: AnswerDetails
    def __init__(self, delta: _Optional[str] = ..., done: _Optional[_Union[AnswerDetails, _Mapping]] = ...) -> None: ...
