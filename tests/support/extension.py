"""Harness of the extension's browser tests: the extension written out by the `memory-layer
extension` command, loaded into Debian's Chromium with a persistent profile, and stand-ins for the
chat sites served at their real hostnames through Playwright's request routing."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import BrowserContext, Page, Playwright, Request, Route, Worker

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.processes import REPO_ROOT, service_env

CHAT_SITES_DIR = Path(__file__).resolve().parent / "chat_sites"
ENGINE_PATH = "/__standin__/engine.js"

# The stand-ins' send controls, by their labels; each is hidden or relabelled while an answer is
# being written.
SEND_CONTROL = (
    'button[aria-label="Send prompt"], button[aria-label="Send message"], '
    'button[aria-label="Submit"]'
)
# How many of a stand-in's answers are written to the end, once the site has closed the last
# one's turn (null until then). The last words show a moment before the site brings its send
# control back and, on ChatGPT, adds the turn's actions above the composer, moving it: a click
# aimed at the editor in that moment can land beside it, and what is typed next goes nowhere.
ANSWERS_FINISHED = (
    "window.standin.answering() ? null"
    " : document.body.innerText.split('That is all for now').length - 1"
)
# What a stand-in shows, for a failure's message.
CHAT_STATE = """({
    sent: window.standin.sent,
    answering: window.standin.answering(),
    answersWritten: document.body.innerText.split('That is all for now').length - 1,
    editor: document.querySelector('[role=textbox]')?.innerText ?? null,
    focus: document.activeElement && [document.activeElement.tagName.toLowerCase(),
        document.activeElement.getAttribute('aria-label')].filter(Boolean).join(' '),
})"""


@dataclass(frozen=True)
class Site:
    id: str
    name: str
    origin: str
    start: str
    hosts: tuple[str, ...]


SITES = {
    site.id: site
    for site in (
        Site("chatgpt", "ChatGPT", "https://chatgpt.com", "/", ("chatgpt.com", "chat.openai.com")),
        Site("claude", "Claude", "https://claude.ai", "/new", ("claude.ai",)),
        Site("gemini", "Gemini", "https://gemini.google.com", "/app", ("gemini.google.com",)),
        Site("perplexity", "Perplexity", "https://www.perplexity.ai", "/", ("www.perplexity.ai",)),
    )
}


def site_page(site: Site, broken: bool, recent: int | None = None) -> str:
    standin = json.dumps({"site": site.id, "broken": broken, "recent": recent})
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{site.name}</title>'
        f"</head><body><script>window.STANDIN = {standin};</script>"
        f'<script src="{ENGINE_PATH}"></script></body></html>'
    )


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass
class ExtensionBrowser:
    """Chromium with the extension loaded, in a profile that outlives close() and launch()
    (a browser restart). Every request, the extension's included, is recorded; one to a host
    that is neither a chat site nor the server is also kept in `foreign` (and cannot resolve).
    The server's requests are never routed: a route's handler runs only while this thread
    calls into Playwright."""

    playwright: Playwright
    extension_dir: Path
    profile_dir: Path
    server_url: str
    broken: set[str] = field(default_factory=set)
    # Sites that render only this many of a thread's last turns after a reload.
    recent: dict[str, int] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    context: BrowserContext | None = None
    extension_id: str = ""

    def launch(self) -> ExtensionBrowser:
        self.context = self.playwright.chromium.launch_persistent_context(
            str(self.profile_dir),
            executable_path=CHROMIUM,
            # --headless=new is in the arguments: Playwright's own headless mode would not load
            # extensions.
            headless=False,
            args=[
                *CHROMIUM_ARGS,
                # No host but loopback resolves: nothing can leave the machine, whatever asks.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                f"--disable-extensions-except={self.extension_dir}",
                f"--load-extension={self.extension_dir}",
            ],
        )
        self.context.on("request", self._record)
        for site in SITES.values():
            for host in site.hosts:
                self.context.route(f"https://{host}/**", self._serve(site))
        worker = self.context.service_workers[0] if self.context.service_workers else None
        if worker is None:
            worker = self.context.wait_for_event("serviceworker", timeout=30000)
        self.extension_id = urlsplit(worker.url).netloc
        return self

    def close(self) -> None:
        if self.context is not None:
            self.context.close()
            self.context = None

    def _record(self, request: Request) -> None:
        url = request.url
        self.requests.append(url)
        if not url.startswith(("data:", "blob:", "chrome-extension:")) and origin(url) not in {
            origin(self.server_url),
            *(site.origin for site in SITES.values()),
            "https://chat.openai.com",
        }:
            self.foreign.append(url)

    def _serve(self, site: Site) -> Callable[[Route], None]:
        engine = (CHAT_SITES_DIR / "engine.js").read_text()

        def serve(route: Route) -> None:
            path = urlsplit(route.request.url).path
            if path == ENGINE_PATH:
                route.fulfill(body=engine, content_type="application/javascript")
            elif route.request.resource_type == "document":
                route.fulfill(
                    body=site_page(site, site.id in self.broken, self.recent.get(site.id)),
                    content_type="text/html",
                )
            else:
                route.fulfill(status=404, body="")

        return serve

    @property
    def worker(self) -> Worker:
        assert self.context is not None
        workers = self.context.service_workers
        return workers[0] if workers else self.context.wait_for_event("serviceworker")

    def open_site(self, site_id: str, path: str | None = None) -> Page:
        assert self.context is not None
        site = SITES[site_id]
        page = self.context.new_page()
        page.goto(site.origin + (path if path is not None else site.start))
        page.get_by_role("textbox").wait_for()
        return page

    def popup(self, tab_of: Page | None = None) -> Page:
        """The popup as a page; for the memories injected into tab_of's last prompt."""
        assert self.context is not None
        query = ""
        if tab_of is not None:
            query = f"?tab={self.tab_id(tab_of)}"
        page = self.context.new_page()
        page.goto(f"chrome-extension://{self.extension_id}/popup/popup.html{query}")
        return page

    def tab_id(self, page: Page) -> int:
        """The id the extension knows page's tab by (from what it stored for that tab)."""
        keys: list[str] = self.worker.evaluate(
            "async () => Object.keys(await chrome.storage.session.get(null))"
        )
        ids = [int(k.split(":")[1]) for k in keys if k.startswith("injected:")]
        assert len(ids) == 1, f"expected one tab with injected memories, got {keys}"
        return ids[0]

    def storage(self) -> dict[str, Any]:
        return dict(self.worker.evaluate("() => chrome.storage.local.get(null)"))

    def content_script_world(self, page: Page) -> Callable[[str, Any], Any]:
        """A function that runs a JavaScript function, with one argument, in the extension's
        content-script world of page (where its content scripts run) and returns its value."""
        assert self.context is not None
        cdp = self.context.new_cdp_session(page)
        worlds: list[dict[str, Any]] = []
        cdp.on("Runtime.executionContextCreated", lambda event: worlds.append(event["context"]))
        cdp.send("Runtime.enable")
        world = next(w for w in worlds if w["name"] == "Memory Layer")

        def evaluate(function: str, arg: Any) -> Any:
            answer = cdp.send(
                "Runtime.callFunctionOn",
                {
                    "functionDeclaration": function,
                    "executionContextId": world["id"],
                    "arguments": [{"value": arg}],
                    "awaitPromise": True,
                    "returnByValue": True,
                },
            )
            if "exceptionDetails" in answer:
                raise RuntimeError(answer["exceptionDetails"])
            return answer["result"]["value"]

        return evaluate

    def queue(self, store: str = "queue") -> list[dict[str, Any]]:
        """The records of one of the queue's stores (queue, delivered, refused), as the
        worker keeps them in the extension's IndexedDB; [] before it holds anything."""
        return list(self.worker.evaluate(QUEUE_RECORDS, store))


