"""Assemble what a model is asked: instructions, the memories, the conversation so far and the
question, always within the prompt's token budget.

Tokens are estimated, not counted: the real tokenizer depends on the model behind the
provider, and loading one per request would cost more than the answer. The estimate is
deliberately pessimistic so a prompt built to fit the budget fits the real window:

* ASCII text counts one token per 3 characters, rounded up; BPE vocabularies of current
  chat models average about 4 characters per token on English prose and code.
* Every other character counts 2 tokens; CJK ideographs and accented letters take 1-2.
* Every message costs 4 more tokens and every prompt 3 more, for role markers and the
  reply primer, as in OpenAI's published accounting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from chat_service.errors import InvalidChatRequestError
from chat_service.models import ContextMemory, Prompt, Role, Turn
from service_kit import quoting

MESSAGE_OVERHEAD_TOKENS = 4
PROMPT_OVERHEAD_TOKENS = 3
# A memory is cut to fit only if at least this much of it would remain; a sliver only
# costs room that history could use better.
MIN_TRUNCATED_MEMORY_TOKENS = 24
ELLIPSIS = "..."

INSTRUCTIONS = (
    "You are a helpful assistant. The user keeps their past conversations with AI chat "
    "assistants as memories. Memories that may be relevant to the question are listed "
    "below, most relevant first. Use them when they help and say which one you relied on; "
    "never invent memories that are not listed. If none are relevant, answer from general "
    "knowledge. " + quoting.QUOTED_DATA_NOTE
)
MEMORIES_HEADING = "\n\nMemories:"
NO_MEMORIES = "\n(none)"
MEMORIES_UNAVAILABLE = (
    "\n\nThe user's memories could not be searched for this question; none are listed."
)


def estimate_tokens(text: str) -> int:
    """An upper estimate of the tokens `text` takes (see the module docstring)."""
    non_ascii = len(text) - len(text.encode("ascii", "ignore"))
    units = len(text) + 5 * non_ascii
    return -(-units // 3)


def estimate_prompt_tokens(system: str, turns: Sequence[Turn]) -> int:
    total = PROMPT_OVERHEAD_TOKENS + MESSAGE_OVERHEAD_TOKENS + estimate_tokens(system)
    return total + sum(MESSAGE_OVERHEAD_TOKENS + estimate_tokens(t.content) for t in turns)


def truncate_to_tokens(text: str, tokens: int) -> str:
    """The longest start of `text`, marked as cut, whose estimate is at most `tokens`."""
    if estimate_tokens(text) <= tokens:
        return text
    room = 3 * tokens - len(ELLIPSIS)
    used = 0
    for end, char in enumerate(text):
        used += 1 if char.isascii() else 6
        if used > room:
            return text[:end] + ELLIPSIS
    return text


# The frame every memory leaving the server is quoted in (service_kit.quoting); here each
# memory keeps its line breaks, so its tags go on lines of their own.
MEMORY_CLOSE = "\n" + quoting.MEMORY_CLOSE
quoted = quoting.defused


def memory_label(index: int, memory: ContextMemory) -> str:
    """The opening tag of a quoted memory: its rank, source and date."""
    source = [memory.provider] if memory.provider else []
    if memory.created_at is not None:
        source.append(memory.created_at.date().isoformat())
    where = f" ({', '.join(source)})" if source else ""
    return f"\n{quoting.memory_open({'n': str(index)})}[{index}]{quoting.defused(where)}\n"


def build_prompt(
    question: str,
    history: Sequence[Turn],
    memories: Sequence[ContextMemory],
    budget: int,
    context_share: float = 0.5,
    memories_unavailable: bool = False,
) -> Prompt:
    """The prompt for `question`, never estimated above `budget` tokens.

    The instructions and the question always go in. Of the room left, memories take up to
    `context_share` in rank order (the last one cut if it does not fit whole); history
    takes the rest, newest turn first, so what is dropped is always the oldest part.
    """
    instructions = INSTRUCTIONS + (MEMORIES_UNAVAILABLE if memories_unavailable else "")
    if not memories_unavailable:
        instructions += MEMORIES_HEADING
    # The fixed part, "(none)" included so an empty memory list still fits: estimated as the
    # one text it is, since the estimate of a whole is below the sum of its parts'.
    reserved = "" if memories_unavailable else NO_MEMORIES
    fixed = estimate_prompt_tokens(instructions + reserved, [Turn(Role.USER, question)])
    if fixed > budget:
        raise InvalidChatRequestError("the message is too long for the model's context window")
    room = budget - fixed

    # Estimates are subadditive (ceil(a + b) <= ceil(a) + ceil(b)), so summing the parts'
    # estimates bounds the estimate of the joined text.
    memory_room = int(room * context_share)
    used: list[ContextMemory] = []
    blocks: list[str] = []
    spent = 0
    for memory in () if memories_unavailable else memories:
        label = memory_label(len(used) + 1, memory)
        frame = estimate_tokens(label) + estimate_tokens(MEMORY_CLOSE)
        body = quoted(memory.text)
        cost = frame + estimate_tokens(body)
        if spent + cost <= memory_room:
            blocks.append(label + body + MEMORY_CLOSE)
            used.append(memory)
            spent += cost
            continue
        left = memory_room - spent - frame
        if left >= MIN_TRUNCATED_MEMORY_TOKENS:
            text = truncate_to_tokens(body, left)
            blocks.append(label + text + MEMORY_CLOSE)
            used.append(_truncated(memory, text))
            spent += frame + estimate_tokens(text)
        break

    if memories_unavailable:
        system = instructions
    else:
        system = instructions + ("".join(blocks) if blocks else NO_MEMORIES)
    question_turn = Turn(Role.USER, question)
    # Measured on the finished system text, so history also gets what the estimates of the
    # parts overstated.
    history_room = budget - estimate_prompt_tokens(system, [question_turn])
    kept: list[Turn] = []
    for turn in reversed(history):
        cost = MESSAGE_OVERHEAD_TOKENS + estimate_tokens(turn.content)
        if cost > history_room:
            break
        kept.append(turn)
        history_room -= cost
    kept.reverse()

    turns = (*kept, question_turn)
    return Prompt(
        system=system,
        turns=turns,
        memories=tuple(used),
        history_kept=len(kept),
        memories_unavailable=memories_unavailable,
        estimated_tokens=estimate_prompt_tokens(system, turns),
    )


def _truncated(memory: ContextMemory, text: str) -> ContextMemory:
    return dataclasses.replace(memory, text=text, truncated=True)
