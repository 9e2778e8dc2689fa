"""The `memory-layer` command: run the whole stack locally, mint development tokens, open the
dashboard signed in, import exports and export memories, bridge desktop apps' MCP over stdio
to a gateway."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import time
import webbrowser
from pathlib import Path
from typing import Annotated

import anyio
import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

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
from gateway.importing import (
    ExportError,
    ExportItems,
    Importer,
    ImportRefused,
    ResumeState,
    count_items,
)
from gateway.importing.uploader import DEFAULT_IN_FLIGHT
from gateway.tokens import mint_token
from service_kit.limits import MAX_BATCH_ITEMS

app = typer.Typer(
    help="Memory Layer: a self-hosted memory backend for AI-chat browser extensions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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


def _bearer(bearer: str | None, user: str | None, data_dir: Path) -> str:
    """The token to send: the one given, or a local one minted for --user."""
    if bearer is not None:
        return bearer
    if user is None:
        console.print("Give --token (or MEMORY_LAYER_TOKEN), or --user with a local stack.")
        raise typer.Exit(2)
    path = local_auth_path(data_dir.resolve())
    if not path.exists():
        console.print(f"No local secret at {path}; give --token, or the --data-dir of `up`.")
        raise typer.Exit(1)
    auth = load_or_create_local_auth(data_dir.resolve())
    return mint_token(auth.jwt_secret, user, issuer=auth.issuer)


def _check_gateway(client: httpx.Client, url: str) -> None:
    try:
        client.get("/healthz").raise_for_status()
    except httpx.HTTPError as exc:
        console.print(f"Cannot reach the gateway at {url} ({exc}); is `memory-layer up` running?")
        raise typer.Exit(1) from None


def _subject(bearer: str) -> str:
    """The token's subject, read without verifying (the gateway does that): the progress of
    an import belongs to the user, not to one token."""
    try:
        payload = bearer.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims["sub"])
    except (IndexError, ValueError, KeyError, TypeError):
        return hashlib.sha256(bearer.encode()).hexdigest()


def _resume_state(file: Path, url: str, bearer: str, data_dir: Path) -> ResumeState:
    stat = file.stat()
    key = json.dumps([str(file.resolve()), stat.st_size, stat.st_mtime_ns, url, _subject(bearer)])
    name = hashlib.sha256(key.encode()).hexdigest()[:32]
    return ResumeState(data_dir.resolve() / "imports" / f"{name}.json", key)


class RateColumn(ProgressColumn):
    """Messages per second over the last half minute."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} msg/s" if speed else "… msg/s")


@app.command("import")
def import_export(
    file: Annotated[
        Path,
        typer.Argument(
            help="A ChatGPT or Claude export (.zip or its conversations.json), or an NDJSON "
            "file from `memory-layer export`."
        ),
    ],
    user: User = None,
    url: Url = "http://127.0.0.1:8080",
    bearer: Bearer = None,
    data_dir: DataDir = Path("data"),
    batch_size: Annotated[
        int, typer.Option(help="Messages per batch.", min=2, max=MAX_BATCH_ITEMS)
    ] = MAX_BATCH_ITEMS,
    in_flight: Annotated[
        int, typer.Option(help="Batches sent at once.", min=1, max=16)
    ] = DEFAULT_IN_FLIGHT,
    restart: Annotated[
        bool, typer.Option(help="Ignore the progress of an interrupted run of this import.")
    ] = False,
) -> None:
    """Load an export into your memories through the gateway's batch route.

    Without --token, a local token for --user is minted with the secret `up` created. Each
    message keeps its original time and id: running the same import again (after an
    interruption, say) continues where it stopped and stores nothing twice.
    """
    try:
        _import(file, user, url, bearer, data_dir, batch_size, in_flight, restart)
    except (typer.Exit, typer.Abort):
        raise
    except KeyboardInterrupt:
        console.print("Interrupted. Run the same command again to continue.")
        raise typer.Exit(130) from None
    except ExportError as exc:
        console.print(f"Cannot import: {exc}")
        raise typer.Exit(1) from None
    except ImportRefused as exc:
        console.print(f"Import stopped: {exc}. Run the same command again to continue.")
        raise typer.Exit(1) from None
    except Exception as exc:  # the user gets a sentence, never a traceback
        console.print(f"Import failed: {exc.__class__.__name__}: {exc}")
        raise typer.Exit(1) from None


def _import(
    file: Path,
    user: str | None,
    url: str,
    bearer: str | None,
    data_dir: Path,
    batch_size: int,
    in_flight: int,
    restart: bool,
) -> None:
    export = ExportItems(file)
    total = count_items(ExportItems(file).phases())
    token = _bearer(bearer, user, data_dir)
    state = _resume_state(file, url, token, data_dir)
    if restart:
        state.clear()
        state.units_done = 0
    headers = {"Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=in_flight + 1)
    with (
        httpx.Client(base_url=url, headers=headers, timeout=180.0, limits=limits) as client,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        ) as progress,
    ):
        _check_gateway(client, url)
        task = progress.add_task(f"{file.name}", total=total)
        importer = Importer(
            client,
            batch_items=batch_size,
            in_flight=in_flight,
            state=state,
            on_wait=lambda seconds, why: progress.console.print(f"{why}; waiting {seconds:.0f} s"),
            on_progress=lambda n: progress.advance(task, n),
        )
        if state.units_done:
            progress.console.print("Continuing an interrupted import of this file.")
        report = importer.run(export.phases())
    elapsed = time.perf_counter() - started
    sent = report.handled - report.resumed
    where = f" from {export.conversations:,} conversations" if export.conversations else ""
    console.print(
        f"Imported {report.handled:,} messages{where} in {elapsed:.1f} s "
        f"({sent / elapsed if elapsed else 0:,.0f} messages/s): {report.stored:,} stored, "
        f"{report.already_present:,} already present"
        + (f", {report.resumed:,} done by an earlier run" if report.resumed else "")
        + f", {report.refused.total():,} refused."
    )
    for reason, count in sorted(report.refused.items()):
        console.print(f"  refused {count:,}: {reason}")
    for reason, count in sorted(export.skipped.items()):
        console.print(f"  skipped {count:,}: {reason}")


@app.command("export")
def export_memories(
    out: Annotated[Path, typer.Option("--out", help="The NDJSON file to write.")],
    user: User = None,
    url: Url = "http://127.0.0.1:8080",
    bearer: Bearer = None,
    data_dir: DataDir = Path("data"),
) -> None:
    """Write every memory you own to an NDJSON file that `import` reads back as it was."""
    token = _bearer(bearer, user, data_dir)
    headers = {"Authorization": f"Bearer {token}"}
    partial = out.with_name(out.name + ".partial")
    lines = 0
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=600.0) as client:
            _check_gateway(client, url)
            with client.stream("GET", "/export") as response, partial.open("wb") as sink:
                if response.status_code != 200:
                    response.read()
                    console.print(f"Export refused: {response.status_code} {_detail(response)}")
                    raise typer.Exit(1)
                for chunk in response.iter_bytes():
                    sink.write(chunk)
                    lines += chunk.count(b"\n")
        os.replace(partial, out)
    except (typer.Exit, typer.Abort):
        partial.unlink(missing_ok=True)
        raise
    except (httpx.HTTPError, OSError) as exc:
        partial.unlink(missing_ok=True)
        console.print(f"Export failed: {exc}")
        raise typer.Exit(1) from None
    console.print(f"Exported {lines:,} memories to {out}.")


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail") or response.reason_phrase)
    except (ValueError, AttributeError):
        return response.reason_phrase


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
