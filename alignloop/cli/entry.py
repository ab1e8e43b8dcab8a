"""The entry point that `alignloop` executables installed before the command table name
(pyproject.toml now names `alignloop.cli.main:main`); reinstalling makes this file unnecessary."""

from alignloop.cli.main import main

__all__ = ["main"]
