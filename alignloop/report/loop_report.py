"""The report of an RLHF loop: how the policy and the reward model trained round after round, how
the evaluation moved, whether the feedback platform caught the malicious annotators, and what the
policy now writes next to the reference.

It reads the loop folder as the loop writes it (`state.json`, `rounds/round-<n>/` with
`summary.json`, `annotators.json`, `eval.json`, `rm/`, `rl/`); any piece a round lacks is shown as
not available, so the report can be written after every round, or about a loop that stopped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from alignloop.evaluation.hacking import round_trend_warnings
from alignloop.report.evaluation_section import evaluation_context
from alignloop.report.files import (
    AnnotatorsFile, EvalFile, Loaded, RoundSummary, read_json_file, read_jsonl_records, read_state_scalars,
)
from alignloop.report.html import png_data_uri, write_page
from alignloop.report.plots import Panel, Series, line_panels_png, win_rates_png
from alignloop.report.run_report import require_folder
from alignloop.report.series import concatenate_rounds, step_panels

ROUND_FOLDER = re.compile(r"^round-(\d+)$")
POLICY_METRICS = ("loss", "reward", "kl/sequence", "rewards/accuracies", "rewards/margins",
                  "overoptimisation/disagreement_ratio")
REWARD_MODEL_METRICS = ("loss", "rewards/accuracies")


@dataclass(frozen=True)
class RoundFiles:
    """Everything one round folder holds, each piece loaded or marked not available."""

    number: int
    folder: Path
    summary: Loaded[RoundSummary]
    annotators: Loaded[AnnotatorsFile]
    evaluation: Loaded[EvalFile]
    rm_metrics: Loaded[list[dict[str, Any]]]
    rl_metrics: Loaded[list[dict[str, Any]]]

    def pieces(self) -> dict[str, Loaded[Any]]:
        return {"summary.json": self.summary, "annotators.json": self.annotators, "eval.json": self.evaluation,
                "rm/metrics.jsonl": self.rm_metrics, "rl/metrics.jsonl": self.rl_metrics}


def round_folders(loop_dir: Path) -> list[tuple[int, Path]]:
    """(n, folder) of every `rounds/round-<n>` folder, in round order."""
    rounds_dir = loop_dir / "rounds"
    if not rounds_dir.is_dir():
        return []
    found = [(ROUND_FOLDER.match(child.name), child) for child in rounds_dir.iterdir() if child.is_dir()]
    return sorted((int(match.group(1)), child) for match, child in found if match)


def read_round(number: int, folder: Path) -> RoundFiles:
    return RoundFiles(
        number=number,
        folder=folder,
        summary=read_json_file(folder / "summary.json", RoundSummary),
        annotators=read_json_file(folder / "annotators.json", AnnotatorsFile),
        evaluation=read_json_file(folder / "eval.json", EvalFile),
        rm_metrics=read_jsonl_records(folder / "rm" / "metrics.jsonl"),
        rl_metrics=read_jsonl_records(folder / "rl" / "metrics.jsonl"),
    )


def problems(rounds: list[RoundFiles], state: Loaded[Any]) -> list[str]:
    """Files that exist but could not be read (missing ones are only "not available")."""
    found = [state.problem] if state.problem and not state.missing else []
    for round_files in rounds:
        found += [piece.problem for piece in round_files.pieces().values() if piece.problem and not piece.missing]
    return found


def warnings(rounds: list[RoundFiles]) -> list[tuple[int | None, str]]:
    """(round, warning) of every evaluation warning, such as a reward-hacking alarm, then the
    alarms that only show across rounds (the trend names its rounds itself)."""
    evaluated = [r for r in rounds if r.evaluation.value is not None]
    found: list[tuple[int | None, str]] = [(r.number, text) for r in evaluated for text in r.evaluation.value.warnings]
    if len(evaluated) >= 2:
        dumps = [{"sources": comparable_sources(r.evaluation.value)} for r in evaluated]
        found += [(None, text) for text in round_trend_warnings(dumps, first_round=evaluated[0].number)]
    return found


def comparable_sources(evaluation: EvalFile) -> dict[str, dict[str, Any]]:
    """The scorers of an eval.json with one policy score per reference score (a damaged file's
    others are left out of the trend check rather than stopping the report)."""
    return {name: scores.model_dump() for name, scores in evaluation.sources.items()
            if scores.policy and len(scores.policy) == len(scores.reference)}


def training_curves(rounds: list[RoundFiles], metrics: str, bases: tuple[str, ...], prefix: str) -> Optional[str]:
    """Per-step curves of the rounds' `rl` or `rm` runs laid end to end, as a data URI."""
    per_round = [(r.number, getattr(r, metrics).value or []) for r in rounds]
    records, boundaries = concatenate_rounds(per_round)
    panels = step_panels(records, bases, boundaries=boundaries, prefix=prefix)
    return png_data_uri(line_panels_png(panels)) if panels else None


