"""Prometheus metrics of the chat service."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RPC_SECONDS = Histogram("chat_rpc_seconds", "Time to serve a ChatService RPC", ["method", "code"])
LLM_SECONDS = Histogram(
    "chat_llm_seconds",
    "Time from sending a prompt to the provider's last byte",
    ["provider", "outcome"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
)
LLM_TOKENS = Counter("chat_llm_tokens_total", "Tokens used by the LLM", ["provider", "kind"])
RETRIEVAL_SECONDS = Histogram("chat_retrieval_seconds", "Time of a memory search for a chat")
RETRIEVAL_FAILURES = Counter(
    "chat_retrieval_failures_total", "Chats answered without memories because search failed"
)
