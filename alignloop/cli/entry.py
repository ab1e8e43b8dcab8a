"""The `alignloop` executable. The feedback platform's commands (`serve`, `db`, `feedback`) and `report` run
from a small command tree that never loads the ML stack: the web server must stay torch-free,
and the full CLI imports the training modules to list their config keys in `--help`."""

from __future__ import annotations

import sys

LIGHT_COMMANDS = frozenset({"serve", "db", "feedback", "report"})


def light_app():
    import typer

    from alignloop.cli.feedback import db_app, feedback_app, serve
    from alignloop.cli.report import report_command

    app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode="rich")
    app.add_typer(db_app, name="db")
    app.add_typer(feedback_app, name="feedback")
    app.command("serve")(serve)
    app.command("report")(report_command)
    return app


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in LIGHT_COMMANDS:
        light_app()(prog_name="alignloop")
    else:
        from alignloop.cli.main import main as full_cli

        full_cli()


if __name__ == "__main__":  # pragma: no cover
    main()
