"""What a model's cosine similarities mean, measured on the loaded model at startup: the
cosine of a question and a text about something else ("unrelated") and of a question and
the text that answers it ("related"). Scores map the one to 0 and the other to 1, so a
relevance floor means the same whatever model MEMORY_MODEL names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from memory_service.embedding.encoder import Encoder

# Questions a user might ask, each with a memory that answers it in other words.
PAIRS = (
    ("When is my daughter's piano recital?", "Lena plays her piano recital on the 14th at 6pm."),
    ("What am I allergic to?", "I'm allergic to penicillin and shellfish."),
    (
        "Which region did we move the staging database to?",
        "After the outage we put staging in eu-west.",
    ),
    (
        "How much notice do I have to give on the flat?",
        "The Lisbon lease has a 30-day notice period.",
    ),
    ("What does Sam like to drink?", "Sam prefers tea and never drinks coffee."),
    ("When is the car's MOT due?", "The MOT on the Golf runs out in March."),
    (
        "What books is the book club reading this year?",
        "This year's club picks: Middlemarch and Piranesi.",
    ),
    ("Where is the team offsite?", "The offsite will be in Porto in September."),
    ("Which desktop setup do I use?", "My laptop runs Arch Linux with Wayland and sway."),
    (
        "What is my sister's new job?",
        "My sister just started as a nurse at the children's hospital.",
    ),
    (
        "How long does the train from Seoul to Busan take?",
        "The KTX to Busan takes about two and a half hours.",
    ),
    ("What did the doctor say about my knee?", "The physio said the knee needs six weeks of rest."),
    (
        "What is the wifi password at the cabin?",
        "Cabin wifi: network Pinewood, password is moose-42.",
    ),
    ("Which language should answers be in?", "Always reply in British English with metric units."),
    ("What's the name of my cat?", "Our tabby is called Miso and she is three."),
    ("When does the gym close on Sundays?", "On Sundays the gym shuts at 4 in the afternoon."),
)
# "Unrelated" is the mean cosine of a question to the other questions' answers plus this many
# standard deviations of it: about five in six unrelated texts score 0. "Related" is the
# cosine this share of the answers stays below: the closest answers score 1, a typical one
# ~0.8. For all-MiniLM-L6-v2 that is 0.153 and 0.632 (0.157 and 0.623 in int8).
UNRELATED_DEVIATIONS = 1.0
RELATED_QUANTILE = 0.8


@dataclass(frozen=True, slots=True)
class Calibration:
    """The cosines a score maps to 0 (`unrelated`) and to 1 (`related`)."""

    unrelated: float
    related: float

    def score(self, cosine: float) -> float:
        """A cosine similarity on the score scale: 0 unrelated, 1 clearly about the query."""
        scaled = (cosine - self.unrelated) / (self.related - self.unrelated)
        return min(max(scaled, 0.0), 1.0)


def cosines(encoder: Encoder) -> tuple[np.ndarray, np.ndarray]:
    """The cosines of each question to its answer, and to every other question's answer."""
    questions = encoder.encode([q for q, _ in PAIRS], [True] * len(PAIRS))
    answers = encoder.encode([a for _, a in PAIRS], [False] * len(PAIRS))
    matrix = np.array(questions) @ np.array(answers).T
    own = np.diag(matrix)
    others = matrix[~np.eye(len(PAIRS), dtype=bool)]
    return own, others


def measure(encoder: Encoder) -> Calibration:
    """The calibration of the model behind `encoder`, from the fixed pairs above."""
    own, others = cosines(encoder)
    unrelated = float(others.mean() + UNRELATED_DEVIATIONS * others.std())
    related = float(np.quantile(own, RELATED_QUANTILE))
    if related - unrelated < 0.05:
        # A model that barely tells the pairs apart still gets a usable (if blunt) scale.
        related = unrelated + 0.05
    return Calibration(round(unrelated, 4), round(related, 4))
