"""`alignloop eval --config RECIPE [KEY=VALUE ...]`: a policy next to its reference on held-out
prompts (see `alignloop.evaluation.policy_eval`), a short table on the terminal, eval.json on disk.

The command is a row of `alignloop.cli.commands.RECIPE_COMMANDS` (which reads the recipe and
shows input errors as one line). It takes the same recipe + overrides as the training commands,
so a recipe is optional: `alignloop eval policy=runs/ppo/final prompts=held-out.jsonl`.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from alignloop.evaluation.policy_eval import EvalConfig, evaluate, reduction_text

__all__ = ["EvalConfig", "evaluate_and_print", "summary_table"]

out = Console(highlight=False)


def _mean_se(entry: dict[str, Any], side: str) -> str:
    return f"{entry[f'{side}_mean']:.3f} ± {entry[f'{side}_se']:.3f}"


def summary_table(result: dict[str, Any]) -> Table:
    """Per source: reference and policy means, the policy's win rate; then KL, toxicity, length,
    EOS rate, distinct-n and wordless replies, reference → policy."""
    table = Table("", "reference", "policy", "win rate (W / T / L)", title="held-out evaluation")
    for name, entry in result["sources"].items():
        wins = result["win_rate"][name]
        table.add_row(escape(f"{name} ({entry['role']})"), _mean_se(entry, "reference"), _mean_se(entry, "policy"),
                      f"{wins['rate']:.1%}  ({wins['win']} / {wins['tie']} / {wins['loss']})")
    if "toxicity" in result:
        toxicity = result["toxicity"]
        reduction = toxicity["relative_reduction"]
        table.add_row("toxicity probability", f"{toxicity['reference_mean']:.4f}", f"{toxicity['policy_mean']:.4f}",
                      "" if reduction is None else
                      f"relative reduction {reduction_text(reduction, toxicity.get('relative_reduction_interval'))}")
    table.add_row("KL to reference (nats)", "0", f"{result['kl']['mean']:.3f} ± {result['kl']['se']:.3f}", "")
    table.add_row("length (tokens)", f"{result['length']['reference']:.1f}", f"{result['length']['policy']:.1f}", "")
    table.add_row("EOS rate", f"{result['eos_rate']['reference']:.2f}", f"{result['eos_rate']['policy']:.2f}", "")
    for n in ("distinct_1", "distinct_2"):
        distinct = result["distinct"]
        table.add_row(n.replace("_", "-"), f"{distinct['reference'][n]:.3f}", f"{distinct['policy'][n]:.3f}", "")
    wordless = result["wordless_rate"]
    table.add_row("wordless replies", f"{wordless['reference']:.2f}", f"{wordless['policy']:.2f}", "")
    return table


def evaluate_and_print(settings: EvalConfig) -> None:
    """Evaluate, then show the summary table, the warnings and where eval.json went."""
    result = evaluate(settings, console=out)
    out.print(summary_table(result))
    for warning in result["warnings"]:
        out.print(f"[bold yellow]warning[/]: {escape(warning)}", soft_wrap=True)
    out.print(f"eval.json: {settings.output}", soft_wrap=True)
