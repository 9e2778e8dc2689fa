"""The `memory-layer` command: run the whole stack locally, mint development tokens, open the
dashboard signed in, import exports, bridge desktop apps' MCP over stdio to a gateway."""

from __future__ import annotations

import contextlib
import os
import time
import webbrowser
from pathlib import Path
from typing import Annotated

import anyio
import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from gateway.cli.local_auth import load_or_create_local_auth, local_auth_path
from gateway.cli.mcp_bridge import LocalTokens, StaticToken, serve_bridge
from gateway.cli.stack import (
    LOOPBACK,
    Service,
    free_port,
    port_is_free,
    private_dir,
    sigterm_as_interrupt,
    stack_environment,
    start_service,
    stop_services,
    wait_until_ready,
)
from gateway.importing import ExportError, Importer, ImportRefused, read_export
from gateway.tokens import mint_token

app = typer.Typer(
    help="Memory Layer: a self-hosted memory backend for AI-chat browser extensions.",
    no_args_is_help=True,
    add_completion=False,
)


# No wrapping: the printed commands must stay copy-pasteable.
console = Console(stderr=True, soft_wrap=True)


# Whose dashboard `up` links to and `open` opens when no --user is given.
DEFAULT_DASHBOARD_USER = "me"

DataDir = Annotated[
    Path,
    typer.Option("--data-dir", help="Where the store, logs and the local JWT secret live."),
]


@app.command()
def up(
    port: Annotated[int, typer.Option(help="Port of the gateway on 127.0.0.1.")] = 8080,
    data_dir: DataDir = Path("data"),
) -> None:
    """Start memory_service, chat_service and the gateway on loopback with the embedded store.
    Chat answers through the LLM set by CHAT_LLM_* variables, or quotes memories without one."""
    data_dir = data_dir.resolve()
    log_dir = private_dir(private_dir(data_dir) / "logs")
    private_dir(data_dir / "memory")
    if not port_is_free(port):
        console.print(f"[red]Port {port} is in use[/red]; pick another with --port.")
        raise typer.Exit(1)
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
                wait_until_ready(url, services)
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
    path = local_auth_path(data_dir.resolve())
    if not path.exists():
        console.print(f"No local secret at {path}; run `memory-layer up` with this --data-dir.")
        raise typer.Exit(1)
    auth = load_or_create_local_auth(data_dir.resolve())
    typer.echo(mint_token(auth.jwt_secret, user, issuer=auth.issuer, ttl_seconds=ttl, admin=admin))


def dashboard_link(url: str, access_token: str) -> str:
    """The page reads the token from the fragment, which browsers never send to a server."""
    return f"{url.rstrip('/')}/app/#access_token={access_token}"


@app.command("open")
def open_dashboard(
    user: Annotated[
        str, typer.Option("--user", help="Whose memories (a local token for this user id).")
    ] = DEFAULT_DASHBOARD_USER,
    url: Annotated[str, typer.Option(help="The gateway.")] = "http://127.0.0.1:8080",
    data_dir: DataDir = Path("data"),
    admin: Annotated[bool, typer.Option(help="Sign in with the admin role.")] = False,
) -> None:
    """Open the dashboard in the default browser, signed in as USER (local mode)."""
    path = local_auth_path(data_dir.resolve())
    if not path.exists():
        console.print(
            f"No local secret at {path}; run `memory-layer up` with this --data-dir, "
            f"or sign in with Supabase at {url.rstrip('/')}/app/."
        )
        raise typer.Exit(1)
    auth = load_or_create_local_auth(data_dir.resolve())
    link = dashboard_link(url, mint_token(auth.jwt_secret, user, issuer=auth.issuer, admin=admin))
    if not webbrowser.open(link):
        console.print(f"No browser could be started; open this link:\n{link}")
        raise typer.Exit(1)
    console.print(f"Opened the dashboard for {user} at {url.rstrip('/')}/app/.")


