"""What the commands share: the console they talk on, their common options, and how a command
gets the token it sends (given, or minted with the local secret `up` created)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gateway.tokens import mint_token
from memory_layer_cli.console import console
from memory_layer_cli.local_auth import LocalAuth, load_or_create_local_auth, local_auth_path

DataDir = Annotated[
    Path,
    typer.Option("--data-dir", help="Where the store, logs and the local JWT secret live."),
]
Url = Annotated[str, typer.Option(help="The gateway.")]
User = Annotated[str | None, typer.Option("--user", help="Whose memories (with a local secret).")]
Bearer = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="MEMORY_LAYER_TOKEN",
        help="A token for the gateway, e.g. your Supabase access token.",
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--key",
        envvar="MEMORY_LAYER_KEY",
        help="An API key (mlk_...) made on the dashboard or with POST /keys; it lasts until "
        "revoked. Taken before --token.",
    ),
]

# What to do instead when a command needs the local secret and the data dir has none.
RUN_UP_FIRST = "run `memory-layer up` with this --data-dir"
GIVE_UP_DATA_DIR = "give --token, or the --data-dir of `up`"


def existing_local_auth(data_dir: Path, remedy: str) -> LocalAuth:
    """The local secret `up` created in DATA_DIR; without one, say so and what to do instead.
    Never creates one: a fresh secret would sign tokens no running gateway accepts."""
    path = local_auth_path(data_dir.resolve())
    if not path.exists():
        console.print(f"No local secret at {path}; {remedy}.")
        raise typer.Exit(1)
    return load_or_create_local_auth(data_dir.resolve())


def local_user(user: str | None) -> str:
    """The --user to mint local tokens for, required when no --token was given."""
    if user is None:
        console.print(
            "Give --token (or MEMORY_LAYER_TOKEN), --key (or MEMORY_LAYER_KEY), "
            "or --user with a local stack."
        )
        raise typer.Exit(2)
    return user


def api_key(key: str | None) -> str | None:
    """The --key given, checked for the shape of a key so a token given there is caught here,
    not as a 401 from the gateway."""
    key = (key or "").strip()
    if not key:
        return None
    if not key.startswith("mlk_"):
        console.print("--key (MEMORY_LAYER_KEY) takes an API key, which starts with mlk_.")
        raise typer.Exit(2)
    return key


def bearer_token(
    bearer: str | None, user: str | None, data_dir: Path, key: str | None = None
) -> str:
    """The credential to send: the API key given, else the token given, else a local token
    minted for --user."""
    if (checked := api_key(key)) is not None:
        return checked
    if bearer is not None:
        return bearer
    subject = local_user(user)
    auth = existing_local_auth(data_dir, GIVE_UP_DATA_DIR)
    return mint_token(auth.jwt_secret, subject, issuer=auth.issuer)
