"""`alignloop report PATH`: write the HTML report of a run folder or a loop folder.

A folder with a `rounds/` subfolder is a loop (`alignloop loop` output); any other folder is a
single run (SFT, reward model, DPO, PPO, GRPO, or an evaluation). The command prints the report's
path; it imports neither torch nor the trainers, so it is quick to run anywhere.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def is_loop_folder(path: Path) -> bool:
    return (path / "rounds").is_dir()


def report_command(
    path: Path = typer.Argument(..., help="a run folder (metrics.jsonl, samples.jsonl, eval.json) or a loop folder"),
) -> None:
    """Write a self-contained HTML report (plots embedded) of a run or a loop, and print its path."""
    from alignloop.report import ReportError, write_loop_report, write_run_report

    try:
        written = write_loop_report(path) if is_loop_folder(path) else write_run_report(path)
    except ReportError as error:
        err.print(f"[bold red]error[/]: {error}", markup=True, soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    out.print(str(written), markup=False, soft_wrap=True)
