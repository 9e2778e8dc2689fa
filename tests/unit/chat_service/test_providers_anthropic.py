"""Anthropic message shapes."""

from __future__ import annotations

from chat_service.models import Role, Turn
from chat_service.providers.anthropic import alternating


def test_anthropic_turns_start_with_the_user_and_alternate() -> None:
    turns = (
        Turn(Role.ASSISTANT, "greeting"),
        Turn(Role.USER, "a"),
        Turn(Role.USER, "b"),
        Turn(Role.ASSISTANT, "c"),
        Turn(Role.USER, "q"),
    )
    assert alternating(turns) == [
        Turn(Role.USER, "a\n\nb"),
        Turn(Role.ASSISTANT, "c"),
        Turn(Role.USER, "q"),
    ]
