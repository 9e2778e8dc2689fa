"""`memory-layer extension`: write the browser extension out, already connected to a server.

The extension's files ship in the distribution as the `extension` package data (a directory
without `__init__.py`: Chromium refuses to load an extension holding names that start with
"_"). The copy gets a `config.json` the service worker applies at install, and host
permissions for that server alone.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import typer

from gateway.tokens import mint_token
from memory_layer_cli.options import RUN_UP_FIRST, DataDir, console, existing_local_auth

InjectMode = Literal["auto", "suggest", "off"]
INJECT_MODES: tuple[InjectMode, ...] = ("auto", "suggest", "off")
# An extension's token must outlive a working day; `memory-layer token` gives 24 hours.
EXTENSION_TOKEN_TTL_SECONDS = 30 * 24 * 3600
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


def write_extension(out: Path, *, url: str, key: str | None, inject: InjectMode) -> Path:
    """Copy the extension to out, connected to url with key; returns out."""
    url = url.rstrip("/")
    permission = host_permission(url)
    shutil.copytree(extension_source(), out, ignore=SKIPPED, dirs_exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["host_permissions"] = [permission]
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    config = {"url": url, "key": key or "", "inject": inject}
    config_path = out / "config.json"
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    config_path.chmod(0o600)
    return out


def extension_command(
    out: Annotated[Path, typer.Option("--out", help="The directory to write the extension to.")],
    url: Annotated[str, typer.Option(help="The gateway.")] = "http://127.0.0.1:8080",
    key: Annotated[
        str | None, typer.Option("--key", help="An API key (mlk_…) or token for the gateway.")
    ] = None,
    user: Annotated[
        str | None,
        typer.Option("--user", help="Mint a local token for this user id (local stack)."),
    ] = None,
    data_dir: DataDir = Path("data"),
    inject: Annotated[
        str, typer.Option(help="How memories go into prompts on every site: auto, suggest or off.")
    ] = "suggest",
) -> None:
    """Write the browser extension to OUT, connected to the server: load it with
    chrome://extensions → Developer mode → Load unpacked."""
    if inject not in INJECT_MODES:
        console.print(f"--inject must be one of {', '.join(INJECT_MODES)}.")
        raise typer.Exit(2)
    if key is not None and user is not None:
        console.print("Give --key or --user, not both.")
        raise typer.Exit(2)
    if user is not None:
        auth = existing_local_auth(data_dir, RUN_UP_FIRST)
        key = mint_token(
            auth.jwt_secret, user, issuer=auth.issuer, ttl_seconds=EXTENSION_TOKEN_TTL_SECONDS
        )
    try:
        written = write_extension(out, url=url, key=key, inject=inject)  # type: ignore[arg-type]
    except ValueError as exc:
        console.print(f"--url: {exc}")
        raise typer.Exit(2) from None
    console.print(f"Wrote the extension to {written.resolve()}, connected to {url.rstrip('/')}.")
    if key is None:
        console.print("No key given: paste one in the extension's options page.")
    console.print("Load it: chrome://extensions → Developer mode → Load unpacked → that directory.")
