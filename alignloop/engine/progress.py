"""A rich progress bar for training: steps, elapsed, ETA, loss and tokens per second."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainingProgress:
    """Context manager around rich's Progress; a no-op when disabled (other ranks, quiet runs)."""

    def __init__(self, total_steps: int, completed: int, enabled: bool, description: str = "training"):
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            disable=not enabled,
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
