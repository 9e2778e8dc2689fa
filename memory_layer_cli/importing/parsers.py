"""Read a ChatGPT or Claude data export, or this project's own NDJSON export, one
conversation or memory at a time.

Both services export a zip whose `conversations.json` lists every conversation. ChatGPT
keeps each conversation as a tree of message nodes (an edited prompt starts a new branch);
the branch shown last (`current_node` back to the root) is the one imported. Claude keeps a
flat list of messages. `GET /export` writes one memory per line.

Files are parsed as a stream with byte caps, so a years-long history needs memory for one
conversation at a time, and a zip bomb or a file far larger than any chat history is
refused with a message instead of filling memory or disk. What cannot be read inside an
otherwise good file (a malformed node, message or line) is skipped and counted.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import ijson

EXPORT_MEMBER = "conversations.json"
# Far above any real chat history (a heavy two-year ChatGPT history is a few hundred MB).
MAX_EXPORT_BYTES = 2 * 1024**3
# A zip member expanding more than this many times its compressed size is not a chat export.
MAX_COMPRESSION_RATIO = 200
# One exported memory: its text, metadata and ids, with room for JSON escapes.
MAX_NDJSON_LINE_BYTES = 1024 * 1024

ExportFormat = Literal["conversations", "ndjson"]


class ExportError(ValueError):
    """The file is not an export this importer can read, or is too large to be one."""


@dataclass(frozen=True)
class Message:
    id: str
    role: str  # "user" or "assistant"
    text: str
    created_at: datetime | None = None


@dataclass(frozen=True)
class Exchange:
    """A prompt and the assistant's answer to it (None when the export has none)."""

    prompt: Message
    answer: Message | None


@dataclass(frozen=True)
class Conversation:
    id: str
    title: str
    provider: str
    messages: list[Message]

    def exchanges(self) -> list[Exchange]:
        """Each user message with the assistant messages after it joined into one answer."""
        pairs: list[Exchange] = []
        prompt: Message | None = None
        answer: list[Message] = []

        def close() -> None:
            if prompt is not None:
                text = "\n\n".join(m.text for m in answer)
                reply = Message(answer[0].id, "assistant", text, answer[0].created_at)
                pairs.append(Exchange(prompt, reply if answer else None))

        for message in self.messages:
            if message.role == "user":
                close()
                prompt, answer = message, []
            elif prompt is not None:
                answer.append(message)
        close()
        return pairs


class Skipped(Counter[str]):
    """What was left out of an export, by reason."""


class _Capped(io.RawIOBase):
    """A byte stream that refuses to yield more than `limit` bytes."""

    def __init__(self, raw: IO[bytes], limit: int, what: str) -> None:
        self.raw = raw
        self.limit = limit
        self.what = what
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        self.read_bytes += len(data)
        if self.read_bytes > self.limit:
            raise ExportError(f"{self.what} is larger than {self.limit:,} bytes; not importing it")
        buffer[: len(data)] = data
        return len(data)


