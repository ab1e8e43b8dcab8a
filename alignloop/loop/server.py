"""The feedback web app started for a loop's scripted round, in its own (torch-free) process:
the annotators reach it over HTTP exactly as people and other labelling tools do."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def feedback_server(db_url: str, timeout: float = 60.0, assignment_seed: int | None = None) -> Iterator[str]:
    """Serve `db_url` on a free local port until the block ends; yields the base URL.
    `assignment_seed` makes its choice of items and display orders reproducible."""
    port = free_port()
    seeded = [] if assignment_seed is None else ["--assignment-seed", str(assignment_seed)]
    process = subprocess.Popen(
        [sys.executable, "-m", "alignloop.cli.feedback", "--db", db_url, "--host", "127.0.0.1", "--port", str(port),
         *seeded],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(base):
            if process.poll() is not None:
                raise RuntimeError(f"the feedback server exited: {process.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the feedback server did not answer on {base} within {timeout:.0f} s")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
