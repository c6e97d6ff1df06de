"""Minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (stdlib only).

Chromium reads commands from fd 3 and writes replies/events to fd 4, each message a JSON text
terminated by a NUL byte, so no websocket library or TCP port is needed. Used by
tests/test_browser.py to load a page from disk, list every request it made, check its images and
take a full-page screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary, or None."""
    for name in CHROMIUM_CANDIDATES:
        path = name if os.path.isabs(name) and os.access(name, os.X_OK) else shutil.which(name)
        if path:
            return path
    return None


class CDPError(RuntimeError):
    """A DevTools command failed or the browser went away."""


@dataclass
class PageReport:
    """What a page load did."""

    url: str
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    title: str = ""
    height: int = 0
    seconds: float = 0.0


class Chromium:
    """A headless Chromium driven over the DevTools pipe. Use as a context manager."""

    def __init__(self, binary: str, *, width: int = 1280, height: int = 900) -> None:
        self.binary = binary
        self.width, self.height = width, height
        self._profile = tempfile.mkdtemp(prefix="fundiff-chromium-")
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._cond = threading.Condition()
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False

    # -- process ---------------------------------------------------------------------------
    def __enter__(self) -> Chromium:
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        # Move the child's ends above fd 10 so dup2 onto 3/4 cannot clobber one with the other.
        child_in = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        child_out = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        os.close(to_chrome_r)
        os.close(from_chrome_w)

        def _setup_fds() -> None:  # runs in the child before exec
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        args = [
            self.binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--metrics-recording-only",
            "--mute-audio",
            "--hide-scrollbars",
            # Every host name fails to resolve: even a page that tries cannot reach the network.
            # Attempts still show up as requests (and as failures) in the report.
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={self._profile}",
            f"--window-size={self.width},{self.height}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=_setup_fds,
        )
        os.close(child_in)
        os.close(child_out)
        self._write = os.fdopen(to_chrome_w, "wb", buffering=0)
        self._read = os.fdopen(from_chrome_r, "rb", buffering=0)
        threading.Thread(target=self._reader, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the browser (politely, then by terminating our own child) and its profile."""
        if self._closed:
            return
        self._closed = True
        try:
            self.send("Browser.close", timeout=5)
        except (CDPError, OSError):
            pass
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
        for f in (self._write, self._read):
            try:
                f.close()
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    # -- protocol --------------------------------------------------------------------------
    def _reader(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self._read.read(65536)
            except (OSError, ValueError):
                chunk = b""
            if not chunk:
                with self._cond:
                    self._replies[-1] = {"error": {"message": "browser closed the pipe"}}
                    self._cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._replies[msg["id"]] = msg
                        self._cond.notify_all()
                else:
                    self._events.put(msg)

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = 30,
    ) -> dict[str, Any]:
        """Send one command and wait for its result (raises CDPError on error/timeout)."""
        self._next_id += 1
        mid = self._next_id
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._write.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in self._replies:
                if -1 in self._replies:
                    raise CDPError(f"{method}: browser closed the pipe")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CDPError(f"{method}: no reply within {timeout} s")
                self._cond.wait(left)
            reply = self._replies.pop(mid)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    # -- high level ------------------------------------------------------------------------
    def load(self, path: Path, *, timeout: float = 60, settle: float = 0.5) -> PageReport:
        """Open ``path`` (a local HTML file) in a fresh tab and report what happened."""
        t0 = time.monotonic()
        url = path.resolve().as_uri()
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self._session = session
        for domain in ("Page", "Network", "Runtime"):
            self.send(f"{domain}.enable", session=session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        report = PageReport(url=url)
        self.send("Page.navigate", {"url": url}, session=session)
        deadline = time.monotonic() + timeout
        loaded_at: float | None = None
        while True:
            now = time.monotonic()
            if loaded_at is not None and now - loaded_at >= settle:
                break
            if now > deadline:
                raise CDPError(f"{url}: load event not fired within {timeout} s")
            try:
                ev = self._events.get(timeout=0.1)
            except queue.Empty:
                continue
            if ev.get("sessionId") != session:
                continue
            method, params = ev.get("method"), ev.get("params", {})
            if method == "Network.requestWillBeSent":
                report.requests.append(params["request"]["url"])
            elif method == "Network.loadingFailed":
                report.failed.append(f"{params.get('errorText')} ({params.get('requestId')})")
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                exc = details.get("exception", {}).get("description") or details.get("text")
                report.exceptions.append(str(exc))
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                report.console_errors.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
                )
            elif method == "Page.loadEventFired" and loaded_at is None:
                loaded_at = time.monotonic()
        js = """(() => ({
            title: document.title,
            height: Math.ceil(document.documentElement.scrollHeight),
            images: Array.from(document.images).map(i => ({
                src: i.getAttribute('src'), url: i.currentSrc, complete: i.complete,
                naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight})),
            resources: performance.getEntriesByType('resource').map(e => e.name),
        }))()"""
        res = self.send(
            "Runtime.evaluate",
            {"expression": js, "returnByValue": True, "awaitPromise": True},
            session=session,
        )["result"]["value"]
        report.title = res["title"]
        report.height = int(res["height"])
        report.images = res["images"]
        report.requests += [r for r in res["resources"] if r not in report.requests]
        report.seconds = time.monotonic() - t0
        return report

    def screenshot(self, out: Path, *, max_height: int = 32000) -> Path:
        """Full-page PNG of the page last opened with :meth:`load` (height capped)."""
        session = self._session
        metrics = self.send("Page.getLayoutMetrics", session=session)
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        width = max(self.width, int(size["width"]))
        height = min(max_height, int(size["height"]))
        params: dict[str, Any] = {"format": "png"}
        if height > self.height:  # taller than the window: capture the whole document
            params["captureBeyondViewport"] = True
            params["clip"] = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        data = self.send("Page.captureScreenshot", params, session=session, timeout=120)["data"]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(data))
        return out
