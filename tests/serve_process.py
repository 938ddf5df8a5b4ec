"""A real ``python -m laconic_pyserini.serve`` process on a free loopback port, for the service's tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """Start the service with ``args`` (``--index``… and limits) and wait until ``/ready`` answers 200."""

    def __init__(self, args: list[str], *, api_key: str | None = None, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        env = {**os.environ, "PYTHONPATH": str(REPO), "LACONIC_PROGRESS": "0"}
        env.pop("LACONIC_API_KEY", None)
        if api_key is not None:
            env["LACONIC_API_KEY"] = api_key
        self.log = log
        self.process = subprocess.Popen([sys.executable, "-m", "laconic_pyserini.serve", "--port", str(self.port),
                                         *args], cwd=REPO, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        self.wait_ready()

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                if self.get("/ready", auth=False)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the server was not ready in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def request(self, method: str, path: str, body: dict | bytes | None = None, *, auth: bool = True,
                headers: dict | None = None, timeout: float = 120) -> tuple[int, dict, dict]:
        """``(status, JSON body, headers)``; header names in lower case."""
        headers = dict(headers or {})
        if auth and self.api_key is not None:
            headers.setdefault("X-API-Key", self.api_key)
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        if data is not None:
            headers.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw, status, got = response.read(), response.status, response.headers
        except urllib.error.HTTPError as exc:
            raw, status, got = exc.read(), exc.code, exc.headers
        got = {name.lower(): value for name, value in got.items()}
        try:
            return status, json.loads(raw), got
        except ValueError:
            return status, {"text": raw.decode("utf-8", "replace")}, got

    def get(self, path: str, **kwargs) -> tuple[int, dict, dict]:
        return self.request("GET", path, **kwargs)

    def terminate(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
