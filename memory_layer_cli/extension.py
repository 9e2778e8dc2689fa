"""`memory-layer extension`: write the browser extension out, already connected to a server.

The extension's files ship in the distribution as the `extension` package data (a directory
without `__init__.py`: Chromium refuses to load an extension holding names that start with
"_"). The copy gets a `config.json` the service worker applies at install, and host
permissions for that server alone. One source serves both browsers: for Firefox the manifest
is adapted as it is written, and a zip is written beside the directory.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import zipfile
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import typer

from gateway.tokens import mint_token
from memory_layer_cli.options import RUN_UP_FIRST, DataDir, console, existing_local_auth

InjectMode = Literal["auto", "suggest", "off"]
INJECT_MODES: tuple[InjectMode, ...] = ("auto", "suggest", "off")
Browser = Literal["chromium", "firefox"]
BROWSERS: tuple[Browser, ...] = ("chromium", "firefox")
BROWSER_NAMES = {"chromium": "Chromium", "firefox": "Firefox"}
# Firefox knows an add-on by this id: storage and granted permissions stay with it.
GECKO_ID = "extension@memory-layer"
# The first ESR with MV3 host permissions granted at install and storage.session.
FIREFOX_MIN_VERSION = "128.0"
# The token that asks the gateway for the extension's key is used once, at once.
KEY_REQUEST_TOKEN_TTL_SECONDS = 300
SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


def extension_source() -> Path:
    """The extension's directory: in the installed distribution, or in the source tree."""
    spec = importlib.util.find_spec("extension")
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "manifest.json").is_file():
            return Path(location)
    here = Path(__file__).resolve().parents[1] / "extension"
    if (here / "manifest.json").is_file():
        return here
    raise FileNotFoundError("the extension's files are not in this installation")


def host_permission(url: str) -> str:
    """The match pattern for every port of the server's host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    return f"{parts.scheme}://{parts.hostname}/*"


def for_firefox(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as Firefox takes it: the worker runs as a background script (Firefox has
    no extension service workers), and the add-on has an id of its own."""
    adapted = {k: v for k, v in manifest.items() if k != "minimum_chrome_version"}
    background = manifest["background"]
    adapted["background"] = {"scripts": [background["service_worker"]], "type": background["type"]}
    adapted["browser_specific_settings"] = {
        "gecko": {"id": GECKO_ID, "strict_min_version": FIREFOX_MIN_VERSION}
    }
    return adapted


def zip_of(directory: Path) -> Path:
    """directory as a zip beside it, with manifest.json at its root: what Firefox loads as a
    temporary add-on (about:debugging → Load Temporary Add-on)."""
    archive = directory.with_name(f"{directory.name}.zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            zipped.write(path, path.relative_to(directory).as_posix())
    # It holds config.json, and so the key.
    archive.chmod(0o600)
    return archive


def write_extension(
    out: Path, *, url: str, key: str | None, inject: InjectMode, browser: Browser = "chromium"
) -> Path:
    """Copy the extension to out, connected to url with key; returns out (for Firefox, also
    writes out's zip beside it)."""
    url = url.rstrip("/")
    permission = host_permission(url)
    shutil.copytree(extension_source(), out, ignore=SKIPPED, dirs_exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["host_permissions"] = [permission]
    if browser == "firefox":
        manifest = for_firefox(manifest)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    config = {"url": url, "key": key or "", "inject": inject}
    config_path = out / "config.json"
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    config_path.chmod(0o600)
    if browser == "firefox":
        zip_of(out)
    return out


class KeyNotCreated(Exception):
    """The gateway did not make the key; the message says why."""


def create_key(url: str, session_token: str, name: str) -> str:
    """A new API key (both scopes, no expiry) made by the gateway at url for the session
    token's user: the same key store the dashboard's keys live in."""
    # Imported here: `up` imports this module with the rest of the CLI and sends no request.
    import httpx

    try:
        answer = httpx.post(
            f"{url}/keys",
            json={"name": name, "scopes": ["read", "write"]},
            headers={"Authorization": f"Bearer {session_token}"},
            timeout=30.0,
        )
    except httpx.HTTPError as exc:
        raise KeyNotCreated(
            f"cannot reach the gateway at {url} ({exc}); is `memory-layer up` running?"
        ) from None
    if answer.status_code != 201:
        raise KeyNotCreated(f"the gateway at {url} answered {answer.status_code}: {answer.text}")
    return str(answer.json()["key"])


def extension_command(
    out: Annotated[Path, typer.Option("--out", help="The directory to write the extension to.")],
    url: Annotated[str, typer.Option(help="The gateway.")] = "http://127.0.0.1:8080",
    key: Annotated[
        str | None, typer.Option("--key", help="An API key (mlk_…) or token for the gateway.")
    ] = None,
    user: Annotated[
        str | None,
        typer.Option(
            "--user",
            help="Make an API key for this user id on the gateway (local stack: signed with "
            "the secret in --data-dir).",
        ),
    ] = None,
    data_dir: DataDir = Path("data"),
    inject: Annotated[
        str, typer.Option(help="How memories go into prompts on every site: auto, suggest or off.")
    ] = "suggest",
    browser: Annotated[
        str,
        typer.Option(
            "--browser", help="chromium (Chrome, Edge, Brave) or firefox (also writes OUT.zip)."
        ),
    ] = "chromium",
) -> None:
    """Write the browser extension to OUT, connected to the server: load it with
    chrome://extensions → Developer mode → Load unpacked, or in Firefox with
    about:debugging → This Firefox → Load Temporary Add-on."""
    if inject not in INJECT_MODES:
        console.print(f"--inject must be one of {', '.join(INJECT_MODES)}.")
        raise typer.Exit(2)
    if browser not in BROWSERS:
        console.print(f"--browser must be one of {', '.join(BROWSERS)}.")
        raise typer.Exit(2)
    if key is not None and user is not None:
        console.print("Give --key or --user, not both.")
        raise typer.Exit(2)
    try:
        host_permission(url)
    except ValueError as exc:
        console.print(f"--url: {exc}")
        raise typer.Exit(2) from None
    url = url.rstrip("/")
    if user is not None:
        auth = existing_local_auth(data_dir, RUN_UP_FIRST)
        session = mint_token(
            auth.jwt_secret, user, issuer=auth.issuer, ttl_seconds=KEY_REQUEST_TOKEN_TTL_SECONDS
        )
        try:
            key = create_key(url, session, f"Memory Layer extension for {BROWSER_NAMES[browser]}")
        except KeyNotCreated as exc:
            console.print(f"No key made: {exc}")
            raise typer.Exit(1) from None
    written = write_extension(out, url=url, key=key, inject=inject, browser=browser)  # type: ignore[arg-type]
    console.print(f"Wrote the extension to {written.resolve()}, connected to {url}.")
    if user is not None:
        console.print(f"With a new API key for {user}; revoke it on the dashboard's API keys.")
    elif key is None:
        console.print("No key given: connect it from its options page.")
    if browser == "firefox":
        console.print(
            f"Load it: about:debugging → This Firefox → Load Temporary Add-on → "
            f"{written.resolve()}.zip (or its manifest.json)."
        )
    else:
        console.print(
            "Load it: chrome://extensions → Developer mode → Load unpacked → that directory."
        )
