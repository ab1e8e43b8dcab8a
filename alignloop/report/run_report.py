"""The report of one training run (SFT, reward model, DPO, PPO, GRPO): its curves, final
metrics, sampled generations and, when the run folder holds an `eval.json`, the evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from alignloop.report.evaluation_section import evaluation_context
from alignloop.report.files import (
    EvalFile, ReportError, RunInfo, read_json_file, read_jsonl_records,
)
from alignloop.report.html import png_data_uri, write_page
from alignloop.report.plots import line_panels_png
from alignloop.report.series import final_metrics, step_panels

SAMPLES_PER_STEP = 8


def sample_tables(samples: Sequence[dict[str, Any]], per_step: int = SAMPLES_PER_STEP) -> list[dict[str, Any]]:
    """Samples of the first and the last logged step (the change over training), a few each.

    Every table: {"step", "columns" (fields besides step, prompt and response), "rows"}.
    """
    steps = sorted({record["step"] for record in samples})
    tables = []
    for step in dict.fromkeys([steps[0], steps[-1]] if steps else []):
        rows = [record for record in samples if record["step"] == step][:per_step]
        columns = list(dict.fromkeys(k for row in rows for k in row if k not in ("step", "prompt", "response")))
        tables.append({"step": step, "columns": columns, "rows": rows})
    return tables


def require_folder(path: Path) -> Path:
    if not path.is_dir():
        raise ReportError(f"{path}: not a folder (expected a run folder with metrics.jsonl, or a loop folder)")
    return path


def write_run_report(run_dir: Path | str) -> Path:
    """Write `run_dir/report.html` and return its path."""
    run_dir = require_folder(Path(run_dir))
    metrics = read_jsonl_records(run_dir / "metrics.jsonl")
    samples = read_jsonl_records(run_dir / "samples.jsonl")
    evaluation = read_json_file(run_dir / "eval.json", EvalFile)
    info = read_json_file(run_dir / "run_info.json", RunInfo)
    records = metrics.value or []
    panels = step_panels(records)
    return write_page(
        run_dir / "report.html", "run.html",
        title=f"alignloop run: {run_dir.resolve().name}",
        folder=str(run_dir.resolve()),
        info=info,
        metrics=metrics,
        curves=png_data_uri(line_panels_png(panels)) if panels else None,
        final=final_metrics(records),
        samples=samples,
        sample_tables=sample_tables(samples.value or []),
        evaluation=evaluation,
        evaluation_view=evaluation_context(evaluation.value) if evaluation.value is not None else None,
    )
