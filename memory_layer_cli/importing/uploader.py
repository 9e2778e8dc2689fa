"""Send an export's items to the gateway's POST /memories/batch, a few batches in flight.

Batches go through the gateway like any client's, so they are authenticated and held to the
user's batch budget; a 429 or 503 is waited out and retried. Every item carries the export's
own message id, so sending a batch again stores nothing twice: an interrupted import is
simply run again. A progress file records how many units were acknowledged in order, so the
rerun does not even send those again.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memory_layer_cli.importing.items import Item, Phase, Unit
from service_kit.limits import MAX_BATCH_ITEMS

if TYPE_CHECKING:
    import httpx

BATCH_PATH = "/memories/batch"
# Well under the gateway's default batch body cap (4 MiB).
MAX_BATCH_BYTES = 2 * 1024 * 1024
DEFAULT_IN_FLIGHT = 3
# Give up on a batch after this many failed attempts in a row (429s are waited out first).
MAX_ATTEMPTS = 8


@dataclass
class ImportReport:
    stored: int = 0
    already_present: int = 0
    # Acknowledged by an earlier, interrupted run: not sent again.
    resumed: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    waited_seconds: float = 0.0

    @property
    def handled(self) -> int:
        return self.stored + self.already_present + self.resumed + self.refused.total()


class ImportRefused(RuntimeError):
    """The gateway refused the import as a whole (bad token, gone, persistent errors)."""


class ResumeState:
    """How many units of one export (for one user and gateway) are acknowledged, in order."""

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key
        self.units_done = 0
        try:
            saved = json.loads(path.read_text())
            if isinstance(saved, dict) and saved.get("key") == key:
                self.units_done = max(0, int(saved.get("units_done", 0)))
        except (OSError, ValueError, TypeError):
            pass

    def save(self, units_done: int) -> None:
        self.units_done = units_done
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": self.key, "units_done": units_done}))
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


@dataclass
class _Batch:
    first_unit: int
    units: list[Unit]

    @property
    def items(self) -> list[Item]:
        return [item for unit in self.units for item in unit]


class Importer:
    def __init__(
        self,
        client: httpx.Client,
        *,
        batch_items: int = MAX_BATCH_ITEMS,
        batch_bytes: int = MAX_BATCH_BYTES,
        in_flight: int = DEFAULT_IN_FLIGHT,
        state: ResumeState | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_wait: Callable[[float, str], None] | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.client = client
        self.batch_items = max(2, min(batch_items, MAX_BATCH_ITEMS))
        self.batch_bytes = batch_bytes
        self.in_flight = max(1, in_flight)
        self.state = state
        self.sleep = sleep
        self.on_wait = on_wait
        self.on_progress = on_progress
        self.report = ImportReport()
        self._acknowledged: dict[int, int] = {}  # first unit of a finished batch -> units
        self._units_done = state.units_done if state else 0
        self._wait_lock = threading.Lock()

    def run(self, phases: list[Phase]) -> ImportReport:
        skip = self._units_done
        unit_no = 0
        with ThreadPoolExecutor(self.in_flight, thread_name_prefix="import") as pool:
            pending: set[Future[tuple[_Batch, list[dict[str, Any]]]]] = set()
            try:
                for phase in phases:
                    for batch in self._batches(phase(), unit_no):
                        unit_no = batch.first_unit + len(batch.units)
                        if unit_no <= skip:
                            self._done(len(batch.items), resumed=True)
                            continue
                        while len(pending) >= self.in_flight:
                            pending = self._collect(pending)
                        pending.add(pool.submit(self._send, batch))
                    # The next phase may name what this one stores.
                    while pending:
                        pending = self._collect(pending)
            finally:
                for future in pending:
                    future.cancel()
        if self.state is not None:
            self.state.clear()
        return self.report

    def _batches(self, units: Iterator[Unit], first_unit: int) -> Iterator[_Batch]:
        batch = _Batch(first_unit, [])
        size = items = 0
        for unit in units:
            unit_bytes = sum(_approx_bytes(item) for item in unit)
            if batch.units and (
                items + len(unit) > self.batch_items or size + unit_bytes > self.batch_bytes
            ):
                yield batch
                batch = _Batch(batch.first_unit + len(batch.units), [])
                size = items = 0
            batch.units.append(unit)
            size += unit_bytes
            items += len(unit)
        if batch.units:
            yield batch

    def _collect(
        self, pending: set[Future[tuple[_Batch, list[dict[str, Any]]]]]
    ) -> set[Future[tuple[_Batch, list[dict[str, Any]]]]]:
        """Wait for a batch to finish and count its results (on this thread only)."""
        done, rest = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            # An ImportRefused stops the import here.
            self._record(*future.result())
        return rest

    def _done(self, items: int, *, resumed: bool = False) -> None:
        if resumed:
            self.report.resumed += items
        if self.on_progress is not None:
            self.on_progress(items)

    def _send(self, batch: _Batch) -> tuple[_Batch, list[dict[str, Any]]]:
        return batch, self._post(batch.items)

    def _record(self, batch: _Batch, results: list[dict[str, Any]]) -> None:
        for result in results:
            status = result.get("status")
            if status == "stored":
                self.report.stored += 1
            elif status == "already_present":
                self.report.already_present += 1
            else:
                self.report.refused[str(result.get("reason") or "refused")[:200]] += 1
        self._acknowledge(batch)
        self._done(len(results))

    def _acknowledge(self, batch: _Batch) -> None:
        self._acknowledged[batch.first_unit] = len(batch.units)
        advanced = False
        while self._units_done in self._acknowledged:
            self._units_done += self._acknowledged.pop(self._units_done)
            advanced = True
        if advanced and self.state is not None:
            self.state.save(self._units_done)

    def _post(self, items: list[Item]) -> list[dict[str, Any]]:
        """One result per item once the gateway answered for every one of them."""
        # Imported here, as in transfer.py: `up` imports this package with the CLI.
        import httpx

        for _ in range(MAX_ATTEMPTS):
            try:
                response = self.client.post(BATCH_PATH, json={"items": items})
            except httpx.TransportError as exc:
                self._wait(2.0, f"gateway unreachable ({exc.__class__.__name__})")
                continue
            if response.status_code == 200:
                results = response.json().get("results")
                if isinstance(results, list) and len(results) == len(items):
                    return results
                raise ImportRefused(f"{BATCH_PATH}: the gateway's answer has no result per item")
            if response.status_code in (429, 503):
                self._wait(_retry_after(response), f"gateway answered {response.status_code}")
                continue
            if response.status_code in (401, 403, 404, 405):
                raise ImportRefused(f"{BATCH_PATH}: {response.status_code} {_detail(response)}")
            if response.status_code == 413 and len(items) > 1:
                half = len(items) // 2
                return self._post(items[:half]) + self._post(items[half:])
            if response.status_code >= 500:
                self._wait(2.0, f"gateway answered {response.status_code}")
                continue
            reason = f"refused ({response.status_code}): {_detail(response)}"[:200]
            return [{"status": "refused", "reason": reason} for _ in items]
        raise ImportRefused(f"{BATCH_PATH}: still failing after {MAX_ATTEMPTS} attempts")

    def _wait(self, seconds: float, why: str) -> None:
        if self.on_wait is not None:
            self.on_wait(seconds, why)
        with self._wait_lock:
            self.report.waited_seconds += seconds
        self.sleep(seconds)


def count_items(phases: list[Phase]) -> int:
    return sum(len(unit) for phase in phases for unit in phase())


def _approx_bytes(item: Item) -> int:
    # JSON of the item: its strings, quotes and escapes; non-ASCII text counts double.
    return sum(len(str(v)) * 2 + len(k) + 8 for k, v in item.items())


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(1.0, min(float(response.headers.get("Retry-After", "1")), 120.0))
    except ValueError:
        return 1.0


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail) if detail else response.reason_phrase
