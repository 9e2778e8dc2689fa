from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (["--url", "localhost:8080", "--token", "t"], 2, "http:// or https://"),
        (["--url", "http://127.0.0.1:8080"], 2, "Give --token"),
        (["--url", "http://127.0.0.1:8080", "--user", "alice"], 1, "No local secret"),
    ],
)
def test_mcp_refuses_to_start_without_what_it_needs(
    args: list[str], code: int, said: str, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        app, ["mcp", *args, "--data-dir", str(tmp_path)], env={"MEMORY_LAYER_TOKEN": ""}
    )
    assert result.exit_code == code
    assert said in result.output
