"""Answering a question: look up the caller's memories, build the prompt, ask the provider,
and account for what was used. Everything here is independent of gRPC."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from chat_service import metrics
from chat_service.config import ChatSettings, ProviderName
from chat_service.errors import (
    InvalidChatRequestError,
    MemoryUnavailableError,
    ProviderTimeoutError,
)
from chat_service.models import (
    AnswerDetails,
    ChatAnswer,
    ChatQuestion,
    ContextMemory,
    Prompt,
    StreamEnd,
    TextDelta,
    Usage,
)
from chat_service.prompt import build_prompt, estimate_tokens
from chat_service.providers import LlmProvider
from chat_service.providers.offline import NO_MODEL, REQUESTED
from chat_service.retrieval import MemoryRetriever
from service_kit.identity import Identity
from service_kit.limits import (
    MAX_HISTORY_TURNS,
    MAX_MESSAGE_CHARS,
    MAX_MODEL_CHARS,
    MAX_TOP_K,
    MAX_TURN_CHARS,
)
from service_kit.llm_apis import LLM_APIS, OFFLINE, canonical_api

log = logging.getLogger(__name__)


CONTEXT_NOTICE = "Your memories could not be searched just now, so the answer does not use them."
NO_RELEVANT_NOTICE = "No relevant memories were found for this question, so the answer uses none."


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything decided before the provider is called."""

    provider: LlmProvider
    model: str
    prompt: Prompt
    deadline: float
    # Memories the search returned (all at or above the relevance floor), before the budget.
    memories_found: int


