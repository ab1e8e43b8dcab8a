"""`alignloop report PATH`: write the HTML report of a run folder or a loop folder.

A folder with a `rounds/` subfolder is a loop (`alignloop loop` output); any other folder is a
single run (SFT, reward model, DPO, PPO, GRPO, or an evaluation). The command prints the report's
path; it imports neither torch nor the trainers, so it is quick to run anywhere.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from alignloop.cli.errors import friendly_errors

out = Console(highlight=False)


def is_loop_folder(path: Path) -> bool:
    return (path / "rounds").is_dir()


@friendly_errors
def report_command(
    path: Path = typer.Argument(..., help="a run folder (metrics.jsonl, samples.jsonl, eval.json) or a loop folder"),
) -> None:
    """Write a self-contained HTML report (plots embedded) of a run or a loop, and print its path."""
    from alignloop.report import write_loop_report, write_run_report

    written = write_loop_report(path) if is_loop_folder(path) else write_run_report(path)
    out.print(str(written), markup=False, soft_wrap=True)
