"""Console output that only the main process prints, so N processes don't print N times."""

from __future__ import annotations

from rich.console import Console


def console_for(accelerator) -> Console:
    return Console(quiet=not accelerator.is_main_process, highlight=False)
