"""Build the block of past memories the extension injects into a new prompt.

Token counts are estimated as characters / 4, close enough for English text with common
tokenizers to keep the block inside a budget without loading one.
"""

from __future__ import annotations

from gateway.schemas import Context, ScoredMemory

CHARS_PER_TOKEN = 4
HEADER = "Relevant memories from earlier conversations (most relevant first):"
_ELLIPSIS = "…"


def approx_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


def _line(memory: ScoredMemory) -> str:
    source = memory.provider or "unknown"
    when = memory.created_at.date().isoformat()
    text = " ".join(memory.text.split())
    return f"- [{memory.kind} · {source} · {when}] {text}"


def build_context(results: list[ScoredMemory], max_tokens: int) -> Context:
    """Whole memories in rank order while they fit; the first is shortened if it alone does not."""
    budget = max_tokens * CHARS_PER_TOKEN
    lines = [HEADER]
    used: list[ScoredMemory] = []
    size = len(HEADER)
    for memory in results:
        line = _line(memory)
        room = budget - size - 1
        if len(line) > room:
            if not used and room > len(_ELLIPSIS) + 16:
                lines.append(line[: room - len(_ELLIPSIS)] + _ELLIPSIS)
                used.append(memory)
            break
        lines.append(line)
        used.append(memory)
        size += len(line) + 1
    text = "\n".join(lines) if used else ""
    return Context(context=text, memories=used, approx_tokens=approx_tokens(text))
