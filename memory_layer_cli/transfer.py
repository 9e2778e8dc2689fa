"""`memory-layer import` and `export`: a chat history or an earlier export into one's memories
through the gateway's batch route, with progress and resumption; every memory one owns out to
an NDJSON file.

httpx is imported by the functions that send requests: `up`, which imports this module with
the rest of the CLI, then carries no HTTP client for as long as the stack runs."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
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

from memory_layer_cli.importing import (
    ExportError,
    ExportItems,
    Importer,
    ImportRefused,
    ResumeState,
    count_items,
)
from memory_layer_cli.importing.uploader import DEFAULT_IN_FLIGHT
from memory_layer_cli.options import ApiKey, Bearer, DataDir, Url, User, bearer_token, console
from service_kit.limits import MAX_BATCH_ITEMS

if TYPE_CHECKING:
    import httpx


def check_gateway(client: httpx.Client, url: str) -> None:
    import httpx

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
    key: ApiKey = None,
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

    With --key, the API key is sent; else --token; else a local token for --user is minted
    with the secret `up` created. Each
    message keeps its original time and id: running the same import again (after an
    interruption, say) continues where it stopped and stores nothing twice.
    """
    try:
        _import(file, user, url, bearer, key, data_dir, batch_size, in_flight, restart)
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
    key: str | None,
    data_dir: Path,
    batch_size: int,
    in_flight: int,
    restart: bool,
) -> None:
    export = ExportItems(file)
    total = count_items(ExportItems(file).phases())
    token = bearer_token(bearer, user, data_dir, key)
    state = _resume_state(file, url, token, data_dir)
    if restart:
        state.clear()
        state.units_done = 0
    import httpx

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
        check_gateway(client, url)
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


def export_memories(
    out: Annotated[Path, typer.Option("--out", help="The NDJSON file to write.")],
    user: User = None,
    url: Url = "http://127.0.0.1:8080",
    bearer: Bearer = None,
    key: ApiKey = None,
    data_dir: DataDir = Path("data"),
) -> None:
    """Write every memory you own to an NDJSON file that `import` reads back as it was."""
    import httpx

    token = bearer_token(bearer, user, data_dir, key)
    headers = {"Authorization": f"Bearer {token}"}
    partial = out.with_name(out.name + ".partial")
    lines = 0
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=600.0) as client:
            check_gateway(client, url)
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
