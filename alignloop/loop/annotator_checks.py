"""What the checks make of scripted annotators whose intent is known, and the gold items they use.

`annotator_quality_rows` gives, per scripted annotator, the campaign's quality checks (gold
accuracy, position bias, disagreement, weight; `quality.py`) and the gold-free reliability
model's η and verdict (`reliability.py`), with how many of the malicious ones each caught: the
loop's `annotators.json`.

Gold items (`gold_items_from_scores`): prompt rows, in the import format, holding the best and
the worst candidate of a prompt when the gold scorer separates them by at least `min_gap`, with
the known answer for pairwise and ranking tasks. Import them into the campaign next to the
regular items (`imports.import_records`); every evaluator is eventually shown every gold item,
so an annotator who prefers the worse response is caught by gold accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from alignloop.loop.annotators import ScriptedAnnotator
from alignloop.feedback.quality import QualityThresholds, campaign_report, quality_weight
from alignloop.feedback.reliability import campaign_reliability

__all__ = ["annotator_quality_rows", "gold_items_from_scores"]


def annotator_quality_rows(
    session: Session, campaign_id: int, annotators: Sequence[ScriptedAnnotator],
    thresholds: QualityThresholds | None = None,
) -> dict[str, Any]:
    """The campaign's quality checks for each scripted annotator, in the loop's `annotators.json`
    shape, with how many malicious (and honest) annotators the checks flagged, and each one's
    reliability and verdict from the gold-free model (`reliability.py`)."""
    report = campaign_report(session, campaign_id, thresholds)
    model = campaign_reliability(session, campaign_id)
    by_id = {row.evaluator_id: row for row in report.evaluators}
    rows = []
    for annotator in annotators:
        quality = by_id.get(annotator.user_id)
        if quality is None:  # no judgements: nothing to flag, the prior weight
            rows.append({"annotator": annotator.name, "kind": annotator.kind, "judgements": 0, "flagged": False,
                         "flags": [], "gold_accuracy": None, "first_shown_share": None,
                         "consensus_disagreement": None,
                         "weight": quality_weight(0, 0, None, report.thresholds.gold_prior_answers)})
            continue
        rows.append({"annotator": annotator.name, "kind": annotator.kind, "judgements": quality.judgements,
                     "flagged": quality.flagged, "flags": list(quality.flags), "gold_accuracy": quality.gold_accuracy,
                     "first_shown_share": quality.position.share,
                     "consensus_disagreement": quality.consensus_disagreement, "weight": quality.weight})
    for row, annotator in zip(rows, annotators):
        known = annotator.user_id in model.reliability
        row["reliability"] = round(model.reliability[annotator.user_id], 4) if known else None
        row["verdict"] = model.verdict(annotator.user_id) if known else None
    return {
        "rows": rows,
        "malicious": sum(row["kind"] == "malicious" for row in rows),
        "malicious_flagged": sum(row["kind"] == "malicious" and row["flagged"] for row in rows),
        "honest_flagged": sum(row["kind"] == "honest" and row["flagged"] for row in rows),
        # The same question asked of the reliability model, which needs no gold items.
        "malicious_found_by_model": sum(row["kind"] == "malicious" and row["verdict"] == "malicious" for row in rows),
        "honest_called_malicious_by_model": sum(row["kind"] == "honest" and row["verdict"] == "malicious"
                                                for row in rows),
    }


def gold_items_from_scores(
    prompts: Sequence[Any], candidates: Sequence[Sequence[str]], scores: Sequence[Sequence[float]], *,
    min_gap: float, limit: int | None = None,
) -> list[dict[str, Any]]:
    """Gold items as import rows (`imports.PromptRow`): per prompt, its best and worst candidate
    when the gold scorer separates them by at least `min_gap` (keep it above the annotators'
    `tie_margin`, or honest ones would answer "tie"), with the known pairwise and ranking answer.

    Two candidates only: a pairwise task shows two, and with more the known winner might not be
    among them. The widest gaps come first; `limit` keeps that many.
    """
    if not len(prompts) == len(candidates) == len(scores):
        raise ValueError(f"expected one candidate list and one score list per prompt, got {len(prompts)} prompts, "
                         f"{len(candidates)} candidate lists, {len(scores)} score lists")
    if min_gap <= 0:
        raise ValueError(f"min_gap: expected a positive score difference, got {min_gap}")
    found = []
    for index, (prompt, texts, values) in enumerate(zip(prompts, candidates, scores)):
        if len(texts) != len(values):
            raise ValueError(f"prompt {index}: {len(values)} scores for {len(texts)} candidates")
        if len(texts) < 2:
            continue
        best = max(range(len(values)), key=values.__getitem__)
        worst = min(range(len(values)), key=values.__getitem__)
        gap = values[best] - values[worst]
        if gap >= min_gap:
            pair = sorted((best, worst))  # in their original order: the display order is the server's
            better = pair.index(best)
            row = {"prompt": prompt, "candidates": [texts[i] for i in pair],
                   "gold": {"pairwise": {"better": better}, "ranking": {"ranks": [1, 2] if better == 0 else [2, 1]}}}
            found.append((gap, index, row))
    found.sort(key=lambda entry: (-entry[0], entry[1]))
    return [row for _, _, row in found[:limit]]
