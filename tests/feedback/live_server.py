"""The feedback app served for real in tests: uvicorn on a free port, in a thread or a process."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from alignloop.web import create_app, server_options
from alignloop.feedback.database import upgrade


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(base: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    """Poll `/healthz` until it answers 200; fail early if `process` has exited."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None:
            assert process.poll() is None, f"server exited: {process.stderr.read().decode()}"
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not come up"
        time.sleep(0.05)


@contextmanager
def serving(db_url: str, assignment_seed: int | None = None) -> Iterator[str]:
    """The app (schema upgraded first) served by uvicorn in a background thread; yields the base URL."""
    upgrade(db_url)
    server = uvicorn.Server(uvicorn.Config(create_app(db_url, assignment_seed), host="127.0.0.1", port=free_port(), log_level="warning", **server_options()))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.config.port}"
    try:
        wait_until_healthy(base, timeout=20)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)
