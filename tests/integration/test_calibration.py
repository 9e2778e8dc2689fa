"""Scores mean the same whatever BERT model runs: the calibration is measured on the loaded
model, so the relevance floor keeps what it means for a model whose cosines sit elsewhere
(here the bundled model cut to its first two layers, as a model directory of its own)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from memory_service.embedding.calibration import PAIRS, Calibration
from memory_service.embedding.model_dir import bundled_model_path, open_model_dir
from memory_service.embedding.onnx_encoder import OnnxEncoder
from memory_service.ranking import REFERENCE_CALIBRATION

pytestmark = pytest.mark.slow

FLOOR = 0.3
# A user's memories, questions about them, and questions about none of them: none of these
# texts are in the calibration pairs.
MEMORIES = [
    "I moved to Leeds in May and work at the university library.",
    "My partner Jo is training for the Berlin marathon in the autumn.",
    "We adopted a rescue greyhound called Pepper last weekend.",
    "The boiler service is booked for Thursday morning at 9.",
    "I'm learning Portuguese before our trip to Recife in January.",
    "My blood pressure medication is lisinopril, 10 mg each morning.",
]
ABOUT = [
    "Where do I work now?",
    "Which marathon is Jo running?",
    "What is our new dog called?",
    "When is the boiler being serviced?",
    "What language am I learning for the trip?",
    "What medication do I take for blood pressure?",
]
ABOUT_NONE = [
    "How do I reverse a linked list in Python?",
    "What is the capital of Australia?",
    "Recommend a sci-fi film from the nineties.",
    "How many grams of flour are in a cup?",
    "Explain how a transistor amplifies a signal.",
    "Who won the 1966 football World Cup?",
]


def cut_model(tmp_path: Path, layers: int) -> Path:
    """A copy of the bundled model directory that keeps only its first `layers` layers."""
    path = tmp_path / f"minilm-{layers}-layers"
    shutil.copytree(bundled_model_path(), path)
    config = json.loads((path / "config.json").read_text())
    config["num_hidden_layers"] = layers
    (path / "config.json").write_text(json.dumps(config))
    return path


def best_scores(encoder: OnnxEncoder, calibration: Calibration) -> tuple[list[float], list[float]]:
    memories = np.array(encoder.encode(MEMORIES, [False] * len(MEMORIES)))

    def best(queries: list[str]) -> list[float]:
        vectors = np.array(encoder.encode(queries, [True] * len(queries)))
        return [calibration.score(float(c)) for c in (vectors @ memories.T).max(axis=1)]

    return best(ABOUT), best(ABOUT_NONE)


@pytest.fixture(scope="module")
def bundled() -> OnnxEncoder:
    return OnnxEncoder(open_model_dir(None))


@pytest.fixture(scope="module")
def cut(tmp_path_factory: pytest.TempPathFactory) -> OnnxEncoder:
    return OnnxEncoder(open_model_dir(str(cut_model(tmp_path_factory.mktemp("model"), 2))))


def test_the_bundled_model_measures_close_to_its_reference_calibration(
    bundled: OnnxEncoder,
) -> None:
    assert abs(bundled.calibration.unrelated - REFERENCE_CALIBRATION.unrelated) < 0.03
    assert abs(bundled.calibration.related - REFERENCE_CALIBRATION.related) < 0.05


def test_a_differently_calibrated_model_gets_its_own_calibration(
    bundled: OnnxEncoder, cut: OnnxEncoder
) -> None:
    assert len(PAIRS) >= 12
    assert cut.calibration.unrelated > bundled.calibration.unrelated + 0.1
    assert cut.calibration.related > cut.calibration.unrelated + 0.1


@pytest.mark.parametrize("which", ["bundled", "cut"])
def test_the_relevance_floor_keeps_questions_about_nothing_out_and_lets_answers_in(
    which: str, request: pytest.FixtureRequest
) -> None:
    encoder: OnnxEncoder = request.getfixturevalue(which)
    about, about_none = best_scores(encoder, encoder.calibration)
    assert sum(s >= FLOOR for s in about) >= len(about) - 1, about
    assert max(about_none) < FLOOR, about_none


def test_the_bundled_models_calibration_would_let_the_cut_models_unrelated_hits_in(
    cut: OnnxEncoder,
) -> None:
    """What the measured calibration is for: with the constants the bundled model was
    calibrated with, the cut model's best matches for questions about nothing pass the floor."""
    _, about_none = best_scores(cut, REFERENCE_CALIBRATION)
    assert max(about_none) >= FLOOR, about_none
