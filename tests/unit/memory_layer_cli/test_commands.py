"""The `memory-layer` commands: `open` opens the dashboard in the person's browser, signed in
by a local token in the link's fragment; `mcp` refuses to start without a gateway URL and a
way to authenticate."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from jose import jwt
from typer.testing import CliRunner

from memory_layer_cli.commands import app
from memory_layer_cli.local_auth import load_or_create_local_auth
from tests.support.imports import packages_loaded_by

REPO_ROOT = Path(__file__).resolve().parents[3]


def run_open(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    opened = tmp_path / "opened.txt"
    # webbrowser runs $BROWSER with the link in place of %s: a real program, not a patch.
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf "%s" "$1" > {opened}\n')
    browser.chmod(0o755)
    env = {**os.environ, "BROWSER": f"{browser} %s", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "memory_layer_cli", "open", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result, opened


def test_open_opens_the_dashboard_signed_in_as_the_user(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    auth = load_or_create_local_auth(data_dir)
    result, opened = run_open(
        tmp_path, "--user", "bob", "--data-dir", str(data_dir), "--url", "http://127.0.0.1:9100/"
    )
    assert result.returncode == 0, result.stderr
    link = opened.read_text()
    page, _, fragment = link.partition("#access_token=")
    assert page == "http://127.0.0.1:9100/app/"
    claims = jwt.decode(fragment, auth.jwt_secret, audience="authenticated", issuer=auth.issuer)
    assert claims["sub"] == "bob"
    assert "app_metadata" not in claims


def test_open_without_a_local_secret_says_where_to_sign_in(tmp_path: Path) -> None:
    result, opened = run_open(tmp_path, "--data-dir", str(tmp_path / "nothing-here"))
    assert result.returncode == 1
    assert "run `memory-layer up` with this --data-dir" in result.stderr
    assert "http://127.0.0.1:8080/app/" in result.stderr
    assert not opened.exists()


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (["--url", "localhost:8080", "--token", "t"], 2, "http:// or https://"),
        (["--url", "http://127.0.0.1:8080"], 2, "Give --token"),
        (["--url", "http://127.0.0.1:8080", "--user", "alice"], 1, "No local secret"),
        (["--url", "http://127.0.0.1:8080", "--key", "eyJhbGciOi.x.y"], 2, "starts with mlk_"),
    ],
)
def test_mcp_refuses_to_start_without_what_it_needs(
    args: list[str], code: int, said: str, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        app,
        ["mcp", *args, "--data-dir", str(tmp_path)],
        env={"MEMORY_LAYER_TOKEN": "", "MEMORY_LAYER_KEY": ""},
    )
    assert result.exit_code == code
    assert said in result.output


def test_export_refuses_a_key_that_is_not_an_api_key(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["export", "--out", str(tmp_path / "out.ndjson"), "--data-dir", str(tmp_path)],
        env={"MEMORY_LAYER_KEY": "not-a-key", "MEMORY_LAYER_TOKEN": ""},
    )
    assert result.exit_code == 2
    assert "starts with mlk_" in result.output
    assert not (tmp_path / "out.ndjson").exists()


def test_up_on_a_port_another_process_listens_on_names_that_process(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = CliRunner().invoke(app, ["up", "--port", str(port), "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert f"Port {port} is in use by pid {os.getpid()}: " in result.output
    assert "pick another with --port" in result.output


def loaded_packages(module: str) -> set[str]:
    return packages_loaded_by(f"import {module}")


def test_the_cli_loads_no_http_client_mcp_sdk_or_jose_until_a_command_needs_one() -> None:
    loaded = loaded_packages("memory_layer_cli.commands")
    assert "typer" in loaded
    assert loaded & {"httpx", "ssl", "anyio", "mcp", "mcp_types", "jose", "cryptography"} == set()


def test_the_process_up_becomes_loads_no_parser() -> None:
    # It runs for as long as the stack does.
    loaded = loaded_packages("memory_layer_cli.supervisor")
    assert "rich" in loaded
    assert loaded & {"typer", "click", "pydantic", "httpx", "ssl", "mcp", "jose"} == set()
