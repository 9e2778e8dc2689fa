"""The answer when no LLM is configured (or the caller asks for none): the memories most
relevant to the question, quoted, and a plain statement that no model wrote it."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from chat_service.models import Completion, Prompt, StreamEnd, TextDelta
from chat_service.providers.interface import StreamEvent
from service_kit.llm_apis import OFFLINE

MAX_QUOTED = 5
MAX_QUOTE_CHARS = 600

NO_MODEL = "No language model is configured, so this answer only quotes your memories."
REQUESTED = "Offline mode: no language model was asked, this answer only quotes your memories."


class OfflineProvider:
    name = OFFLINE

    def __init__(self, model_configured: bool = False) -> None:
        self.opening = REQUESTED if model_configured else NO_MODEL

    async def complete(self, prompt: Prompt, model: str, max_tokens: int) -> Completion:
        text = offline_answer(prompt, self.opening)
        return Completion(text=text, usage=None, finish_reason="stop")

    async def stream(
        self, prompt: Prompt, model: str, max_tokens: int
    ) -> AsyncGenerator[StreamEvent, None]:
        for line in offline_answer(prompt, self.opening).splitlines(keepends=True):
            yield TextDelta(line)
        yield StreamEnd(usage=None, finish_reason="stop")


def offline_answer(prompt: Prompt, opening: str = NO_MODEL) -> str:
    if prompt.memories_unavailable:
        return f"{opening}\nYour memories could not be searched just now; please try again."
    if not prompt.memories:
        return f"{opening}\nNo relevant memories were found for this question."
    lines = [opening, "The most relevant ones:", ""]
    for index, memory in enumerate(prompt.memories[:MAX_QUOTED], start=1):
        text = " ".join(memory.text.split())
        if len(text) > MAX_QUOTE_CHARS or memory.truncated:
            text = text[:MAX_QUOTE_CHARS].rstrip(". ") + "..."
        source = f" ({memory.provider})" if memory.provider else ""
        lines.append(f'{index}. "{text}"{source}')
    return "\n".join(lines)
