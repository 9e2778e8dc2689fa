"""The LLM APIs a chat may name (ChatRequest.provider) and the other names people use for
them. The gateway forwards only these; chat_service has an implementation for each."""

from __future__ import annotations

OFFLINE = "offline"
LLM_APIS = ("openai", "anthropic", OFFLINE)
ALIASES = {"chatgpt": "openai", "claude": "anthropic", "none": OFFLINE}
ACCEPTED_NAMES = frozenset(LLM_APIS) | frozenset(ALIASES)


def canonical_api(requested: str | None) -> str | None:
    """The API `requested` stands for, or None when it names none (a chat site, a typo)."""
    name = requested.strip().lower() if requested else ""
    return name if name in LLM_APIS else ALIASES.get(name)