QUEUE_RECORDS = """(store) => new Promise((resolve, reject) => {
    const open = indexedDB.open("memory-layer");
    // Not made yet: leave the making to the worker, with its stores.
    open.onupgradeneeded = () => open.transaction.abort();
    open.onerror = () => resolve([]);
    open.onsuccess = () => {
        const db = open.result;
        const all = db.transaction(store).objectStore(store).getAll();
        all.onsuccess = () => { resolve(all.result); db.close(); };
        all.onerror = () => reject(all.error);
    };
})"""


def new_extension(
    playwright: Playwright, root: Path, server_url: str, key: str, inject: str
) -> ExtensionBrowser:
    """The extension as `memory-layer extension --out --url --key --inject` writes it, in a
    browser with a fresh profile (not launched yet)."""
    extension_dir = root / "extension"
    command = [sys.executable, "-m", "memory_layer_cli", "extension", "--out", str(extension_dir)]
    command += ["--url", server_url, "--inject", inject] + (["--key", key] if key else [])
    subprocess.run(
        command, cwd=REPO_ROOT, env=service_env(), check=True, capture_output=True, timeout=120
    )
    return ExtensionBrowser(playwright, extension_dir, root / "profile", server_url)


def content_script_reads_storage(browser: ExtensionBrowser, page: Page) -> str:
    """What the extension's content-script world in page gets when it asks for the stored
    settings."""
    return str(
        browser.content_script_world(page)(
            "() => chrome.storage.local.get(null)"
            ".then((v) => JSON.stringify(v), (e) => 'error: ' + e.message)",
            None,
        )
    )


def send_prompt(page: Page, text: str, *, how: str = "enter") -> None:
    """Type text as a person does and send it with Enter or the send button."""
    editor = page.get_by_role("textbox")
    editor.click()
    editor.press_sequentially(text, delay=0)
    if how == "enter":
        editor.press("Enter")
    else:
        page.locator(SEND_CONTROL).click()


