"""Metric sinks: one JSON line per logging step (alignloop's own), and every experiment tracker
Hugging Face Accelerate supports (TensorBoard, wandb, MLflow, Comet, Aim, ClearML, DVCLive,
SwanLab, Trackio) through accelerate's tracker classes.

Metric names follow `group/name` (`train/loss`, `eval/loss`, `train/tokens_per_s`) so that
TensorBoard groups them and later methods (`policy/clipfrac`, `kl/mean`) slot in beside. Where
a metric means what a TRL metric means it has TRL's name (`rewards/accuracies`,
`rewards/margins`). The trackers get every training-side metric under `train/`
(`train/rewards/accuracies` beside `eval/rewards/accuracies`), as the Hugging Face Trainer
writes TRL's; metrics.jsonl keeps the names as logged.

A tracker that is not installed is refused when the recipe is validated (`check_report_to`),
before any model loads: one line naming the package to install.
"""

from __future__ import annotations

import importlib.util
import json
import math
import time
from pathlib import Path
from typing import Any

__all__ = ["REPORT_TO", "MetricsLogger", "check_report_to", "tracker_name", "read_metrics", "markdown_table",
           "drop_metrics_after"]

# accelerate's tracker name -> the package it needs (and the name of its pip install).
TRACKER_PACKAGES = {
    "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml", "aim": "aim",
    "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio",
}
REPORT_TO = ("jsonl", *TRACKER_PACKAGES)


def check_report_to(names: list[str]) -> list[str]:
    """`names` if each is a known sink whose package is installed; else a ValueError saying which is not."""
    for name in names:
        if name not in REPORT_TO:
            raise ValueError(f"unknown metric sink {name!r}; known: {', '.join(REPORT_TO)}")
        package = TRACKER_PACKAGES.get(name)
        if package is not None and importlib.util.find_spec(package) is None:
            raise ValueError(f"{name!r} is not installed: pip install {package.replace('_', '-')}")
    return names


def tracker_name(metric: str) -> str:
    """The name a tracker shows `metric` under: training-side metrics go under `train/`."""
    return metric if metric.startswith(("train/", "eval/")) else f"train/{metric}"


def _tracker(name: str, run_dir: Path, resume: bool) -> Any:
    """accelerate's tracker `name` for this run, started; files go inside the run folder."""
    # lazy: the trackers module probes for wandb / tensorboard / ...; only runs that report to one need it
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    cls = LOGGER_TYPE_TO_CLASS[name]
    if name == "tensorboard":
        tracker = cls("tensorboard", run_dir)  # writes run_dir/tensorboard/
    elif name == "aim":
        tracker = cls(run_dir.name, logging_dir=str(run_dir))
    elif name == "mlflow":
        tracker = cls(experiment_name="alignloop", logging_dir=str(run_dir / "mlruns"), run_name=run_dir.name)
    elif name == "wandb":
        tracker = cls("alignloop", name=run_dir.name, dir=str(run_dir), resume="allow" if resume else None)
    else:
        tracker = cls(run_dir.name)
    tracker.start()
    return tracker


class MetricsLogger:
    """Writes metrics to every configured sink; only ever created on the main process."""

    def __init__(self, run_dir: Path, report_to: list[str], config: dict[str, Any], resume: bool):
        self.run_dir = run_dir
        self.jsonl = None
        if "jsonl" in report_to:
            # Appending on resume keeps the steps before the interruption in the same file.
            self.jsonl = open(run_dir / "metrics.jsonl", "a" if resume else "w", encoding="utf-8")
        self.trackers = {name: _tracker(name, run_dir, resume) for name in check_report_to(report_to)
                         if name != "jsonl"}
        for tracker in self.trackers.values():
            if config:
                tracker.store_init_configuration(config)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items()}
        if self.jsonl is not None:
            record = {"step": step, "time": round(time.time(), 3)}
            record.update({k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()})
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()
        if self.trackers:
            grouped = {tracker_name(k): v for k, v in clean.items()}
            for tracker in self.trackers.values():
                tracker.log(grouped, step=step)

    def log_samples(self, step: int, samples: list[dict[str, Any]]) -> None:
        """A table of (prompt, response, reward, ...) rows: samples.jsonl and TensorBoard text."""
        with open(self.run_dir / "samples.jsonl", "a", encoding="utf-8") as handle:
            for row in samples:
                handle.write(json.dumps({"step": step, **row}) + "\n")
        if "tensorboard" in self.trackers and samples:
            writer = self.trackers["tensorboard"].tracker
            writer.add_text("samples", markdown_table(samples), step)
            writer.flush()

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        for tracker in self.trackers.values():
            tracker.finish()


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
