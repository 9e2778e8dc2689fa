"""The packed encoder's grouping of sequences for attention (the forward pass itself runs
with the real model in tests/integration/test_torch_encoder.py)."""

from __future__ import annotations

from memory_service.packed import attention_groups


def test_attention_groups_keep_padding_small() -> None:
    lengths = [3, 3, 4, 9, 10, 11, 40, 41, 60, 256, 256]
    groups = attention_groups(lengths)
    assert [(g.batch, g.longest, g.even) for g in groups] == [
        (6, 11, False),
        (2, 41, False),
        (1, 60, True),
        (2, 256, True),
    ]
    assert [g.tokens for g in groups] == [
        slice(0, 40),
        slice(40, 121),
        slice(121, 181),
        slice(181, 693),
    ]
