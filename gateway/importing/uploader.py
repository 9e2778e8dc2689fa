"""Save parsed conversations into a user's memories through the gateway.

Each user message is saved as a prompt and the assistant's reply as its answer, with the
export's own message ids as client message ids: importing the same export again stores
nothing twice. Saves go through the gateway like the extension's, so they are authenticated
and rate limited; a 429 or 503 is waited out and retried.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from gateway.importing.parsers import Conversation, Exchange, Message
from service_kit.limits import MAX_FIELD_CHARS, MAX_TEXT_CHARS

# Give up on a message after this many refusals in a row (429/503 are waited out first).
MAX_ATTEMPTS = 8


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
