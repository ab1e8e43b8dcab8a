"""The evaluation part of a report, from an `eval.json`: scores before (reference) and after
(policy) per scorer, toxicity, KL, win rates, length and diversity, warnings, examples, and the
before / after score distributions as histograms.

"Before / after" is read off one evaluation: the reference model's responses are the before, the
policy's the after, on the same held-out prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from alignloop.report.files import EvalFile
from alignloop.report.html import png_data_uri
from alignloop.report.plots import histograms_png


@dataclass(frozen=True)
class SourceRow:
    name: str
    higher_is_better: bool
    responses: int
    policy_mean: Optional[float]
    policy_se: Optional[float]
    reference_mean: Optional[float]
    reference_se: Optional[float]
    disagreement: Optional[dict[str, float]] = None  # an ensemble's: {"policy_mean", "reference_mean"}

    @property
    def change(self) -> Optional[float]:
        """Policy mean minus reference mean (the direction that is better depends on the scorer)."""
        if self.policy_mean is None or self.reference_mean is None:
            return None
        return self.policy_mean - self.reference_mean

    @property
    def improved(self) -> Optional[bool]:
        if self.change is None or self.change == 0:
            return None
        return (self.change > 0) == self.higher_is_better


def source_rows(evaluation: EvalFile) -> list[SourceRow]:
    return [
        SourceRow(name, scores.higher_is_better, len(scores.policy), scores.policy_mean, scores.policy_se,
                  scores.reference_mean, scores.reference_se, scores.disagreement)
        for name, scores in evaluation.sources.items()
    ]


def histogram_groups(evaluation: EvalFile) -> list[tuple[str, dict[str, list[float]]]]:
    """Before / after distributions per scorer, of raw toxicity, and of the per-response KL."""
    groups = []
    for name, scores in evaluation.sources.items():
        if scores.policy or scores.reference:
            direction = "higher" if scores.higher_is_better else "lower"
            groups.append((f"{name} ({direction} is better)",
                           {"reference (before)": scores.reference, "policy (after)": scores.policy}))
    toxicity = evaluation.toxicity
    if toxicity is not None and (toxicity.policy or toxicity.reference):
        groups.append(("toxicity probability (lower is better)",
                       {"reference (before)": toxicity.reference, "policy (after)": toxicity.policy}))
    if evaluation.kl is not None and evaluation.kl.per_response:
        groups.append(("KL to the reference, per response", {"policy": evaluation.kl.per_response}))
    return groups


def example_scores(scores: dict[str, list[Optional[float]]]) -> list[tuple[str, Any, Any]]:
    """(scorer, reference score, policy score) per scorer of one example."""
    return [(name, pair[0] if len(pair) > 0 else None, pair[1] if len(pair) > 1 else None)
            for name, pair in scores.items()]


def evaluation_context(evaluation: EvalFile) -> dict[str, Any]:
    """What the `evaluation` template macro shows."""
    groups = histogram_groups(evaluation)
    return {
        "file": evaluation,
        "sources": source_rows(evaluation),
        "histograms": png_data_uri(histograms_png(groups)) if groups else None,
        "examples": [(example, example_scores(example.scores)) for example in evaluation.examples],
    }
