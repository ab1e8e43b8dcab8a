"""Which of a round's pool items people judge: active selection by the last round's reward model.

With `feedback.selection_pool: P` a round generates candidates for P x `prompts.per_round`
prompts and keeps `per_round` of them for people; the rest stay in the store, held back
(`Item.held_back`: never assigned, never exported). `feedback.selection` says how the kept ones
are chosen (`alignloop.feedback.selection`): at random (`uniform`), or by what the previous
round's reward-model ensemble stands to learn from them (`uncertainty`: BALD over the
members' Bradley–Terry preferences; `entropy`). Round 1 has no reward model and a single-member
model has no disagreement to read, so both fall back to uniform, and say so.

Runs inside the generate step, after the candidates are stored; a rerun after an interruption
finds the verdict already recorded and only reports it.
"""

from __future__ import annotations

import statistics
from typing import Any

from sqlalchemy import select

from alignloop.feedback import service
from alignloop.feedback.database import make_engine, make_session_factory, transaction
from alignloop.feedback.models import Item
from alignloop.feedback.selection import item_score, select_items
from alignloop.models.reward_scoring import RewardScorer

__all__ = ["ensemble_item_scores", "ensemble_scorer", "select_round_items"]


def ensemble_item_scores(scorer: RewardScorer, items: list[Item], how: str) -> dict[int, float]:
    """{item id: score} of each item's candidates under `how`, from the members' raw scores
    (Bradley–Terry's units: the scorer is loaded without the stored normalisation)."""
    prompts = [item.prompt for item in items for _ in item.candidates]
    texts = [candidate.text for item in items for candidate in item.candidates]
    members = scorer.member_scores(prompts, texts).tolist()  # (candidates, K)
    scores, start = {}, 0
    for item in items:
        scores[item.id] = item_score(members[start:start + len(item.candidates)], how)
        start += len(item.candidates)
    return scores


def ensemble_scorer(reward_model: str | None) -> RewardScorer | None:
    """The reward model at `reward_model` scoring in raw (Bradley–Terry) units, when it is an
    ensemble; None without one (round 1, or a single member: no disagreement to read)."""
    if reward_model is None:
        return None
    scorer = RewardScorer.load(reward_model, normalize=False)
    return scorer if scorer.model.members >= 2 else None


def _summary(how: str, reason: str, items: list[Item]) -> dict[str, Any]:
    kept = [item for item in items if not item.held_back]
    scored = lambda group: [item.selection_score for item in group if item.selection_score is not None]  # noqa: E731
    summary: dict[str, Any] = {"selection": how, "selection_reason": reason, "pool_items": len(items),
                               "selected_items": len(kept)}
    for name, group in (("selected", kept), ("held_back", [item for item in items if item.held_back])):
        if scored(group):
            summary[f"selection_score_{name}_mean"] = statistics.fmean(scored(group))
    return summary


def select_round_items(db_url: str, campaign_name: str, *, how: str, keep: int, reward_model: str | None,
                       seed: int) -> dict[str, Any]:
    """Hold back all but `keep` of the campaign's regular items, chosen by `how` with the
    previous round's `reward_model` (None in round 1); what was chosen and why, for the loop state."""
    store = make_session_factory(make_engine(db_url))
    with transaction(store) as session:
        campaign = service.campaign_by_name(session, campaign_name)
        items = list(session.scalars(select(Item).where(Item.campaign_id == campaign.id, Item.is_gold.is_(False))
                                     .order_by(Item.id)))
        if any(item.held_back or item.selection_score is not None for item in items):
            return _summary(how, "recorded before this run was interrupted", items)
        scores: dict[int, float] = {}
        used, reason = "uniform", "uniform: a seeded random sample"
        scorer = ensemble_scorer(reward_model) if how != "uniform" else None
        if how != "uniform" and reward_model is None:
            reason = f"uniform: {how} needs a reward model, and round 1 has none"
        elif how != "uniform" and scorer is None:
            reason = f"uniform: {how} needs an ensemble (reward.ensemble >= 2) to measure disagreement"
        elif scorer is not None:
            used, reason = how, f"{how} over the {scorer.model.members} members of {reward_model}"
            scores = ensemble_item_scores(scorer, items, how)
        chosen = select_items({item.id: scores.get(item.id, 0.0) for item in items}, keep, used, seed)
        service.record_selection(session, campaign, scores, chosen)
        return _summary(used, reason, items)
