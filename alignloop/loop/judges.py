"""AI judges as annotators of the loop's campaigns, and routing items between them and people.

A judge (`alignloop.evaluation.judge`: a local causal LM read from its next-token
probabilities, or an OpenAI-compatible chat-completions endpoint; both orders asked) gets an
evaluator account flagged `is_ai_judge` and answers through the same HTTP API as everyone, so
the same checks (gold accuracy, agreement, reliability) measure it.

Its answer to a task: each shown reply's mean debiased probability of beating each other shown
reply, then what an honest annotator without noise answers from those scores (the better of two;
a ranking by the scores). Those scores depend on which replies are shown together, so the judge
is a comparative scorer (`comparative = True`), scored per set of replies.

Routing (`feedback.route_to_people: N`): N of a round's items go to people only, the rest to
the judges only. People get the items the last round's reward-model ensemble is least sure of
(the items' selection scores, or their BALD score when no selection ran); round 1, or a reward
model without members, routes a seeded random N.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from alignloop.config import Section
from alignloop.evaluation.judge import EndpointJudge, LocalJudge
from alignloop.feedback import security, service
from alignloop.feedback.models import Campaign, Item, Role, User
from alignloop.feedback.selection import select_items
from alignloop.hardware import resolve_weight_dtype
from alignloop.loop.annotators import ScriptedAnnotator
from alignloop.loop.select import ensemble_item_scores, ensemble_scorer
from alignloop.models import load_model_and_tokenizer

__all__ = ["JudgeScorer", "JudgeSettings", "build_judge", "create_judge_annotators", "route_items"]


class JudgeSettings(Section):
    """One AI judge."""

    type: Literal["local", "endpoint"] = Field(
        "local", description="local: a causal LM alignloop loads; endpoint: an OpenAI-compatible chat-completions server")
    model: str = Field(description="local: a model name or folder (e.g. smollm2-135m-instruct); endpoint: the served model")
    base_url: str | None = Field(None, description="endpoint: the API's base URL, e.g. http://localhost:8000/v1")
    api_key_env: str | None = Field(None, description="endpoint: the environment variable that holds its API key")
    guidelines: str | None = Field(None, description="what the judge is told (default: the campaign's guidelines)")

    @model_validator(mode="after")
    def _endpoint_has_a_url(self) -> JudgeSettings:
        if self.type == "endpoint" and not self.base_url:
            raise ValueError("a judge of type endpoint needs base_url")
        return self


class JudgeScorer:
    """A judge behind the scripted annotators' scorer interface: the replies of one task in,
    each one's mean debiased probability of beating each other one out."""

    comparative = True  # scores depend on which replies are scored together

    def __init__(self, judge: LocalJudge | EndpointJudge) -> None:
        self.judge = judge

    def __call__(self, prompts: Sequence[Any], texts: Sequence[str]) -> list[float]:
        if len(texts) < 2:
            raise ValueError("a judge compares two or more replies to one prompt")
        pairs = [(i, j) for i in range(len(texts)) for j in range(i + 1, len(texts))]
        verdicts = self.judge.judge([prompts[0]] * len(pairs), [texts[i] for i, _ in pairs],
                                    [texts[j] for _, j in pairs]).debiased
        wins = [0.0] * len(texts)
        for (i, j), p in zip(pairs, verdicts):
            wins[i] += p
            wins[j] += 1 - p
        return [w / (len(texts) - 1) for w in wins]


def build_judge(settings: JudgeSettings, guidelines: str) -> LocalJudge | EndpointJudge:
    """The judge `settings` describe, told its own guidelines or else the campaign's."""
    said = settings.guidelines or guidelines
    if settings.type == "endpoint":
        key = os.environ.get(settings.api_key_env) if settings.api_key_env else None
        return EndpointJudge(settings.base_url, settings.model, guidelines=said, api_key=key)
    dtype, _ = resolve_weight_dtype("auto")  # a judge only reads logits: bf16 weights where this machine runs them fast
    model, tokenizer = load_model_and_tokenizer(settings.model, dtype=dtype)
    return LocalJudge(model.eval(), tokenizer, guidelines=said)


def _judge_user(session: Session, name: str) -> User:
    """The judge account `name` (no password: API tokens only), created when missing."""
    user = service.user_by_name(session, name)
    if user is None:
        user = User(username=name, role=Role.evaluator, password_hash="!", active=True, is_ai_judge=True)
        session.add(user)
        session.flush()
    elif not user.is_ai_judge:
        raise service.Conflict(f"user {name!r} exists and is not an AI judge's account")
    return user


def create_judge_annotators(session: Session, count: int, prefix: str, seed: int) -> list[ScriptedAnnotator]:
    """`count` judge accounts `<prefix>-1..N`, each answering as an honest annotator without noise
    from its judge's scores. The caller commits."""
    judges = []
    for index in range(count):
        user = _judge_user(session, f"{prefix}-{index + 1}")
        judges.append(ScriptedAnnotator(
            name=user.username, user_id=user.id, token=security.issue_api_token(session, user, "AI judge"),
            kind="judge", noise=0.0, position_bias=0.0, tie_margin=0.0, rating_range=(0.0, 1.0), seed=seed,
            index=index,
        ))
    return judges


def route_items(session: Session, campaign: Campaign, to_people: int, reward_model: str | None,
                seed: int) -> dict[str, Any]:
    """Route `to_people` of the campaign's open regular items to people, the rest to judges
    (module docstring); the counts and how people's items were chosen."""
    items = list(session.scalars(select(Item).where(Item.campaign_id == campaign.id, Item.is_gold.is_(False),
                                                    Item.held_back.is_(False)).order_by(Item.id)))
    if any(item.audience != "any" for item in items):
        return {"routing": "recorded before this run was interrupted",
                "to_people": sum(item.audience == "people" for item in items),
                "to_judges": sum(item.audience == "judges" for item in items)}
    scores = {item.id: item.selection_score for item in items if item.selection_score is not None}
    how = "the selection scores"
    scorer = ensemble_scorer(reward_model) if len(scores) < len(items) else None
    if scorer is not None:
        scores, how = ensemble_item_scores(scorer, items, "uncertainty"), "BALD over the reward model's members"
    if len(scores) < len(items):
        scores, how = {}, "a seeded random sample (no reward-model ensemble yet)"
    chosen = select_items({item.id: scores.get(item.id, 0.0) for item in items}, to_people,
                          "uncertainty" if scores else "uniform", seed)
    counts = service.record_routing(session, campaign, chosen)
    return {"routing": f"people get the items the reward model is least sure of, by {how}" if scores else how,
            "to_people": counts["people"], "to_judges": counts["judges"]}
