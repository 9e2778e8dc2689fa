"""What `memory-layer up` becomes once its options are read and its data dir and port are
clear: the stack started, watched until ready and stopped (stack.py), in the same process.

`up` execs `python -m memory_layer_cli.supervisor PORT DATA_DIR` (the pid stays, so the
services' parent-death signal and the supervisor mark hold). This module loads the standard
library and rich only: the process lives as long as the stack, and the CLI's parser (typer,
with pydantic) would keep ~15 MB resident in it for nothing."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from gateway.tokens import mint_token
from memory_layer_cli.console import console
from memory_layer_cli.local_auth import load_or_create_local_auth
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

SUPERVISOR_MODULE = "memory_layer_cli.supervisor"
# Whose dashboard `up` links to and `open` opens when no --user is given.
DEFAULT_DASHBOARD_USER = "me"


def supervisor_argv(port: int, data_dir: Path) -> list[str]:
    return [sys.executable, "-m", SUPERVISOR_MODULE, str(port), str(data_dir)]


def supervise(port: int, data_dir: Path) -> int:
    """Run the stack until this process is stopped (0) or a service stops on its own (1)."""
    log_dir = private_dir(private_dir(data_dir) / "logs")
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
            return 1
        except KeyboardInterrupt:
            console.print("Stopping…")
            return 0
        except RuntimeError as exc:
            console.print(f"[red]Could not start:[/red] {exc}")
            return 1
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


def dashboard_link(url: str, access_token: str) -> str:
    """The page reads the token from the fragment, which browsers never send to a server."""
    return f"{url.rstrip('/')}/app/#access_token={access_token}"


if __name__ == "__main__":
    sys.exit(supervise(int(sys.argv[1]), Path(sys.argv[2])))
