"""Harness of the extension's Firefox tests: the copy `memory-layer extension --browser firefox`
writes, installed as a temporary add-on (its zip) into Debian's firefox-esr, driven by
puppeteer-core over WebDriver BiDi through tests/browser/firefox/driver.mjs. The chat sites are
the same stand-ins as in Chromium, served at their real hostnames by request interception."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memory_layer_cli.extension import GECKO_ID
from tests.support.extension import (
    ANSWERS_FINISHED,
    CHAT_SITES_DIR,
    CHAT_STATE,
    ENGINE_PATH,
    SEND_CONTROL,
    SITES,
    site_page,
    wait_for,
)
from tests.support.processes import REPO_ROOT, service_env

FIREFOX = "/usr/bin/firefox-esr"
DRIVER_DIR = REPO_ROOT / "tests" / "browser" / "firefox"


class DriverError(AssertionError):
    """The browser could not do what the test asked."""


@dataclass
class FirefoxExtension:
    """firefox-esr with the extension installed, in a fresh profile."""

    archive: Path
    profile_dir: Path
    _driver: subprocess.Popen[str] | None = None

    def call(self, command: str, **args: Any) -> dict[str, Any]:
        driver = self._driver
        assert driver is not None and driver.stdin is not None and driver.stdout is not None
        driver.stdin.write(json.dumps({"command": command, **args}) + "\n")
        driver.stdin.flush()
        line = driver.stdout.readline()
        if not line:
            raise DriverError(f"the Firefox driver stopped during {command}")
        answer: dict[str, Any] = json.loads(line)
        if not answer.pop("ok"):
            raise DriverError(f"{command}: {answer['error']}")
        return answer

    def launch(self) -> FirefoxExtension:
        if not (DRIVER_DIR / "node_modules" / "puppeteer-core").is_dir():
            raise DriverError(
                f"puppeteer-core is not installed: run `npm ci` in {DRIVER_DIR} (.ci/run does)"
            )
        self._driver = subprocess.Popen(
            ["node", str(DRIVER_DIR / "driver.mjs")],
            cwd=DRIVER_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
            text=True,
            env=service_env(),
        )
        stand_ins = [
            {"hosts": list(site.hosts), "html": site_page(site, broken=False)}
            for site in SITES.values()
        ]
        engine = {"path": ENGINE_PATH, "body": (CHAT_SITES_DIR / "engine.js").read_text()}
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        installed = self.call(
            "launch",
            extension=str(self.archive),
            profile=str(self.profile_dir),
            standIns=stand_ins,
            engineScript=engine,
        )
        assert installed["id"] == GECKO_ID, installed
        return self

    def close(self) -> None:
        driver = self._driver
        if driver is None:
            return
        try:
            self.call("close")
        finally:
            self._driver = None
            assert driver.stdin is not None
            driver.stdin.close()
            try:
                driver.wait(timeout=60)
            except subprocess.TimeoutExpired:
                driver.kill()
                driver.wait()

    def open_site(self, site_id: str) -> int:
        site = SITES[site_id]
        return int(self.call("open", url=site.origin + site.start)["page"])

    def find_page(self, prefix: str, timeout: float = 20.0) -> int:
        """A tab the browser or the extension opened, by the start of its address."""
        return int(self.call("find", prefix=prefix, timeoutMs=int(timeout * 1000))["page"])

    def navigate(self, page: int, url: str) -> None:
        self.call("navigate", page=page, url=url)

    def click(self, page: int, selector: str) -> None:
        self.call("click", page=page, selector=selector)

    def send_prompt(self, page: int, text: str, *, how: str = "enter") -> None:
        """Type text as a person does and send it with Enter or the send button; fails if what
        was typed did not reach the editor."""
        self.call("send", page=page, text=text, how=how, sendControl=SEND_CONTROL)

    def evaluate(self, page: int, expression: str) -> Any:
        return self.call("evaluate", page=page, expression=expression)["value"]

    def sent(self, page: int) -> list[str]:
        """What the site received from its editor, oldest first."""
        return list(self.evaluate(page, "window.standin.sent"))

    def reload(self, page: int) -> None:
        self.call("reload", page=page)

    def answers_finished(self, page: int) -> int | None:
        """How many of the site's answers are finished (see ANSWERS_FINISHED); None while it
        is still answering."""
        finished = self.evaluate(page, ANSWERS_FINISHED)
        return None if finished is None else int(finished)

    def chat_state(self, page: int) -> dict[str, Any]:
        """What the site has received and shows: for a failure's message."""
        return dict(self.evaluate(page, CHAT_STATE))

    def wait_for_answers(self, page: int, count: int, timeout: float = 30.0) -> None:
        """Until the site has finished count answers and is ready for the next message."""
        wait_for(
            lambda: self.answers_finished(page) == count, timeout, lambda: self.chat_state(page)
        )


def new_firefox_extension(root: Path, server_url: str, key: str, inject: str) -> FirefoxExtension:
    """The extension as `memory-layer extension --browser firefox` writes it (its zip), in a
    browser with a fresh profile (not launched yet)."""
    extension_dir = root / "extension"
    command = [sys.executable, "-m", "memory_layer_cli", "extension", "--out", str(extension_dir)]
    command += ["--browser", "firefox", "--url", server_url, "--inject", inject, "--key", key]
    subprocess.run(
        command, cwd=REPO_ROOT, env=service_env(), check=True, capture_output=True, timeout=120
    )
    return FirefoxExtension(root / "extension.zip", root / "profile")
