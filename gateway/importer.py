"""Bring a ChatGPT or Claude data export into a user's memories, through the gateway.

Both services export a zip whose `conversations.json` lists every conversation. ChatGPT
keeps each conversation as a tree of message nodes (an edited prompt starts a new branch);
the branch shown last (`current_node` back to the root) is the one imported. Claude keeps a
flat list of messages. Each user message is saved as a prompt and the assistant's reply as
its answer, with the export's own message ids as client message ids: importing the same
export again stores nothing twice. Saves go through the gateway like the extension's, so
they are authenticated and rate limited; a 429 or 503 is waited out and retried.
"""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from service_kit.limits import MAX_FIELD_CHARS, MAX_TEXT_CHARS

EXPORT_MEMBER = "conversations.json"
# Give up on a message after this many refusals in a row (429/503 are waited out first).
MAX_ATTEMPTS = 8


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


@dataclass
class ImportReport:
    prompts: int = 0
    answers: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    waited_seconds: float = 0.0

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


class ImportRefused(RuntimeError):
    """The gateway refused the import as a whole (bad token, gone, persistent errors)."""


class Importer:
    """Saves exchanges through the gateway's /save-prompt and /save-response."""

    def __init__(
        self,
        client: httpx.Client,
        *,
        sleep: Callable[[float], None] = time.sleep,
        on_wait: Callable[[float, str], None] | None = None,
    ) -> None:
        self.client = client
        self.sleep = sleep
        self.on_wait = on_wait
        self.report = ImportReport()

    def messages(self, conversations: list[Conversation]) -> int:
        return sum(1 + (e.answer is not None) for c in conversations for e in c.exchanges())

    def run(self, conversations: list[Conversation]) -> Iterator[int]:
        """Save everything; yields after each message (for progress)."""
        for conversation in conversations:
            for exchange in conversation.exchanges():
                saved = self._prompt(conversation, exchange.prompt)
                yield 1
                if exchange.answer is not None:
                    if saved:
                        self._answer(conversation, exchange)
                    else:
                        self.report.skip("answer to a skipped prompt")
                    yield 1

    def _metadata(self, conversation: Conversation, message: Message) -> dict[str, str]:
        metadata = {"imported_from": f"{conversation.provider} export"}
        if conversation.title:
            metadata["conversation_title"] = conversation.title[:MAX_FIELD_CHARS]
        if message.created_at is not None:
            metadata["original_created_at"] = message.created_at.isoformat()
        return metadata

    def _prompt(self, conversation: Conversation, message: Message) -> bool:
        body = {
            "prompt": message.text,
            "provider": conversation.provider,
            "conversation_id": conversation.id[:MAX_FIELD_CHARS],
            "message_id": message.id[:MAX_FIELD_CHARS],
            "metadata": self._metadata(conversation, message),
        }
        if self._fits(message) and self._save("/save-prompt", body):
            self.report.prompts += 1
            return True
        return False

    def _answer(self, conversation: Conversation, exchange: Exchange) -> None:
        answer = exchange.answer
        assert answer is not None
        body = {
            "response": answer.text,
            "message_id": exchange.prompt.id[:MAX_FIELD_CHARS],
            "response_message_id": answer.id[:MAX_FIELD_CHARS],
            "provider": conversation.provider,
            "conversation_id": conversation.id[:MAX_FIELD_CHARS],
            "metadata": self._metadata(conversation, answer),
        }
        if self._fits(answer) and self._save("/save-response", body):
            self.report.answers += 1

    def _fits(self, message: Message) -> bool:
        if len(message.text) > MAX_TEXT_CHARS:
            self.report.skip(f"over {MAX_TEXT_CHARS:,} characters")
            return False
        return True

    def _save(self, path: str, body: dict[str, Any]) -> bool:
        """True once saved; False when the gateway refuses this message alone."""
        for _ in range(MAX_ATTEMPTS):
            try:
                response = self.client.post(path, json=body)
            except httpx.TransportError as exc:
                self._wait(2.0, f"gateway unreachable ({exc.__class__.__name__})")
                continue
            if response.status_code == 200:
                return True
            if response.status_code in (429, 503):
                self._wait(_retry_after(response), f"gateway answered {response.status_code}")
                continue
            if response.status_code in (401, 403, 404):
                raise ImportRefused(f"{path}: {response.status_code} {_detail(response)}")
            if response.status_code >= 500:
                self._wait(2.0, f"gateway answered {response.status_code}")
                continue
            self.report.skip(f"refused ({response.status_code}): {_detail(response)}"[:200])
            return False
        raise ImportRefused(f"{path}: still refused after {MAX_ATTEMPTS} attempts")

    def _wait(self, seconds: float, why: str) -> None:
        if self.on_wait is not None:
            self.on_wait(seconds, why)
        self.report.waited_seconds += seconds
        self.sleep(seconds)


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(1.0, min(float(response.headers.get("Retry-After", "1")), 120.0))
    except ValueError:
        return 1.0


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail) if detail else response.reason_phrase
