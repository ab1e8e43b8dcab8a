"""Metric sinks: one JSON line per logging step, TensorBoard scalars, and wandb when asked for.

Metric names follow `group/name` (`train/loss`, `eval/loss`, `train/tokens_per_s`) so that
TensorBoard groups them and later methods (`policy/clipfrac`, `kl/mean`) slot in beside.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Writes metrics to every configured sink; only ever created on the main process."""

    def __init__(self, run_dir: Path, report_to: list[str], config: dict[str, Any], resume: bool):
        self.run_dir = run_dir
        self.jsonl = None
        self.tensorboard = None
        self.wandb_run = None
        if "jsonl" in report_to:
            # Appending on resume keeps the steps before the interruption in the same file.
            self.jsonl = open(run_dir / "metrics.jsonl", "a" if resume else "w", encoding="utf-8")
        if "tensorboard" in report_to:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        if "wandb" in report_to:
            self.wandb_run = _start_wandb(run_dir, config, resume)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items()}
        if self.jsonl is not None:
            record = {"step": step, "time": round(time.time(), 3)}
            record.update({k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()})
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()
        if self.tensorboard is not None:
            for name, value in clean.items():
                self.tensorboard.add_scalar(name, value, step)
            self.tensorboard.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(clean, step=step)

    def log_samples(self, step: int, samples: list[dict[str, Any]]) -> None:
        """A table of (prompt, response, reward, ...) rows: samples.jsonl and TensorBoard text."""
        with open(self.run_dir / "samples.jsonl", "a", encoding="utf-8") as handle:
            for row in samples:
                handle.write(json.dumps({"step": step, **row}) + "\n")
        if self.tensorboard is not None and samples:
            self.tensorboard.add_text("samples", markdown_table(samples), step)

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def _start_wandb(run_dir: Path, config: dict[str, Any], resume: bool):
    try:
        import wandb
    except ImportError:
        raise RuntimeError("train.report_to lists 'wandb' but wandb is not installed: pip install wandb") from None
    return wandb.init(dir=str(run_dir), name=run_dir.name, config=config, resume="allow" if resume else None)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file, in order (for tests, reports and benchmarks)."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows of equal keys as a markdown table (TensorBoard renders it), cells on one line."""
    columns = list(rows[0])
    def cell(value: Any) -> str:
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def drop_metrics_after(path: Path, step: int) -> None:
    """On resume, forget records (metrics, samples) logged after the checkpoint: those steps run again."""
    if not path.is_file():
        return
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
