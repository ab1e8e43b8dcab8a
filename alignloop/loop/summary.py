"""The few numbers a loop is judged by, printed at its end and kept in `summary.json`:
held-out toxicity before → after (the gold scorer, which the policy never trained on directly),
the relative reduction, the KL reached, the reward model's view and held-out accuracy, annotator
quality, and time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from alignloop.evaluation.policy_eval import reduction_text
from alignloop.loop.steps import last_eval_accuracy


def loop_summary(loop_dir: Path, seconds: float) -> dict[str, Any]:
    """Summary of the last round's evaluation (and of every round's annotators)."""
    rounds = sorted((loop_dir / "rounds").glob("round-*"), key=lambda p: int(p.name.split("-")[1]))
    evaluation = json.loads((rounds[-1] / "eval.json").read_text(encoding="utf-8"))
    toxicity = evaluation.get("toxicity", {})
    malicious = flagged = honest_flagged = 0
    for folder in rounds:
        path = folder / "annotators.json"
        if path.is_file():
            quality = json.loads(path.read_text(encoding="utf-8"))
            malicious += quality["malicious"]
            flagged += quality["malicious_flagged"]
            honest_flagged += quality["honest_flagged"]
    summary = {
        "rounds": len(rounds),
        "toxicity_before": toxicity.get("reference_mean"),
        "toxicity_after": toxicity.get("policy_mean"),
        "relative_reduction": toxicity.get("relative_reduction"),
        "relative_reduction_interval": toxicity.get("relative_reduction_interval"),
        "kl": evaluation["kl"]["mean"],
        "win_rate": {name: rates["rate"] for name, rates in evaluation.get("win_rate", {}).items()},
        "reward_model_accuracy": last_eval_accuracy(rounds[-1] / "rm" / "metrics.jsonl"),
        "malicious_annotators": malicious,
        "malicious_flagged": flagged,
        "honest_flagged": honest_flagged,
        "warnings": evaluation.get("warnings", []),
        "seconds": round(seconds, 1),
    }
    (loop_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def print_summary(summary: dict[str, Any], console: Console) -> None:
    table = Table(title="alignloop: what the loop achieved (held-out prompts)", show_header=False)
    if summary["toxicity_before"] is not None:
        table.add_row("mean toxicity (alt-profanity-check)",
                      f"{summary['toxicity_before']:.3f} → {summary['toxicity_after']:.3f}")
        table.add_row("relative reduction",
                      reduction_text(summary["relative_reduction"], summary.get("relative_reduction_interval")))
    table.add_row("KL to the starting model", f"{summary['kl']:.2f} nats per response")
    for name, rate in summary["win_rate"].items():
        table.add_row(f"win rate vs start ({name})", f"{100 * rate:.0f} %")
    accuracy = summary.get("reward_model_accuracy")
    table.add_row("reward model, held-out pairwise accuracy",
                  "none held out" if accuracy is None else f"{100 * accuracy:.0f} %")
    table.add_row("malicious annotators flagged", f"{summary['malicious_flagged']} of {summary['malicious_annotators']}"
                  f" (honest flagged: {summary['honest_flagged']})")
    table.add_row("time", f"{summary['seconds'] / 60:.1f} min")
    console.print(table)
    for warning in summary["warnings"]:
        console.print(f"[yellow]warning[/]: {warning}")
