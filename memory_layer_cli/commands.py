"""The `memory-layer` command: run the whole stack locally, mint development tokens, open the
dashboard signed in, import exports and export memories (transfer.py), bridge desktop apps'
MCP over stdio to a gateway.

`up` checks that its data dir and port are free, then this process becomes the stack's
supervisor (supervisor.py). What only some commands use (an HTTP client, the MCP SDK) is
imported by those commands, never here."""

from __future__ import annotations

import contextlib
import os
import sys
import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from gateway.tokens import mint_token
from memory_layer_cli.extension import extension_command
from memory_layer_cli.leftovers import (
    TAKE_OVER_FLAG,
    data_dir_obstacle,
    leftover_group,
    port_obstacle,
    stop_leftovers,
)
from memory_layer_cli.options import (
    GIVE_UP_DATA_DIR,
    RUN_UP_FIRST,
    ApiKey,
    Bearer,
    DataDir,
    Url,
    User,
    api_key,
    console,
    existing_local_auth,
    local_user,
)
from memory_layer_cli.stack import private_dir
from memory_layer_cli.supervisor import DEFAULT_DASHBOARD_USER, dashboard_link, supervisor_argv
from memory_layer_cli.transfer import export_memories, import_export

if TYPE_CHECKING:
    import httpx

app = typer.Typer(
    help="Memory Layer: a self-hosted memory backend for AI-chat browser extensions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def up(
    port: Annotated[int, typer.Option(help="Port of the gateway on 127.0.0.1.")] = 8080,
    data_dir: DataDir = Path("data"),
    take_over: Annotated[
        bool,
        typer.Option(
            TAKE_OVER_FLAG,
            help="Stop the services an earlier `up` left running on this data dir or port "
            "(never any other process), then start.",
        ),
    ] = False,
) -> None:
    """Start memory_service, chat_service and the gateway on loopback with the embedded store.
    Chat answers through the LLM set by CHAT_LLM_* variables, or quotes memories without one.
    The services stop when this command stops, however it stops."""
    data_dir = data_dir.resolve()
    clear_the_way(private_dir(private_dir(data_dir) / "memory"), port, take_over)
    # This process supervises the stack for as long as it runs: it goes on as a module that
    # needs no parser (the same pid), leaving typer and what it loaded behind.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, supervisor_argv(port, data_dir))  # noqa: S606 - this interpreter


def clear_the_way(memory_dir: Path, port: int, take_over: bool) -> None:
    """Exit unless the data dir and the port are free, or held by leftovers of an earlier
    `up` that --take-over stops."""
    for _ in range(2):
        obstacles = [o for o in (data_dir_obstacle(memory_dir), port_obstacle(port)) if o]
        if not obstacles:
            return
        if take_over and all(o.leftover for o in obstacles):
            for obstacle in obstacles:
                assert obstacle.holder is not None
                group = leftover_group(obstacle.holder)
                # A command line may hold brackets that rich would read as markup.
                console.print(f"Stopping {escape(', '.join(map(str, group)))}…")
                stop_leftovers(group)
            continue
        for obstacle in obstacles:
            console.print(
                f"[red]{escape(obstacle.describe())}[/red]; {obstacle.remedy(take_over)}."
            )
        raise typer.Exit(1)
    console.print(
        "[red]The data dir or the port is still in use after stopping the leftovers.[/red]"
    )
    raise typer.Exit(1)


@app.command()
def token(
    user: Annotated[str, typer.Option("--user", help="The user id (token subject).")],
    data_dir: DataDir = Path("data"),
    admin: Annotated[bool, typer.Option(help="Give the token the admin role.")] = False,
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds.", min=60)] = 24 * 3600,
) -> None:
    """Print a local development token for USER, signed with the secret `up` created."""
    auth = existing_local_auth(data_dir, RUN_UP_FIRST)
    typer.echo(mint_token(auth.jwt_secret, user, issuer=auth.issuer, ttl_seconds=ttl, admin=admin))


@app.command("open")
def open_dashboard(
    user: Annotated[
        str, typer.Option("--user", help="Whose memories (a local token for this user id).")
    ] = DEFAULT_DASHBOARD_USER,
    url: Url = "http://127.0.0.1:8080",
    data_dir: DataDir = Path("data"),
    admin: Annotated[bool, typer.Option(help="Sign in with the admin role.")] = False,
) -> None:
    """Open the dashboard in the default browser, signed in as USER (local mode)."""
    auth = existing_local_auth(
        data_dir, f"{RUN_UP_FIRST}, or sign in with Supabase at {url.rstrip('/')}/app/"
    )
    link = dashboard_link(url, mint_token(auth.jwt_secret, user, issuer=auth.issuer, admin=admin))
    if not webbrowser.open(link):
        console.print(f"No browser could be started; open this link:\n{link}")
        raise typer.Exit(1)
    console.print(
        f"Opened the dashboard for {user} at {url.rstrip('/')}/app/; confirm the sign-in there "
        "(the page asks before taking any link it did not ask for)."
    )


app.command("import")(import_export)
app.command("export")(export_memories)
app.command("extension")(extension_command)


@app.command("mcp")
def mcp_bridge(
    url: Annotated[str, typer.Option("--url", help="The gateway, e.g. http://127.0.0.1:8080.")],
    bearer: Bearer = None,
    key: ApiKey = None,
    user: User = None,
    data_dir: DataDir = Path("data"),
) -> None:
    """Serve MCP on stdin/stdout and forward it to the gateway's /mcp, for desktop apps that
    only launch local MCP servers (Claude Desktop, Cursor).

    With --key (an API key, which lasts until revoked) or --token, that credential is sent;
    else tokens for --user are minted, and renewed, with the secret `up` created.
    """
    if not url.startswith(("http://", "https://")):
        console.print(f"--url must be the gateway's http:// or https:// URL, not {url!r}.")
        raise typer.Exit(2)
    import anyio

    from memory_layer_cli.mcp_bridge import LocalTokens, StaticToken, serve_bridge

    auth: httpx.Auth
    credential = api_key(key) or bearer
    if credential:
        auth = StaticToken(credential)
    else:
        subject = local_user(user)
        local = existing_local_auth(data_dir, GIVE_UP_DATA_DIR)
        auth = LocalTokens(local.jwt_secret, subject, local.issuer)
    # The app ends the bridge by closing stdin; Ctrl-C in a terminal needs no traceback.
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(serve_bridge, url, auth)


def main() -> None:
    app()
