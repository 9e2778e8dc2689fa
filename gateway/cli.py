"""The `memory-layer` command: run the whole stack locally and mint development tokens."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from gateway.importer import ExportError, Importer, ImportRefused, read_export
from gateway.tokens import LOCAL_ISSUER, mint_token

app = typer.Typer(
    help="Memory Layer: a self-hosted memory backend for AI-chat browser extensions.",
    no_args_is_help=True,
    add_completion=False,
)
# No wrapping: the printed commands must stay copy-pasteable.
console = Console(stderr=True, soft_wrap=True)

LOCAL_AUTH_FILE = "local-auth.json"
LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT_SECONDS = 300.0
STOP_TIMEOUT_SECONDS = 15.0

DataDir = Annotated[
    Path,
    typer.Option("--data-dir", help="Where the store, logs and the local JWT secret live."),
]


@dataclass(frozen=True)
class LocalAuth:
    jwt_secret: str
    issuer: str


def local_auth_path(data_dir: Path) -> Path:
    return data_dir / LOCAL_AUTH_FILE


def load_or_create_local_auth(data_dir: Path) -> LocalAuth:
    """The HS256 secret of local mode, created once so tokens outlive restarts."""
    path = local_auth_path(data_dir)
    if path.exists():
        stored = json.loads(path.read_text())
        return LocalAuth(stored["jwt_secret"], stored["issuer"])
    auth = LocalAuth(secrets.token_urlsafe(48), LOCAL_ISSUER)
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"jwt_secret": auth.jwt_secret, "issuer": auth.issuer}, handle)
    return auth


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_service(name: str, module: str, env: dict[str, str], log_dir: Path) -> Service:
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - argv is this interpreter and a module
            [sys.executable, "-m", module],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own session: Ctrl-C reaches only this command, which stops the services in order.
            start_new_session=True,
        )
    return Service(name, process, log_path)


def stop_services(services: list[Service]) -> None:
    for service in reversed(services):
        if service.process.poll() is None:
            service.process.send_signal(signal.SIGTERM)
            try:
                service.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()


def stack_ready(client: httpx.Client, url: str) -> bool:
    """The gateway is ready and sees chat_service serving (readiness alone leaves chat out)."""
    try:
        response = client.get(f"{url}/readyz")
        return response.status_code == 200 and response.json().get("chat") == "serving"
    except (httpx.HTTPError, ValueError):
        return False


def wait_until_ready(url: str, services: list[Service]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            for service in services:
                if service.process.poll() is not None:
                    raise RuntimeError(
                        f"{service.name} exited with code {service.process.returncode}:\n"
                        f"{service.log_tail()}"
                    )
            if stack_ready(client, url):
                return
            time.sleep(0.25)
    raise RuntimeError(f"the services were not ready within {STARTUP_TIMEOUT_SECONDS:.0f} s")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def interrupt(signum: int, frame: FrameType | None) -> Any:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stack_environment(
    port: int, memory_port: int, chat_port: int, data_dir: Path, auth: LocalAuth | None
) -> dict[str, str]:
    env = dict(os.environ)
    # Everything the user exported reaches the services; only what wires them together
    # (addresses, the store location and the shared token) is set here.
    env.update(
        {
            "MEMORY_HOST": LOOPBACK,
            "MEMORY_PORT": str(memory_port),
            "MEMORY_DATA_DIR": str(data_dir / "memory"),
            "GATEWAY_HOST": LOOPBACK,
            "GATEWAY_PORT": str(port),
            "CHAT_HOST": LOOPBACK,
            "CHAT_PORT": str(chat_port),
            "CHAT_MEMORY_ADDR": f"{LOOPBACK}:{memory_port}",
            "GATEWAY_MEMORY_ADDR": f"{LOOPBACK}:{memory_port}",
            "GATEWAY_CHAT_ADDR": f"{LOOPBACK}:{chat_port}",
            "MEMORY_LAYER_SERVICE_TOKEN": secrets.token_urlsafe(32),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.setdefault("MEMORY_METRICS_PORT", "-1")
    env.setdefault("CHAT_METRICS_PORT", "-1")
    if auth is not None:
        env["GATEWAY_SUPABASE_JWT_SECRET"] = auth.jwt_secret
        env["GATEWAY_JWT_ISSUER"] = auth.issuer
    return env


@app.command()
def up(
    port: Annotated[int, typer.Option(help="Port of the gateway on 127.0.0.1.")] = 8080,
    data_dir: DataDir = Path("data"),
) -> None:
    """Start memory_service, chat_service and the gateway on loopback with the embedded store.
    Chat answers through the LLM set by CHAT_LLM_* variables, or quotes memories without one."""
    data_dir = data_dir.resolve()
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
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
        console.print("Tokens: Supabase access tokens of your project (GATEWAY_SUPABASE_URL).")
    else:
        token_command = f"memory-layer token --user alice --data-dir {data_dir}"
        console.print(f"Get a token:  [bold]export TOKEN=$({token_command})[/bold]")
        console.print(
            f"Try it:       curl -s -X POST {url}/save-prompt "
            '-H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" '
            '-d \'{"prompt": "I prefer window seats"}\''
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
