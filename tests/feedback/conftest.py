"""Real servers for the feedback platform's tests: a fresh SQLite file or PostgreSQL database per
test, and a headless Chromium driven by Playwright.

* PostgreSQL is a throw-away cluster built from the installed server binaries (Debian's
  `postgresql` package) once per session: `initdb` into a temp dir, started on a free port bound
  to 127.0.0.1 with trust auth, stopped at the end. PostgreSQL refuses to run as root, so under
  root the cluster belongs to the `postgres` user (created when missing). `fsync=off` keeps it
  fast; that only matters if the machine itself crashes, which no test does.
* Chromium is Debian's (`apt-get install chromium`); Playwright launches it by path, so nothing
  is downloaded. `--no-sandbox` because CI runs as root inside a container, where Chromium's
  sandbox cannot start; the pages loaded are the tests' own.

Tests that need something absent (the PostgreSQL binaries, Chromium) are skipped with the reason
and the package to install; anything else that goes wrong fails loudly.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

import web_client

POSTGRES_USER = "postgres"  # the database superuser the cluster is created with
POSTGRES_OS_USER = "postgres"  # who owns and runs the cluster when tests run as root
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")


# ---------------------------------------------------------------- SQLite


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A fresh SQLite database file for this test."""
    return f"sqlite:///{tmp_path / 'feedback.db'}"


# ---------------------------------------------------------------- PostgreSQL


@dataclass(frozen=True)
class PostgresServer:
    """A running throw-away PostgreSQL cluster."""

    host: str
    port: int
    user: str
    data_dir: Path

    def url(self, database: str) -> str:
        """SQLAlchemy URL of `database` on this server."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def conninfo(self, database: str = "postgres") -> str:
        """libpq connection string, for psycopg directly."""
        return f"host={self.host} port={self.port} user={self.user} dbname={database}"


def find_postgres_bin_dir() -> Path | None:
    """The folder holding `initdb`, `pg_ctl` and `postgres`: the one `pg_ctl` on PATH points to
    (symlinks resolved, since pg_ctl looks for `postgres` beside itself), else the newest
    /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    versioned = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += [Path(p) for p in sorted(versioned, key=lambda p: int(Path(p).parent.name), reverse=True)]
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cluster_owner() -> str | None:
    """The unprivileged OS user to run PostgreSQL as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(POSTGRES_OS_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", POSTGRES_OS_USER], check=True)
    return POSTGRES_OS_USER


def run_as(owner: str | None, command: list[str], cwd: Path) -> None:
    """Run a PostgreSQL tool (as `owner` when root); fail with its output if it fails."""
    if owner is not None:
        command = ["runuser", "-u", owner, "--", *command]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def start_cluster(bin_dir: Path, root: Path, owner: str | None, port: int) -> None:
    data_dir, log_file = root / "data", root / "server.log"
    initdb = [str(bin_dir / "initdb"), "-D", str(data_dir), "-U", POSTGRES_USER, "-A", "trust"]
    run_as(owner, [*initdb, "-E", "UTF8", "--no-locale", "--no-sync"], cwd=root)
    server_options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off -c max_connections=200"
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-l", str(log_file)]
    try:
        run_as(owner, [*pg_ctl, "-o", server_options, "-w", "start"], cwd=root)
    except RuntimeError as error:
        log = log_file.read_text() if log_file.exists() else "(no server log)"
        raise RuntimeError(f"{error}\nserver log:\n{log}") from None


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL cluster for the whole session (about a second to start)."""
    bin_dir = find_postgres_bin_dir()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin; "
            "install Debian's `postgresql` package (scripts/install-test-services.sh does this when run as root)"
        )
    owner = cluster_owner()
    root = Path(tempfile.mkdtemp(prefix="alignloop-pg-"))  # not under pytest's 0700 tmp: the owner must reach it
    if owner is not None:
        shutil.chown(root, user=owner)
    port = free_local_port()
    try:
        start_cluster(bin_dir, root, owner, port)
        try:
            yield PostgresServer(host="127.0.0.1", port=port, user=POSTGRES_USER, data_dir=root / "data")
        finally:
            run_as(owner, [str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "fast", "-w", "stop"], cwd=root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer):
    """A fresh, empty database for this test (dropped afterwards, even with connections open)."""
    import psycopg

    database = f"test_{uuid.uuid4().hex}"
    with psycopg.connect(postgres_server.conninfo(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    yield postgres_server.url(database)
    with psycopg.connect(postgres_server.conninfo(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request) -> str:
    """Runs the test once on a fresh SQLite file and once on a fresh PostgreSQL database."""
    return request.getfixturevalue(f"{request.param}_url")


# ---------------------------------------------------------------- Chromium


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    """Path of the system Chromium (Debian's package); skips the test when it is not installed."""
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    pytest.skip("Chromium not found (/usr/bin/chromium, chromium, chromium-browser); `apt-get install chromium`")


@pytest.fixture(scope="session")
def browser(chromium_executable: str):
    """One headless Chromium for the session."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_executable, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (own cookies) and page per test; failures surface in 10 s, not 30."""
    context = browser.new_context()
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    """Where browser tests save screenshots: $ALIGNLOOP_SCREENSHOTS when set (to keep them),
    else a session temp folder."""
    chosen = os.environ.get("ALIGNLOOP_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ---------------------------------------------------------------- the app, served and populated


@pytest.fixture
def world(db_url):
    """The security checks run on SQLite and on PostgreSQL: (base URL, store, tokens, campaign id)."""
    with web_client.serving_with_store(db_url) as (base, store):
        yield (base, store, *web_client.populate(store))


@pytest.fixture
def sqlite_world(sqlite_url):
    """The same, on SQLite only, for checks that do not depend on the database."""
    with web_client.serving_with_store(sqlite_url) as (base, store):
        yield (base, store, *web_client.populate(store))
