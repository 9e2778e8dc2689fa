"""`memory-layer extension`: the browser extension written out, connected to one server, in a
form Chromium loads (no name starting with "_" or "."), with host permissions for that
server alone; for Firefox with the manifest Firefox takes, and as a zip."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from typer.testing import CliRunner

from memory_layer_cli.commands import app
from memory_layer_cli.extension import extension_source
from memory_layer_cli.local_auth import load_or_create_local_auth
from tests.support.ports import free_port


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


def test_for_firefox_the_manifest_is_adapted_and_a_zip_written(tmp_path: Path) -> None:
    out = tmp_path / "ext-firefox"
    code, output = run(
        "--out", str(out), "--url", "http://127.0.0.1:9123", "--key", "mlk_abc",
        "--browser", "firefox",
    )  # fmt: skip

    assert code == 0, output
    source = json.loads((extension_source() / "manifest.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    # Firefox runs the same worker as a background script and knows the add-on by its id.
    assert manifest["background"] == {"scripts": ["worker/service_worker.js"], "type": "module"}
    assert manifest["browser_specific_settings"]["gecko"]["id"] == "extension@memory-layer"
    assert "minimum_chrome_version" not in manifest
    unchanged = set(source) - {"background", "minimum_chrome_version", "host_permissions"}
    assert {k: manifest[k] for k in unchanged} == {k: source[k] for k in unchanged}
    assert manifest["host_permissions"] == ["http://127.0.0.1/*"]

    archive = tmp_path / "ext-firefox.zip"
    with zipfile.ZipFile(archive) as zipped:
        names = sorted(zipped.namelist())
        assert json.loads(zipped.read("manifest.json")) == manifest
        assert json.loads(zipped.read("config.json"))["key"] == "mlk_abc"
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == files
    assert archive.stat().st_mode & 0o077 == 0


def test_with_user_and_no_gateway_says_so_and_writes_nothing(tmp_path: Path) -> None:
    load_or_create_local_auth(tmp_path / "data")
    out = tmp_path / "ext"
    url = f"http://127.0.0.1:{free_port()}"

    code, output = run("--out", str(out), "--url", url, "--user", "alice",
                        "--data-dir", str(tmp_path / "data"))  # fmt: skip

    assert code == 1
    assert f"No key made: cannot reach the gateway at {url}" in output
    assert "is `memory-layer up` running?" in output
    assert not out.exists()


def test_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    out = str(tmp_path / "ext")
    assert run("--out", out, "--key", "k", "--user", "alice")[0] == 2
    assert run("--out", out, "--inject", "always")[0] == 2
    assert run("--out", out, "--url", "ftp://example.org")[0] == 2
    assert run("--out", out, "--browser", "safari")[0] == 2
    assert run("--out", out, "--user", "alice", "--data-dir", str(tmp_path / "none"))[0] == 1
    assert not (tmp_path / "ext").exists()