class Assistant:
    def __init__(
        self,
        settings: ChatSettings,
        retriever: MemoryRetriever,
        providers: dict[ProviderName, LlmProvider],
    ) -> None:
        self.settings = settings
        self.retriever = retriever
        self.providers = providers

    async def answer(
        self,
        identity: Identity,
        request_id: str,
        question: ChatQuestion,
        time_remaining: float | None,
    ) -> ChatAnswer:
        plan = await self._plan(identity, request_id, question, time_remaining)
        started = time.perf_counter()
        outcome = "error"
        try:
            async with asyncio.timeout_at(plan.deadline):
                completion = await plan.provider.complete(
                    plan.prompt, plan.model, self.settings.max_output_tokens
                )
            outcome = "ok"
        except TimeoutError:
            outcome = "timeout"
            raise ProviderTimeoutError(f"{plan.provider.name} did not answer in time") from None
        finally:
            self._observe(plan, started, outcome)
        details = self._details(plan, completion.text, completion.usage, completion.finish_reason)
        return ChatAnswer(text=completion.text, details=details)

    async def answer_stream(
        self,
        identity: Identity,
        request_id: str,
        question: ChatQuestion,
        time_remaining: float | None,
    ) -> AsyncIterator[TextDelta | AnswerDetails]:
        """Text deltas as the provider produces them, then the answer's details."""
        plan = await self._plan(identity, request_id, question, time_remaining)
        events = plan.provider.stream(plan.prompt, plan.model, self.settings.max_output_tokens)
        pieces: list[str] = []
        end = StreamEnd()
        started = time.perf_counter()
        outcome = "error"
        try:
            while True:
                # Only the wait for the provider is under the timeout, so its cancellation
                # never lands while the caller is still handling a delta.
                try:
                    async with asyncio.timeout_at(plan.deadline):
                        event = await anext(events)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    outcome = "timeout"
                    raise ProviderTimeoutError(
                        f"{plan.provider.name} did not finish in time"
                    ) from None
                if isinstance(event, TextDelta):
                    pieces.append(event.text)
                    yield event
                else:
                    end = event
            outcome = "ok"
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"
            raise
        finally:
            # Closing the provider's stream closes its HTTP response, so a caller who goes
            # away stops the generation upstream too.
            await events.aclose()
            self._observe(plan, started, outcome)
        yield self._details(plan, "".join(pieces), end.usage, end.finish_reason)

    async def _plan(
        self,
        identity: Identity,
        request_id: str,
        question: ChatQuestion,
        time_remaining: float | None,
    ) -> Plan:
        validate(question)
        name = self._provider_name(question.provider)
        provider = self.providers[name]
        model = "" if name == OFFLINE else (question.model or self.settings.llm_model or "")
        if name != OFFLINE and question.model and model not in self.settings.allowed_models:
            # Answers are paid with the operator's key: which models, the operator decides.
            raise InvalidChatRequestError(
                "this model is not offered on this server (CHAT_LLM_ALLOWED_MODELS)"
            )
        loop = asyncio.get_running_loop()
        limit = self.settings.llm_total_timeout_seconds
        deadline = loop.time() + (limit if time_remaining is None else min(limit, time_remaining))

        memories: list[ContextMemory] = []
        unavailable = False
        search_timeout = self.settings.memory_timeout_seconds
        if time_remaining is not None:
            search_timeout = min(search_timeout, max(time_remaining, 0.0))
        try:
            memories = await self.retriever.search(
                identity,
                request_id,
                question.message,
                question.top_k or self.settings.default_top_k,
                search_timeout,
                question.time_zone,
            )
        except MemoryUnavailableError:
            unavailable = True

        prompt = build_prompt(
            question.message,
            question.history,
            memories,
            self.settings.prompt_budget_tokens,
            self.settings.context_share,
            memories_unavailable=unavailable,
        )
        return Plan(
            provider=provider,
            model=model,
            prompt=prompt,
            deadline=deadline,
            memories_found=len(memories),
        )

    def _provider_name(self, requested: str | None) -> ProviderName:
        configured = self.settings.provider
        if requested is None or not requested.strip():
            return configured
        name = canonical_api(requested)
        if name is None:
            raise InvalidChatRequestError(
                f"unknown provider {requested[:40]!r}: use {', '.join(LLM_APIS)}"
            )
        if name not in (configured, OFFLINE):
            raise InvalidChatRequestError(
                f"provider {name!r} is not configured on this server (it uses {configured!r})"
            )
        return name

    def _details(
        self, plan: Plan, text: str, usage: Usage | None, finish_reason: str
    ) -> AnswerDetails:
        offline = plan.provider.name == OFFLINE
        if usage is None:
            usage = Usage(
                prompt_tokens=0 if offline else plan.prompt.estimated_tokens,
                completion_tokens=0 if offline else estimate_tokens(text),
                estimated=not offline,
            )
        if not offline:
            metrics.LLM_TOKENS.labels(plan.provider.name, "prompt").inc(usage.prompt_tokens)
            metrics.LLM_TOKENS.labels(plan.provider.name, "completion").inc(usage.completion_tokens)
        notices = []
        if offline:
            configured = self.settings.provider == OFFLINE
            notices.append(NO_MODEL if configured else REQUESTED)
        if plan.prompt.memories_unavailable:
            notices.append(CONTEXT_NOTICE)
        elif plan.memories_found == 0:
            notices.append(NO_RELEVANT_NOTICE)
        return AnswerDetails(
            context_used=list(plan.prompt.memories),
            usage=usage,
            offline=offline,
            context_unavailable=plan.prompt.memories_unavailable,
            notice=" ".join(notices),
            provider=plan.provider.name,
            model=plan.model,
            finish_reason=finish_reason,
        )

    def _observe(self, plan: Plan, started: float, outcome: str) -> None:
        if plan.provider.name != OFFLINE:
            metrics.LLM_SECONDS.labels(plan.provider.name, outcome).observe(
                time.perf_counter() - started
            )


def validate(question: ChatQuestion) -> None:
    if not question.message.strip():
        raise InvalidChatRequestError("message must not be empty")
    if len(question.message) > MAX_MESSAGE_CHARS:
        raise InvalidChatRequestError(f"message is longer than {MAX_MESSAGE_CHARS} characters")
    if not 0 <= question.top_k <= MAX_TOP_K:
        raise InvalidChatRequestError(f"top_k must be between 0 and {MAX_TOP_K}")
    if len(question.history) > MAX_HISTORY_TURNS:
        raise InvalidChatRequestError(f"history has more than {MAX_HISTORY_TURNS} turns")
    if any(len(turn.content) > MAX_TURN_CHARS for turn in question.history):
        raise InvalidChatRequestError(f"a history turn is longer than {MAX_TURN_CHARS} characters")
    if question.model is not None and not 0 < len(question.model) <= MAX_MODEL_CHARS:
        raise InvalidChatRequestError(f"model must be 1 to {MAX_MODEL_CHARS} characters")
