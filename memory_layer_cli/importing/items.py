"""An export as the items of POST /memories/batch, in units that must travel together.

A unit is a prompt and its answer, so an answer always finds its prompt in its own batch,
however many batches are in flight. The project's NDJSON export lists memories in id order,
an answer possibly before its prompt, so it is read twice: prompts first, then answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from memory_layer_cli.importing.parsers import (
    MAX_EXPORT_BYTES,
    Conversation,
    ExportFormat,
    Message,
    Skipped,
    detect_format,
    open_export,
    read_conversations,
    read_memories,
)
from service_kit.limits import MAX_FIELD_CHARS, MAX_TEXT_CHARS

Item = dict[str, Any]
Unit = list[Item]
# Each phase is read (and sent) only once the one before it is stored.
Phase = Callable[[], Iterator[Unit]]


class ExportItems:
    """The batch items of one export file, read as a stream each time a phase runs."""

    def __init__(self, path: Path, max_bytes: int = MAX_EXPORT_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.skipped = Skipped()
        self.conversations = 0
        with open_export(self.path, max_bytes) as stream:
            self.format: ExportFormat = detect_format(stream)
        # NDJSON prompts saved with a client message id, by their old memory id: an answer
        # names its prompt by that message id, which holds for any importing user.
        self._prompt_message_ids: dict[str, str] = {}

    def phases(self) -> list[Phase]:
        if self.format == "conversations":
            return [self._exchanges]
        return [self._exported_prompts, self._exported_answers]

    def _exchanges(self) -> Iterator[Unit]:
        with open_export(self.path, self.max_bytes) as stream:
            for conversation in read_conversations(stream, self.skipped):
                self.conversations += 1
                for exchange in conversation.exchanges():
                    prompt = self._exchange_item(conversation, exchange.prompt)
                    if prompt is None:
                        if exchange.answer is not None:
                            self.skipped["an answer to a skipped prompt"] += 1
                        continue
                    unit = [prompt]
                    if exchange.answer is not None:
                        answer = self._exchange_item(conversation, exchange.answer)
                        if answer is not None:
                            answer["message_id"] = prompt["message_id"]
                            unit.append(answer)
                    yield unit

    def _exchange_item(self, conversation: Conversation, message: Message) -> Item | None:
        if len(message.text) > MAX_TEXT_CHARS:
            self.skipped[f"a message over {MAX_TEXT_CHARS:,} characters"] += 1
            return None
        metadata = {"imported_from": f"{conversation.provider} export"}
        if conversation.title:
            metadata["conversation_title"] = conversation.title[:MAX_FIELD_CHARS]
        item: Item = {"provider": conversation.provider, "metadata": metadata}
        if conversation.id:
            item["conversation_id"] = conversation.id[:MAX_FIELD_CHARS]
        if message.role == "user":
            item["prompt"] = message.text
            item["message_id"] = message.id[:MAX_FIELD_CHARS]
        else:
            item["response"] = message.text
            item["response_message_id"] = message.id[:MAX_FIELD_CHARS]
        if message.created_at is not None:
            item["created_at"] = message.created_at.isoformat()
        return item

    def _exported(self, kind: str) -> Iterator[Item]:
        with open_export(self.path, self.max_bytes) as stream:
            for record in read_memories(stream, self.skipped if kind == "prompt" else Skipped()):
                if record["kind"] == kind:
                    yield record

    def _exported_items(self, kind: str) -> Iterator[tuple[Item, Item]]:
        """Each exported memory of `kind` with the item it imports as; malformed ones are
        counted and passed over."""
        for record in self._exported(kind):
            item = _exported_item(record, kind)
            if item is None:
                self.skipped["an exported memory with malformed fields"] += 1
                continue
            yield record, item

    def _exported_prompts(self) -> Iterator[Unit]:
        for record, item in self._exported_items("prompt"):
            if item.get("message_id") and isinstance(record.get("id"), str):
                self._prompt_message_ids[record["id"]] = item["message_id"]
            yield [item]

    def _exported_answers(self) -> Iterator[Unit]:
        for record, item in self._exported_items("response"):
            prompt_id = record.get("prompt_id")
            if not isinstance(prompt_id, str) or not prompt_id:
                self.skipped["an answer whose prompt is not in the export"] += 1
                continue
            if prompt_id in self._prompt_message_ids:
                item["message_id"] = self._prompt_message_ids[prompt_id]
            else:
                item["prompt_id"] = prompt_id
            yield [item]


_TEXT_FIELDS = ("provider", "conversation_id", "url")


def _exported_item(record: dict[str, Any], kind: str) -> Item | None:
    """An exported memory as a batch item, as it was: text, ids, metadata and time."""
    item: Item = {"prompt" if kind == "prompt" else "response": record["text"]}
    for name in _TEXT_FIELDS:
        value = record.get(name)
        if value is not None and not isinstance(value, str):
            return None
        if value:
            item[name] = value
    metadata = record.get("metadata")
    if metadata:
        if not isinstance(metadata, dict):
            return None
        item["metadata"] = metadata
    created_at = record.get("created_at")
    if isinstance(created_at, str):
        try:
            datetime.fromisoformat(created_at)
        except ValueError:
            return None
        item["created_at"] = created_at
    message_id = record.get("message_id")
    if message_id and isinstance(message_id, str):
        item["message_id" if kind == "prompt" else "response_message_id"] = message_id
    elif isinstance(record.get("id"), str):
        # Without a client message id the memory keeps its id only if it brings it.
        item["id"] = record["id"]
    return item
