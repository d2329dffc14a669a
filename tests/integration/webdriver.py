"""A headless Chromium driven through the W3C WebDriver HTTP protocol (Debian's chromium and chromium-driver).

Only what the console's browser tests use: open a page, find elements, click, type, press Tab, run a script,
take a screenshot. chromedriver runs on a free loopback port and is stopped with the session.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

from steadfast.dev.controlplane import processes

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
TAB = "\ue004"


def available() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    for tool in ("chromium", "chromedriver"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install chromium chromium-driver)"
    return None


class Browser:
    def __init__(self, log: Path) -> None:
        port = processes.free_port()
        self._proc = processes.launch([str(shutil.which("chromedriver")), f"--port={port}"], log, detach=False)
        self._base = f"http://127.0.0.1:{port}"
        processes.wait_until(
            lambda: processes.tcp_open("127.0.0.1", port), what="chromedriver", timeout=30, pid=self._proc.pid, log=log
        )
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]
        caps = {"browserName": "chrome", "goog:chromeOptions": {"binary": shutil.which("chromium"), "args": args}}
        answer = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
        self._session = f"/session/{answer['sessionId']}"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self._base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"WebDriver {method} {path}: {exc.read().decode()[:2000]}") from None

    def _s(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(method, self._session + path, body)

    def open(self, url: str) -> None:
        self._s("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        return str(self._s("POST", "/element", {"using": "css selector", "value": css})[ELEMENT])

    def click(self, css: str) -> None:
        self._s("POST", f"/element/{self.find(css)}/click", {})

    def type(self, css: str, text: str) -> None:
        self._s("POST", f"/element/{self.find(css)}/value", {"text": text})

    def press(self, key: str) -> None:
        keys = [{"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]
        self._s("POST", "/actions", {"actions": [{"type": "key", "id": "keyboard", "actions": keys}]})

    def run(self, script: str, *args: Any) -> Any:
        return self._s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def text(self, css: str = "body") -> str:
        return str(self.run("var e = document.querySelector(arguments[0]); return e ? e.innerText : '';", css))

    def source(self) -> str:
        return str(self.run("return document.documentElement.outerHTML;"))

    def wait(self, script: str, *args: Any, timeout: float = 30.0, what: str = "page condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.run(script, *args)
            if value:
                return value
            if time.monotonic() > deadline:
                shown = self.run("return location.href + '\\n' + document.body.innerText;")
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; the page:\n{str(shown)[:3000]}")
            time.sleep(0.2)

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._s("GET", "/screenshot")))

    def quit(self) -> None:
        try:
            self._s("DELETE", "")
        finally:
            processes.stop(self._proc.pid)
