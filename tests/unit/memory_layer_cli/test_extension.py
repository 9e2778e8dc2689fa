"""`memory-layer extension`: the browser extension written out, connected to one server, in a
form Chromium loads (no name starting with "_" or "."), with host permissions for that
server alone."""

from __future__ import annotations

import json
from pathlib import Path

from jose import jwt
from typer.testing import CliRunner

from memory_layer_cli import app
from memory_layer_cli.extension import extension_source
from memory_layer_cli.local_auth import load_or_create_local_auth


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["extension", *args])
    return result.exit_code, result.output


def test_writes_an_extension_connected_with_a_key(tmp_path: Path) -> None:
    out = tmp_path / "ext"
    code, _ = run(
        "--out", str(out), "--url", "http://127.0.0.1:9123/", "--key", "mlk_abc", "--inject", "auto"
    )

    assert code == 0
    source = extension_source()
    written = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert written == sorted(p.relative_to(source) for p in source.rglob("*"))
    assert not [p for p in written if any(part.startswith(("_", ".")) for part in p.parts)]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["manifest_version"] == 3
    assert manifest["host_permissions"] == ["http://127.0.0.1/*"]
    assert json.loads((out / "config.json").read_text()) == {
        "url": "http://127.0.0.1:9123",
        "key": "mlk_abc",
        "inject": "auto",
    }
    assert (out / "config.json").stat().st_mode & 0o077 == 0


def test_with_user_mints_a_local_token_for_that_user(tmp_path: Path) -> None:
    auth = load_or_create_local_auth(tmp_path / "data")
    out = tmp_path / "ext"

    code, _ = run(
        "--out", str(out), "--url", "https://memory.example.org", "--user", "alice",
        "--data-dir", str(tmp_path / "data"),
    )  # fmt: skip

    assert code == 0
    config = json.loads((out / "config.json").read_text())
    claims = jwt.decode(config["key"], auth.jwt_secret, audience="authenticated")
    assert claims["sub"] == "alice"
    assert config["inject"] == "suggest"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["host_permissions"] == ["https://memory.example.org/*"]


def test_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    out = str(tmp_path / "ext")
    assert run("--out", out, "--key", "k", "--user", "alice")[0] == 2
    assert run("--out", out, "--inject", "always")[0] == 2
    assert run("--out", out, "--url", "ftp://example.org")[0] == 2
    assert run("--out", out, "--user", "alice", "--data-dir", str(tmp_path / "none"))[0] == 1
    assert not (tmp_path / "ext").exists()
