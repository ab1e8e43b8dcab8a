"""Progress of a long stage (training, sampling, scoring): steps, elapsed, ETA, loss and tokens per second.

On a terminal it is a rich progress bar. Anywhere else (a log file, CI, `nohup`, `alignloop
demo > log`) a bar cannot redraw itself, and rich shows it only when the stage ends, so a
redirected run would be silent for minutes: there it prints plain lines instead,

    rl: step 3/9 (33 %), 41 s elapsed, ETA 1 min 22 s, reward 0.412  KL 0.031

one when a stage passes each tenth of its steps (at most one per `PLAIN_MIN_GAP_S`), one at
least every `PLAIN_EVERY_S` while steps keep coming, and always the last.
"""

from __future__ import annotations

import time
from typing import Callable

from rich import get_console
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

PLAIN_EVERY_S = 30.0  # a slow stage (one RL step a minute) still says it is alive this often
PLAIN_MIN_GAP_S = 5.0  # a fast one does not print a line per tenth within a few seconds


def duration_text(seconds: float) -> str:
    """'41 s', '1 min 22 s', '2 h 05 min': how long, in words a log reader takes in at a glance."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def plain_progress_line(description: str, step: int, total: int, elapsed: float, done_before: int = 0,
                        status: str = "") -> str:
    """One progress line; the ETA extrapolates the pace of the steps run in this process."""
    percent = 100 * step // max(total, 1)
    line = f"{description}: step {step}/{total} ({percent} %), {duration_text(elapsed)} elapsed"
    run_here = step - done_before
    if 0 < run_here and step < total:
        line += f", ETA {duration_text(elapsed / run_here * (total - step))}"
    return f"{line}, {status}" if status else line


def is_plain_line_due(step: int, total: int, seconds_since_line: float, last_tenth: int) -> bool:
    """Whether a step deserves a line: the last one always; a new tenth of the steps once
    PLAIN_MIN_GAP_S have passed since the previous line; any step after PLAIN_EVERY_S without one."""
    if step >= total:
        return True
    if seconds_since_line >= PLAIN_EVERY_S:
        return True
    return 10 * step // max(total, 1) > last_tenth and seconds_since_line >= PLAIN_MIN_GAP_S


class PlainProgressLines:
    """Progress as rate-limited plain lines, for a console that is not a terminal."""

    def __init__(self, console: Console, description: str, total: int, completed: int,
                 clock: Callable[[], float] = time.monotonic):
        self.console, self.description, self.total, self.clock = console, description, total, clock
        self.step = self.done_before = completed
        self.started = self.last_line = clock()
        self.last_tenth = 10 * completed // max(total, 1)

    def advance(self, status: str = "") -> None:
        self.step += 1
        now = self.clock()
        if not is_plain_line_due(self.step, self.total, now - self.last_line, self.last_tenth):
            return
        self.console.print(plain_progress_line(self.description, self.step, self.total, now - self.started,
                                               self.done_before, status), markup=False, highlight=False,
                           soft_wrap=True)
        self.last_line, self.last_tenth = now, 10 * self.step // max(self.total, 1)


class TrainingProgress:
    """Context manager around rich's Progress on a terminal, plain lines elsewhere; a no-op when
    disabled (other ranks, quiet runs)."""

    def __init__(self, total_steps: int, completed: int, enabled: bool, description: str = "training",
                 console: Console | None = None):
        self.enabled = enabled
        console = console or get_console()
        # Jupyter redraws rich's bar although it is no terminal.
        self._plain = (PlainProgressLines(console, description, total_steps, completed)
                       if enabled and not console.is_terminal and not console.is_jupyter else None)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            disable=not enabled or self._plain is not None,
        )
        self._task = self._progress.add_task(description, total=total_steps, completed=completed, status="")

    def __enter__(self) -> "TrainingProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def advance(self, metrics: dict[str, float]) -> None:
        status = ""
        if "train/loss" in metrics:
            status = f"loss {metrics['train/loss']:.4f}  {metrics.get('train/tokens_per_s', 0.0):,.0f} tok/s"
        if "reward" in metrics:  # online RL: what the run is for, and what it costs
            status = f"reward {metrics['reward']:.3f}  KL {metrics.get('kl/sequence', 0.0):.3f}  " + status
        self._progress.update(self._task, advance=1, status=status)
        if self._plain is not None:
            self._plain.advance(status.strip())
