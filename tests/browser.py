"""A real headless browser for the viewer tests: Debian's Chromium driven over the DevTools protocol
(a page opened, real seconds waited, a screenshot taken). Tests skip cleanly without Chromium."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional

FLAGS = ["--headless", "--no-sandbox", "--use-gl=swiftshader", "--enable-unsafe-swiftshader", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--mute-audio"]
"""Chromium as root, offline, with software WebGL (SwiftShader)."""


def chromium() -> Optional[str]:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def screenshot(url: str, out: Path, wait_s: float = 8.0, width: int = 900, height: int = 700) -> Path:
    """Open ``url`` in headless Chromium, wait ``wait_s`` real seconds, save a PNG screenshot at ``out``."""
    from websockets.sync.client import connect

    port = _free_port()
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([chromium(), *FLAGS, f"--remote-debugging-port={port}", f"--user-data-dir={profile}",
                                 f"--window-size={width},{height}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            page = _page_socket(port)
            with connect(page, max_size=None, open_timeout=30) as ws:
                _call(ws, "Page.enable")
                _call(ws, "Page.navigate", url=url)
                time.sleep(wait_s)
                data = _call(ws, "Page.captureScreenshot", format="png")["data"]
        finally:
            proc.kill()
            proc.wait()
    out.write_bytes(base64.b64decode(data))
    return out


def _page_socket(port: int, timeout: float = 30.0) -> str:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json") as r:
                pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        if time.time() > deadline:
            raise RuntimeError("Chromium did not open its DevTools port")
        time.sleep(0.2)


_ids = iter(range(1, 1 << 30))


def _call(ws, method: str, **params):
    ident = next(_ids)
    ws.send(json.dumps({"id": ident, "method": method, "params": params}))
    while True:
        message = json.loads(ws.recv(timeout=60))
        if message.get("id") == ident:
            if "error" in message:
                raise RuntimeError(f"{method}: {message['error']}")
            return message.get("result", {})
