"""Read a ChatGPT or Claude data export into conversations of prompt/answer exchanges.

Both services export a zip whose `conversations.json` lists every conversation. ChatGPT
keeps each conversation as a tree of message nodes (an edited prompt starts a new branch);
the branch shown last (`current_node` back to the root) is the one imported. Claude keeps a
flat list of messages.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

EXPORT_MEMBER = "conversations.json"


class ExportError(ValueError):
    """The file is not a ChatGPT or Claude export this importer can read."""


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


def read_export(path: Path) -> list[Conversation]:
    """The conversations in an export zip or its conversations.json."""
    data = _load(Path(path))
    if not isinstance(data, list):
        raise ExportError(f"{path}: expected a list of conversations")
    conversations = []
    for n, item in enumerate(data):
        if not isinstance(item, dict):
            raise ExportError(f"{path}: conversation {n} is not an object")
        if "mapping" in item:
            conversations.append(_chatgpt(item))
        elif "chat_messages" in item:
            conversations.append(_claude(item))
        else:
            raise ExportError(
                f"{path}: conversation {n} is neither a ChatGPT one (mapping) "
                "nor a Claude one (chat_messages)"
            )
    return conversations


def _load(path: Path) -> Any:
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if Path(n).name == EXPORT_MEMBER]
                if not names:
                    raise ExportError(f"{path}: no {EXPORT_MEMBER} in the archive")
                return json.loads(archive.read(min(names, key=len)))
        return json.loads(path.read_bytes())
    except OSError as exc:
        raise ExportError(f"{path}: {exc.strerror or exc}") from exc
    except (ValueError, zipfile.BadZipFile) as exc:
        raise ExportError(f"{path}: not JSON: {exc}") from exc


def _chatgpt(item: dict[str, Any]) -> Conversation:
    mapping: dict[str, Any] = item.get("mapping") or {}
    # The branch the user saw last: from current_node up to the root.
    node_id = item.get("current_node") or _latest_leaf(mapping)
    branch = []
    seen: set[str] = set()
    while node_id in mapping and node_id not in seen:
        seen.add(node_id)
        branch.append(mapping[node_id])
        node_id = mapping[node_id].get("parent")
    messages = []
    for node in reversed(branch):
        message = node.get("message") or {}
        role = (message.get("author") or {}).get("role")
        content = message.get("content") or {}
        if role not in ("user", "assistant") or content.get("content_type") not in (
            "text",
            "multimodal_text",
        ):
            continue
        if (message.get("metadata") or {}).get("is_visually_hidden_from_conversation"):
            continue
        text = "\n".join(p for p in content.get("parts") or [] if isinstance(p, str)).strip()
        if text:
            messages.append(
                Message(
                    str(message.get("id") or node.get("id")),
                    role,
                    text,
                    _from_epoch(message.get("create_time")),
                )
            )
    return Conversation(
        str(item.get("conversation_id") or item.get("id") or ""),
        str(item.get("title") or ""),
        "chatgpt",
        messages,
    )


def _latest_leaf(mapping: dict[str, Any]) -> str | None:
    leaves = [n for n in mapping.values() if not n.get("children")]
    if not leaves:
        return None
    latest = max(leaves, key=lambda n: (n.get("message") or {}).get("create_time") or 0)
    return str(latest.get("id"))


def _claude(item: dict[str, Any]) -> Conversation:
    messages = []
    for message in item.get("chat_messages") or []:
        role = {"human": "user", "assistant": "assistant"}.get(message.get("sender"))
        text = message.get("text") or "\n".join(
            part.get("text", "")
            for part in message.get("content") or []
            if isinstance(part, dict) and part.get("type") == "text"
        )
        if role and text.strip():
            messages.append(
                Message(
                    str(message.get("uuid")),
                    role,
                    text.strip(),
                    _from_iso(message.get("created_at")),
                )
            )
    return Conversation(
        str(item.get("uuid") or ""), str(item.get("name") or ""), "claude", messages
    )


def _from_epoch(value: Any) -> datetime | None:
    if isinstance(value, int | float) and value > 0:
        return datetime.fromtimestamp(value, UTC)
    return None


def _from_iso(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
