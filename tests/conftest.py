"""Fixtures shared by every test: the real bundled model, loaded once per run."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from memory_service.embedder import Embedder, load_sentence_transformer


@pytest.fixture(scope="session")
def sentence_model():  # type: ignore[no-untyped-def]
    return load_sentence_transformer(None)


@pytest.fixture(scope="session")
async def embedder(sentence_model) -> AsyncIterator[Embedder]:  # type: ignore[no-untyped-def]
    model, name = sentence_model
    emb = Embedder(model, name, batch_size=32, max_wait_ms=2.0)
    await emb.start()
    yield emb
    await emb.stop()
