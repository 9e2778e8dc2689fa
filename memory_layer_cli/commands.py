"""The `memory-layer` command: run the whole stack locally, mint development tokens, open the
dashboard signed in, import exports and export memories (transfer.py), bridge desktop apps'
MCP over stdio to a gateway.

`up` runs in this process for as long as the stack does, so what only other commands use
(an HTTP client, the MCP SDK) is imported by those commands, never here."""

from __future__ import annotations

import contextlib
import os
import time
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
from memory_layer_cli.local_auth import load_or_create_local_auth
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
from memory_layer_cli.ports import LOOPBACK, free_port
from memory_layer_cli.stack import (
    Service,
    private_dir,
    sigterm_as_interrupt,
    stack_environment,
    start_service,
    stop_services,
    wait_until_ready,
)
from memory_layer_cli.transfer import export_memories, import_export

if TYPE_CHECKING:
    import httpx

app = typer.Typer(
    help="Memory Layer: a self-hosted memory backend for AI-chat browser extensions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# Whose dashboard `up` links to and `open` opens when no --user is given.
DEFAULT_DASHBOARD_USER = "me"


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
    log_dir = private_dir(private_dir(data_dir) / "logs")
    clear_the_way(private_dir(data_dir / "memory"), port, take_over)
    supabase = bool(os.environ.get("GATEWAY_SUPABASE_URL"))
    auth = None if supabase else load_or_create_local_auth(data_dir)
    env = stack_environment(port, free_port(), free_port(), data_dir, auth)
    url = f"http://{LOOPBACK}:{port}"

    services: list[Service] = []
    with sigterm_as_interrupt():
        try:
            services.append(start_service("memory_service", "memory_service", env, log_dir))
            services.append(start_service("chat_service", "chat_service", env, log_dir))
            services.append(start_service("gateway", "gateway", env, log_dir))
            with console.status(
                "Starting memory_service (loading the model), chat_service and the gateway…"
            ):
                wait_until_ready(port, services)
            print_ready(url, data_dir, log_dir, supabase, env.get("CHAT_LLM_PROVIDER", ""))
            while all(service.process.poll() is None for service in services):
                time.sleep(0.5)
            failed = next(s for s in services if s.process.poll() is not None)
            console.print(f"[red]{failed.name} stopped unexpectedly:[/red]\n{failed.log_tail()}")
            raise typer.Exit(1)
        except KeyboardInterrupt:
            console.print("Stopping…")
        except RuntimeError as exc:
            console.print(f"[red]Could not start:[/red] {exc}")
            raise typer.Exit(1) from None
        finally:
            stop_services(services)


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


def print_ready(url: str, data_dir: Path, log_dir: Path, supabase: bool, llm_provider: str) -> None:
    console.print(f"[green]Memory Layer is up[/green] at [bold]{url}[/bold]")
    console.print(f"API docs:     {url}/docs")
    if llm_provider.strip():
        console.print(f"Chat:         POST {url}/chat answers with {llm_provider.strip()}.")
    else:
        console.print(
            f"Chat:         POST {url}/chat runs offline (quotes your memories); set "
            "CHAT_LLM_PROVIDER, CHAT_LLM_MODEL and CHAT_LLM_API_KEY for a language model."
        )
    if supabase:
        console.print(f"Dashboard:    {url}/app/ (sign in with your Supabase account)")
        console.print("Tokens: Supabase access tokens of your project (GATEWAY_SUPABASE_URL).")
    else:
        auth = load_or_create_local_auth(data_dir)
        link = dashboard_link(
            url, mint_token(auth.jwt_secret, DEFAULT_DASHBOARD_USER, issuer=auth.issuer)
        )
        console.print(f"Dashboard:    {link}")
        token_command = f"memory-layer token --user alice --data-dir {data_dir}"
        console.print(f"Get a token:  [bold]export TOKEN=$({token_command})[/bold]")
        console.print(
            f"Try it:       curl -s -X POST {url}/save-prompt "
            '-H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" '
            '-d \'{"prompt": "I prefer window seats"}\''
        )
        console.print(
            f"MCP (stdio):  memory-layer mcp --url {url} --user alice --data-dir {data_dir}"
        )
    console.print(f"Logs in {log_dir}. Press Ctrl-C to stop.")


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


def dashboard_link(url: str, access_token: str) -> str:
    """The page reads the token from the fragment, which browsers never send to a server."""
    return f"{url.rstrip('/')}/app/#access_token={access_token}"


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