@app.command("import")
def import_export(
    file: Annotated[
        Path, typer.Argument(help="The export's .zip, or the conversations.json inside it.")
    ],
    user: Annotated[
        str | None, typer.Option("--user", help="Whose memories (with a local secret).")
    ] = None,
    url: Annotated[str, typer.Option(help="The gateway.")] = "http://127.0.0.1:8080",
    bearer: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="MEMORY_LAYER_TOKEN",
            help="A token for the gateway, e.g. your Supabase access token.",
        ),
    ] = None,
    data_dir: DataDir = Path("data"),
) -> None:
    """Load a ChatGPT or Claude data export into your memories, through the gateway.

    Without --token, a local token for --user is minted with the secret `up` created.
    Importing the same export again saves nothing twice.
    """
    try:
        conversations = read_export(file)
    except ExportError as exc:
        console.print(f"Cannot import: {exc}")
        raise typer.Exit(1) from exc
    if bearer is None:
        if user is None:
            console.print("Give --token (or MEMORY_LAYER_TOKEN), or --user with a local stack.")
            raise typer.Exit(2)
        path = local_auth_path(data_dir.resolve())
        if not path.exists():
            console.print(f"No local secret at {path}; give --token, or the --data-dir of `up`.")
            raise typer.Exit(1)
        auth = load_or_create_local_auth(data_dir.resolve())
        bearer = mint_token(auth.jwt_secret, user, issuer=auth.issuer)
    headers = {"Authorization": f"Bearer {bearer}"}
    with (
        httpx.Client(base_url=url, headers=headers, timeout=60.0) as client,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress,
    ):
        try:
            client.get("/healthz").raise_for_status()
        except httpx.HTTPError as exc:
            console.print(
                f"Cannot reach the gateway at {url} ({exc}); is `memory-layer up` running?"
            )
            raise typer.Exit(1) from exc
        importer = Importer(
            client,
            on_wait=lambda seconds, why: progress.console.print(f"{why}; waiting {seconds:.0f} s"),
        )
        total = importer.messages(conversations)
        task = progress.add_task(f"{file.name}: {len(conversations)} conversations", total=total)
        try:
            for done in importer.run(conversations):
                progress.advance(task, done)
        except ImportRefused as exc:
            console.print(f"Import stopped: {exc}")
            raise typer.Exit(1) from exc
    report = importer.report
    console.print(
        f"Imported {report.prompts} prompts and {report.answers} answers "
        f"from {len(conversations)} conversations."
    )
    for reason, count in sorted(report.skipped.items()):
        console.print(f"  skipped {count}: {reason}")


@app.command("mcp")
def mcp_bridge(
    url: Annotated[str, typer.Option("--url", help="The gateway, e.g. http://127.0.0.1:8080.")],
    bearer: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="MEMORY_LAYER_TOKEN",
            help="A token for the gateway, e.g. your Supabase access token.",
        ),
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", help="Whose memories (with a local secret).")
    ] = None,
    data_dir: DataDir = Path("data"),
) -> None:
    """Serve MCP on stdin/stdout and forward it to the gateway's /mcp, for desktop apps that
    only launch local MCP servers (Claude Desktop, Cursor).

    Without --token, tokens for --user are minted, and renewed, with the secret `up` created.
    """
    if not url.startswith(("http://", "https://")):
        console.print(f"--url must be the gateway's http:// or https:// URL, not {url!r}.")
        raise typer.Exit(2)
    auth: httpx.Auth
    if bearer:
        auth = StaticToken(bearer)
    elif user is not None:
        path = local_auth_path(data_dir.resolve())
        if not path.exists():
            console.print(f"No local secret at {path}; give --token, or the --data-dir of `up`.")
            raise typer.Exit(1)
        local = load_or_create_local_auth(data_dir.resolve())
        auth = LocalTokens(local.jwt_secret, user, local.issuer)
    else:
        console.print("Give --token (or MEMORY_LAYER_TOKEN), or --user with a local stack.")
        raise typer.Exit(2)
    # The app ends the bridge by closing stdin; Ctrl-C in a terminal needs no traceback.
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(serve_bridge, url, auth)


def main() -> None:
    app()