@contextmanager
def open_export(path: Path, max_bytes: int = MAX_EXPORT_BYTES) -> Iterator[IO[bytes]]:
    """The export's JSON as a capped binary stream: the zip's conversations.json, or the
    file itself."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = _member(path, archive)
                if member.file_size > max_bytes:
                    raise ExportError(
                        f"{path}: {member.filename} would unpack to {member.file_size:,} "
                        f"bytes, more than the {max_bytes:,} an export may have"
                    )
                ratio_cap = max(member.compress_size, 1) * MAX_COMPRESSION_RATIO
                limit = min(max_bytes, max(ratio_cap, 1024 * 1024))
                with archive.open(member) as raw:
                    # The sizes in a zip's header may lie; the stream itself is counted.
                    yield io.BufferedReader(
                        _Capped(raw, limit, f"{path}: {member.filename} (unpacked)")
                    )
            return
        size = path.stat().st_size
        if size > max_bytes:
            raise ExportError(
                f"{path} is {size:,} bytes, more than the {max_bytes:,} an export may have"
            )
        with path.open("rb") as raw:
            yield io.BufferedReader(_Capped(raw, max_bytes, str(path)))  # type: ignore[arg-type]
    except OSError as exc:
        raise ExportError(f"{path}: {exc.strerror or exc}") from exc
    except zipfile.BadZipFile as exc:
        raise ExportError(f"{path}: a damaged zip: {exc}") from exc


def _member(path: Path, archive: zipfile.ZipFile) -> zipfile.ZipInfo:
    members = [m for m in archive.infolist() if Path(m.filename).name == EXPORT_MEMBER]
    if not members:
        raise ExportError(f"{path}: no {EXPORT_MEMBER} in the archive")
    return min(members, key=lambda m: len(m.filename))


def detect_format(stream: IO[bytes]) -> ExportFormat:
    """A JSON list of conversations, or NDJSON (one exported memory per line)."""
    head = stream.peek(64).lstrip()  # type: ignore[attr-defined]
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:].lstrip()
    if head.startswith(b"["):
        return "conversations"
    if head.startswith(b"{"):
        return "ndjson"
    if not head:
        raise ExportError("the file is empty")
    raise ExportError("not JSON: expected a list of conversations or one memory per line")


def read_conversations(stream: IO[bytes], skipped: Skipped) -> Iterator[Conversation]:
    """The conversations of a ChatGPT or Claude export, one at a time."""
    try:
        for item in ijson.items(stream, "item", use_float=True):
            if isinstance(item, dict) and "mapping" in item:
                conversation = _chatgpt(item, skipped)
            elif isinstance(item, dict) and "chat_messages" in item:
                conversation = _claude(item, skipped)
            else:
                skipped["not a ChatGPT or Claude conversation"] += 1
                continue
            if conversation is not None:
                yield conversation
    except ijson.JSONError as exc:
        raise ExportError(f"not valid JSON: {exc}") from exc


def read_memories(stream: IO[bytes], skipped: Skipped) -> Iterator[dict[str, Any]]:
    """The memories of an NDJSON export, one per line."""
    while True:
        line = stream.readline(MAX_NDJSON_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_NDJSON_LINE_BYTES and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = stream.readline(MAX_NDJSON_LINE_BYTES)
            skipped[f"a line over {MAX_NDJSON_LINE_BYTES:,} bytes"] += 1
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            skipped["a line that is not JSON"] += 1
            continue
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("text"), str)
            or record.get("kind") not in ("prompt", "response")
        ):
            skipped["a line that is not an exported memory"] += 1
            continue
        yield record


def _chatgpt(item: dict[str, Any], skipped: Skipped) -> Conversation | None:
    mapping = item.get("mapping")
    if not isinstance(mapping, dict):
        skipped["a ChatGPT conversation without a message tree"] += 1
        return None
    # The branch the user saw last: from current_node up to the root.
    node_id = item.get("current_node") or _latest_leaf(mapping)
    branch = []
    seen: set[str] = set()
    while isinstance(node_id, str) and node_id in mapping and node_id not in seen:
        seen.add(node_id)
        node = mapping[node_id]
        if not isinstance(node, dict):
            skipped["a malformed message node"] += 1
            break
        branch.append(node)
        node_id = node.get("parent")
    messages = []
    for node in reversed(branch):
        message = _chatgpt_message(node)
        if message is None:
            if node.get("message") is not None and not isinstance(node.get("message"), dict):
                skipped["a malformed message node"] += 1
            continue
        if isinstance(message, str):
            skipped[message] += 1
            continue
        messages.append(message)
    return Conversation(
        str(item.get("conversation_id") or item.get("id") or ""),
        str(item.get("title") or ""),
        "chatgpt",
        messages,
    )


def _chatgpt_message(node: dict[str, Any]) -> Message | str | None:
    """The node's message; None for what is not a memory (system, tool, hidden, empty);
    a reason when the node is malformed."""
    message = node.get("message")
    if not isinstance(message, dict):
        return None
    author = message.get("author")
    content = message.get("content")
    if not isinstance(author, dict) or not isinstance(content, dict):
        return "a malformed message node"
    role = author.get("role")
    if role not in ("user", "assistant") or content.get("content_type") not in (
        "text",
        "multimodal_text",
    ):
        return None
    metadata = message.get("metadata")
    if isinstance(metadata, dict) and metadata.get("is_visually_hidden_from_conversation"):
        return None
    parts = content.get("parts")
    if not isinstance(parts, list):
        return "a malformed message node"
    text = "\n".join(p for p in parts if isinstance(p, str)).strip()
    if not text:
        return None
    message_id = message.get("id") or node.get("id")
    if not isinstance(message_id, str) or not message_id:
        return "a message without an id"
    return Message(message_id, role, text, _from_epoch(message.get("create_time")))


def _latest_leaf(mapping: dict[str, Any]) -> str | None:
    leaves = [n for n in mapping.values() if isinstance(n, dict) and not n.get("children")]
    if not leaves:
        return None

    def created(node: dict[str, Any]) -> float:
        message = node.get("message")
        value = message.get("create_time") if isinstance(message, dict) else None
        return float(value) if isinstance(value, int | float) else 0.0

    return str(max(leaves, key=created).get("id"))


def _claude(item: dict[str, Any], skipped: Skipped) -> Conversation | None:
    chat = item.get("chat_messages")
    if not isinstance(chat, list):
        skipped["a Claude conversation without a message list"] += 1
        return None
    messages = []
    for message in chat:
        if not isinstance(message, dict):
            skipped["a malformed message"] += 1
            continue
        role = {"human": "user", "assistant": "assistant"}.get(message.get("sender"))  # type: ignore[arg-type]
        text = message.get("text")
        if not isinstance(text, str) or not text:
            blocks = message.get("content")
            text = "\n".join(
                str(part.get("text", ""))
                for part in (blocks if isinstance(blocks, list) else [])
                if isinstance(part, dict) and part.get("type") == "text"
            )
        message_id = message.get("uuid")
        if not role or not text.strip():
            continue
        if not isinstance(message_id, str) or not message_id:
            skipped["a message without an id"] += 1
            continue
        messages.append(
            Message(message_id, role, text.strip(), _from_iso(message.get("created_at")))
        )
    return Conversation(
        str(item.get("uuid") or ""), str(item.get("name") or ""), "claude", messages
    )


def _from_epoch(value: Any) -> datetime | None:
    if isinstance(value, int | float) and value > 0:
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _from_iso(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
