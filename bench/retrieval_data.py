"""The two development sets of bench_retrieval.py in the product's shape: what the extension
would have captured, saved the way it saves.

Every turn keeps its words as said (no date written into the text) and carries its time as
`created_at`; a prompt's answer is saved as that prompt's answer (a /save-response item
naming it), in order. Turns of one session share the session's time in the data: the n-th
turn of a session is given that time plus n seconds, as a chat's turns follow each other.

- LoCoMo (two people talking): a session's turn is a prompt, and the next turn, by the other
  person, its answer; the text is "{speaker}: {words}" (the transcript's line) with a shared
  photo's caption after it. Times are the session's ("1:56 pm on 8 May, 2023"), read as UTC.
  Category 5 (adversarial, no answer in the conversation) is left out.
- LongMemEval (a person and an assistant): a user turn is a prompt and the assistant turn
  after it its answer; an assistant turn with no user turn before it in its session is saved
  as a prompt. Each question has its own haystack, so each is its own user.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

LOCOMO_CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
LOCOMO_SKIPPED_CATEGORY = 5


@dataclass(frozen=True, slots=True)
class Turn:
    user: str
    # The evidence id questions name.
    turn_id: str
    text: str
    conversation_id: str
    created_at: datetime
    # For an answer: the message id of the prompt it answers; "" for a prompt.
    answers: str = ""

    @property
    def message_id(self) -> str:
        return self.turn_id

    def batch_item(self) -> dict[str, Any]:
        """This turn as an item of POST /memories/batch."""
        common = {
            "conversation_id": self.conversation_id,
            "created_at": self.created_at.isoformat(),
            "metadata": {"turn": self.turn_id},
        }
        if self.answers:
            return {
                "response": self.text,
                "message_id": self.answers,
                "response_message_id": self.message_id,
                "provider": "chatgpt",
                **common,
            }
        return {"prompt": self.text, "message_id": self.message_id, **common}


@dataclass(frozen=True, slots=True)
class Question:
    user: str
    text: str
    evidence: frozenset[str]
    category: str


@dataclass(frozen=True, slots=True)
class Dataset:
    name: str
    # Turns per user, in order.
    conversations: list[list[Turn]]
    questions: list[Question]
    # What a fold is made of: "conversation" (LoCoMo) or "question" (LongMemEval).
    fold_unit: str

    @property
    def categories(self) -> list[str]:
        return sorted({q.category for q in self.questions})


def _paired(
    turns: list[tuple[str, str, str, str, datetime]],
    user: str,
    asks: Callable[[str], bool] = lambda speaker: True,
) -> Iterator[Turn]:
    """(turn id, speaker, text, conversation id, time) in order → turns, each a prompt, or the
    answer to the prompt just before it in its conversation when that prompt is another
    speaker's, unanswered, and by a speaker who `asks`."""
    open_prompt: tuple[str, str, str] | None = None  # (message id, speaker, conversation)
    for turn_id, speaker, text, conversation_id, created_at in turns:
        if (
            open_prompt is not None
            and open_prompt[1] != speaker
            and open_prompt[2] == conversation_id
        ):
            yield Turn(user, turn_id, text, conversation_id, created_at, answers=open_prompt[0])
            open_prompt = None
            continue
        yield Turn(user, turn_id, text, conversation_id, created_at)
        open_prompt = (turn_id, speaker, conversation_id) if asks(speaker) else None


def load_locomo(path: Path) -> Dataset:
    conversations, questions = [], []
    for sample in json.loads(path.read_text()):
        sample_id = str(sample["sample_id"])
        user = f"locomo-{sample_id}"
        body = sample["conversation"]
        raw = []
        session = 1
        while f"session_{session}" in body:
            began = datetime.strptime(
                body[f"session_{session}_date_time"], "%I:%M %p on %d %B, %Y"
            ).replace(tzinfo=UTC)
            for n, turn in enumerate(body[f"session_{session}"]):
                text = f"{turn['speaker']}: {turn['text']}"
                if turn.get("blip_caption"):
                    text += f" [shares a photo: {turn['blip_caption']}]"
                raw.append(
                    (
                        f"{sample_id}:{turn['dia_id']}",
                        turn["speaker"],
                        text,
                        f"{sample_id}:session_{session}",
                        began + timedelta(seconds=n),
                    )
                )
            session += 1
        conversations.append(list(_paired(raw, user)))
        for qa in sample["qa"]:
            if qa.get("category") == LOCOMO_SKIPPED_CATEGORY:
                continue
            # A few annotations list two turns in one string ("D8:6; D9:17").
            evidence = frozenset(
                f"{sample_id}:{part.strip()}"
                for item in qa["evidence"]
                for part in item.split(";")
                if part.strip()
            )
            if evidence:
                category = LOCOMO_CATEGORIES[int(qa["category"])]
                questions.append(Question(user, qa["question"], evidence, category))
    return Dataset("LoCoMo", conversations, questions, "conversation")


def load_longmemeval(path: Path, per_type: int = 0) -> Dataset:
    """The haystacks and questions, the first `per_type` questions of each type (0: all),
    types taking turns in the order saved, so that a store cut short holds every type."""
    data = json.loads(path.read_text())
    by_type: dict[str, list[dict[str, Any]]] = {}
    for question in data["questions"]:
        if question["evidence"]:
            by_type.setdefault(question["category"], []).append(question)
    kept = [questions[: per_type or None] for questions in by_type.values()]
    chosen = [q for row in itertools.zip_longest(*kept) for q in row if q is not None]
    haystacks = {conversation["user"]: conversation for conversation in data["conversations"]}
    conversations = []
    for conversation in (haystacks[question["user"]] for question in chosen):
        user = f"lme-{conversation['user']}"
        raw = []
        position: dict[str, int] = {}
        for turn in conversation["turns"]:
            session = turn["session"]
            n = position[session] = position.get(session, -1) + 1
            began = datetime.fromisoformat(turn["time"]).replace(tzinfo=UTC)
            raw.append(
                (
                    turn["id"],
                    turn["role"] if turn["role"] == "assistant" else "user",
                    turn["text"],
                    f"{conversation['user']}:{session}",
                    began + timedelta(seconds=n),
                )
            )
        # Only a user turn asks: an assistant turn after an assistant turn is a prompt.
        turns = list(_paired(raw, user, asks=lambda speaker: speaker == "user"))
        conversations.append(turns)
    questions = [
        Question(f"lme-{q['user']}", q["q"], frozenset(q["evidence"]), q["category"])
        for q in chosen
    ]
    return Dataset("LongMemEval", conversations, questions, "question")