def chip(page: Page) -> tuple[str, float, float] | None:
    """The extension's chip as a person sees it: its accessible name and the centre of its
    button, or None when it is not shown. Its shadow root is closed, so neither the page's
    scripts nor Playwright's selectors reach it; the browser's accessibility tree does."""
    cdp = page.context.new_cdp_session(page)
    try:
        root = cdp.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
        found = cdp.send("Accessibility.queryAXTree", {"nodeId": root, "role": "button"})
        for node in found["nodes"]:
            name = str(node.get("name", {}).get("value", ""))
            if node.get("ignored") or not name.startswith("Insert "):
                continue
            box = cdp.send("DOM.getBoxModel", {"backendNodeId": node["backendDOMNodeId"]})
            quad = box["model"]["border"]
            return name, sum(quad[0::2]) / 4, sum(quad[1::2]) / 4
        return None
    finally:
        cdp.detach()


def click_chip(page: Page, timeout: float = 15.0) -> str:
    """Wait for the chip and click it with the mouse, as a person does; its name."""
    name, x, y = wait_for(lambda: chip(page), timeout, lambda: "no chip shown")
    page.mouse.click(x, y)
    return str(name)


def sent(page: Page) -> list[str]:
    """What the site received from its editor, oldest first."""
    return list(page.evaluate("() => window.standin.sent"))


def answers_finished(page: Page) -> int | None:
    """How many of the site's answers are finished (see ANSWERS_FINISHED); None while it is
    still answering."""
    finished = page.evaluate(ANSWERS_FINISHED)
    return None if finished is None else int(finished)


def chat_state(page: Page) -> dict[str, Any]:
    """What the site has received and shows: for a failure's message."""
    return dict(page.evaluate(CHAT_STATE))


def wait_for_answers(page: Page, count: int, timeout: float = 30.0) -> None:
    """Until the site has finished count answers and is ready for the next message."""
    wait_for(lambda: answers_finished(page) == count, timeout, lambda: chat_state(page))


def wait_for(
    condition: Callable[[], Any], timeout: float = 30.0, describe: Callable[[], Any] = str
) -> Any:
    """condition()'s first true value; fails with describe() if there is none in time."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s; {describe()}")
        time.sleep(0.3)


def stored(client: httpx.Client, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The user's memories once there are exactly count of them."""
    return list(
        wait_for(
            lambda: len(found := memories(client)) == count and found,
            timeout,
            lambda: f"memories: {[(m['kind'], m['text'][:60]) for m in memories(client)]}",
        )
    )


def memories(client: httpx.Client) -> list[dict[str, Any]]:
    page = client.get("/memories", params={"limit": 200})
    page.raise_for_status()
    return list(page.json()["memories"])


class BatchStandIn:
    """A stand-in for the gateway's batch route: with retry_after_seconds, it answers the first
    batch with 429 and `Retry-After`; every other batch it stores, or with `refuse`, refuses
    item by item for that reason. Records when each batch came and what it held."""

    def __init__(self, retry_after_seconds: int = 0, refuse: str = "") -> None:
        self.retry_after = retry_after_seconds
        self.refuse = refuse
        self.batches: list[tuple[float, int, int]] = []  # (monotonic time, items, status)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self.answer(200, {"memories": [], "next_cursor": None})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                items = body.get("items", [])
                if not server.batches and server.retry_after:
                    server.batches.append((time.monotonic(), len(items), 429))
                    headers = {"Retry-After": str(server.retry_after)}
                    self.answer(429, {"detail": "Too many items, retry later"}, headers)
                    return
                server.batches.append((time.monotonic(), len(items), 200))
                if server.refuse:
                    results = [{"status": "refused", "reason": server.refuse} for _ in items]
                else:
                    results = [{"status": "stored", "id": str(uuid.uuid4())} for _ in items]
                stored = sum(result["status"] == "stored" for result in results)
                self.answer(
                    200,
                    {
                        "results": results,
                        "stored": stored,
                        "already_present": 0,
                        "refused": len(items) - stored,
                    },
                )

        return Handler

    def __enter__(self) -> BatchStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class NotFoundThenForward:
    """A loopback proxy in front of the gateway that answers 404 to every request for its first
    `seconds` (a route not loaded yet, a path fixed a minute later) and forwards every request
    after; records each request's (method, path, status)."""

    def __init__(self, upstream: str, seconds: float) -> None:
        self.upstream = upstream
        self.seconds = seconds
        self.until = 0.0
        self.seen: list[tuple[str, str, int]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if time.monotonic() < proxy.until:
                    status, headers, data = (
                        404,
                        {"Content-Type": "application/json"},
                        b'{"detail":"Not Found"}',
                    )
                else:
                    passed = {
                        k: v
                        for k, v in self.headers.items()
                        if k.lower() in ("authorization", "content-type", "accept")
                    }
                    answer = httpx.request(
                        self.command,
                        proxy.upstream + self.path,
                        content=body,
                        headers=passed,
                        timeout=120,
                    )
                    status, data = answer.status_code, answer.content
                    headers = {
                        k: v
                        for k, v in answer.headers.items()
                        if k.lower() in ("content-type", "retry-after")
                    }
                proxy.seen.append((self.command, self.path, status))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = relay

        return Handler

    def __enter__(self) -> NotFoundThenForward:
        self.until = time.monotonic() + self.seconds
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
