"""The feedback tests' own infrastructure works: PostgreSQL, Chromium, and the web layer stays
torch-free."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text


def test_db_url_round_trips_a_table(db_url):
    engine = create_engine(db_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE probe (id INTEGER PRIMARY KEY, note VARCHAR(20))"))
            connection.execute(text("INSERT INTO probe (id, note) VALUES (1, 'hello'), (2, '<b>x</b>')"))
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT id, note FROM probe ORDER BY id")).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [(1, "hello"), (2, "<b>x</b>")]


def test_postgres_databases_are_fresh_per_test(postgres_url, postgres_server):
    """Each test gets its own empty database on the shared server, reachable over TCP."""
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            tables = connection.execute(text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")).scalar()
            address = connection.execute(text("SELECT inet_server_addr()::text, inet_server_port()")).one()
    finally:
        engine.dispose()
    assert tables == 0
    assert address == ("127.0.0.1/32", postgres_server.port)


@pytest.mark.browser
def test_chromium_runs_javascript_and_takes_screenshots(page, screenshot_dir):
    page.goto("data:text/html,<title>probe</title><p id=p>6</p>")
    assert page.title() == "probe"
    assert page.evaluate("() => Number(document.getElementById('p').textContent) * 7") == 42
    shot = screenshot_dir / "infra-probe.png"
    page.screenshot(path=str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# Nothing in the store or the web app may import torch: candidate generation and the scripted
# annotators, which do, live with the loop (alignloop/loop/).
TORCH_ALLOWED: set[str] = set()


def assert_imports_without_torch(modules: list[str]) -> None:
    """Import `modules` one by one in a fresh interpreter, naming the first that pulls in torch."""
    check = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    assert 'torch' not in sys.modules, f'importing {name} imported torch'\n"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_models_import_without_torch():
    assert_imports_without_torch(["alignloop.feedback.models"])


def test_every_web_and_store_module_imports_without_torch():
    import alignloop.feedback
    import alignloop.web

    modules = sorted([f"alignloop.feedback.{m.name}" for m in pkgutil.iter_modules(alignloop.feedback.__path__)]
                     + [f"alignloop.web.{m.name}" for m in pkgutil.iter_modules(alignloop.web.__path__)])
    assert {"alignloop.feedback.models", "alignloop.web.app", "alignloop.web.api", "alignloop.web.pages"} <= set(modules)
    assert_imports_without_torch([m for m in modules if m not in TORCH_ALLOWED])


def test_the_store_imports_no_web_framework():
    """alignloop.feedback is the store: the CLI, the loop and the trainers' exports use it without FastAPI."""
    import alignloop.feedback

    modules = [f"alignloop.feedback.{m.name}" for m in pkgutil.iter_modules(alignloop.feedback.__path__)]
    check = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in ('fastapi', 'starlette') if m in sys.modules)\n"
        "assert not loaded, f'the store imported {loaded}'\n"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_torch_check_catches_torch():
    """The check above would notice (a module that imports torch alone keeps this quick)."""
    with pytest.raises(AssertionError, match="importing alignloop.losses.reduce imported torch"):
        assert_imports_without_torch(["alignloop.feedback.models", "alignloop.losses.reduce"])


def test_the_alignloop_executable_runs_the_server_commands_without_torch(tmp_path):
    # The command tree (alignloop/cli/main.py) imports what a command runs inside its body.
    code = (
        "import sys\n"
        f"sys.argv = ['alignloop', 'db', 'upgrade', '--db', 'sqlite:///{tmp_path}/f.db']\n"
        "from alignloop.cli.main import main\n"
        "try:\n    main()\nexcept SystemExit as stop:\n    assert not stop.code, stop.code\n"
        "print('torch loaded' if 'torch' in sys.modules else 'torch-free')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("torch-free")
    assert (tmp_path / "f.db").is_file()