def per_round_panels(evaluations: list[tuple[int, EvalFile]]) -> list[Panel]:
    """Evaluation means by round: every scorer (policy and reference), raw toxicity, KL."""
    def line(label: str, points: list[tuple[int, Optional[float]]], dashed: bool = False) -> Series:
        kept = [(n, value) for n, value in points if value is not None]
        return Series(label, tuple(float(n) for n, _ in kept), tuple(v for _, v in kept), dashed)

    names = list(dict.fromkeys(name for _, ev in evaluations for name in ev.sources))
    panels = []
    for name in names:
        scores = [(n, ev.sources.get(name)) for n, ev in evaluations]
        panels.append(Panel(f"{name}: mean score", (
            line("policy", [(n, s.policy_mean if s else None) for n, s in scores]),
            line("reference", [(n, s.reference_mean if s else None) for n, s in scores], dashed=True)), xlabel="round"))
    toxic = [(n, ev.toxicity) for n, ev in evaluations if ev.toxicity is not None]
    if toxic:
        panels.append(Panel("toxicity probability: mean", (
            line("policy", [(n, t.policy_mean) for n, t in toxic]),
            line("reference", [(n, t.reference_mean) for n, t in toxic], dashed=True)), xlabel="round"))
    kl = [(n, ev.kl.mean) for n, ev in evaluations if ev.kl is not None]
    if kl:
        panels.append(Panel("KL to the reference: mean", (line("policy", kl),), xlabel="round"))
    return [panel for panel in panels if any(series.x for series in panel.series)]


def round_table(rounds: list[RoundFiles]) -> dict[str, Any]:
    """The per-round summary table: summary.json numbers and the annotator-quality counts."""
    extras = list(dict.fromkeys(k for r in rounds if r.summary.value for k in r.summary.value.extra_numbers()))
    rows = []
    for r in rounds:
        summary, annotators = r.summary.value, r.annotators.value
        honest = sum(row.kind == "honest" for row in annotators.rows) if annotators else None
        rows.append({
            "round": r.number,
            "judgements": summary.judgements if summary else None,
            "rm_eval_accuracy": summary.rm_eval_accuracy if summary else None,
            "malicious": f"{annotators.malicious_flagged} / {annotators.malicious}" if annotators else None,
            "honest": f"{annotators.honest_flagged} / {honest}" if annotators else None,
            "extras": [summary.extra_numbers().get(k) if summary else None for k in extras],
        })
    return {"extras": extras, "rows": rows}


def evaluation_table(evaluations: list[tuple[int, EvalFile]]) -> dict[str, Any]:
    """The per-round evaluation table: scorer means, toxicity, KL and win rates."""
    sources = list(dict.fromkeys(name for _, ev in evaluations for name in ev.sources))
    win_sources = list(dict.fromkeys(name for _, ev in evaluations for name in ev.win_rate))
    rows = [{"round": n, "eval": ev, "sources": [ev.sources.get(name) for name in sources],
             "wins": [ev.win_rate.get(name) for name in win_sources]} for n, ev in evaluations]
    return {"sources": sources, "win_sources": win_sources, "rows": rows}


def win_rate_plot(evaluations: list[tuple[int, EvalFile]]) -> Optional[str]:
    rates: dict[str, dict[int, float]] = {}
    for n, ev in evaluations:
        for name, win in ev.win_rate.items():
            rates.setdefault(name, {})[n] = win.rate
    return png_data_uri(win_rates_png(rates)) if rates else None


def write_loop_report(loop_dir: Path | str) -> Path:
    """Write `loop_dir/report.html` and return its path."""
    loop_dir = require_folder(Path(loop_dir))
    state = read_state_scalars(loop_dir / "state.json")
    rounds = [read_round(number, folder) for number, folder in round_folders(loop_dir)]
    evaluations = [(r.number, r.evaluation.value) for r in rounds if r.evaluation.value is not None]
    round_panels = per_round_panels(evaluations)
    return write_page(
        loop_dir / "report.html", "loop.html",
        title=f"alignloop loop: {loop_dir.resolve().name}",
        folder=str(loop_dir.resolve()),
        state=state,
        problems=problems(rounds, state),
        warnings=warnings(rounds),
        rounds=rounds,
        round_table=round_table(rounds),
        evaluation_table=evaluation_table(evaluations),
        policy_curves=training_curves(rounds, "rl_metrics", POLICY_METRICS, "policy: "),
        reward_model_curves=training_curves(rounds, "rm_metrics", REWARD_MODEL_METRICS, "reward model: "),
        round_curves=png_data_uri(line_panels_png(round_panels)) if round_panels else None,
        win_rates=win_rate_plot(evaluations),
        evaluation_views={n: evaluation_context(ev) for n, ev in evaluations},
    )
