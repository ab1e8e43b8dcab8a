"""Scoring encoded judgements with a reward model and measuring agreement with them."""

from __future__ import annotations

import torch

from alignloop.evaluation.reward_metrics import (
    expected_calibration_error,
    kendall_tau_b,
    mean_ignoring_nan,
    pairwise_accuracy,
)
from alignloop.data import pad_batch
from alignloop.models.reward_ensemble import disagreement
from alignloop.models.reward_model import response_mask_of


@torch.no_grad()
def score_encoded_members(model, examples: list, pad_token_id: int, batch_size: int = 16) -> torch.Tensor:
    """(N, K) raw scores of encoded (prompt + response) sequences by each of the model's K
    members (1 for a single reward model), in order; longest-first batches keep padding small."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
    scores = torch.zeros(len(examples), getattr(model, "members", 1))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = pad_batch([examples[i] for i in chunk], pad_token_id)
        scores[chunk] = model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                              response_mask=response_mask_of(batch).to(device), members=True).float().cpu()
    model.train(was_training)
    return scores


def pair_metrics(scores: torch.Tensor, pairs: list) -> dict[str, float]:
    """`scores` (2P,): the chosen replies' then the rejected ones'."""
    chosen, rejected = scores[: len(pairs)].tolist(), scores[len(pairs) :].tolist()
    return {
        "pairs/count": float(len(pairs)),
        "pairs/accuracy": pairwise_accuracy(chosen, rejected),
        "pairs/mean_margin": sum(c - r for c, r in zip(chosen, rejected)) / len(pairs),
        "pairs/calibration_error": expected_calibration_error(chosen, rejected),
    }


def ranking_metrics(scores: torch.Tensor, rankings: list) -> dict[str, float]:
    """`scores`: every ranking's replies in order."""
    taus, top1, start = [], [], 0
    for ranking in rankings:
        own = scores[start : start + len(ranking.responses)].tolist()
        start += len(ranking.responses)
        taus.append(kendall_tau_b(own, ranking.ranks))
        top1.append(float(ranking.ranks[max(range(len(own)), key=own.__getitem__)] == min(ranking.ranks)))
    return {"rankings/count": float(len(rankings)), "rankings/kendall_tau": mean_ignoring_nan(taus),
            "rankings/top1_accuracy": sum(top1) / len(top1)}


def rating_metrics(scores: torch.Tensor, ratings: list) -> dict[str, float]:
    targets = [(r.score - r.scale_min) / (r.scale_max - r.scale_min) for r in ratings]
    return {"ratings/count": float(len(ratings)), "ratings/kendall_tau": kendall_tau_b(scores.tolist(), [-t for t in targets])}


def _judged_replies(encoded) -> list[tuple[str, list, list, object]]:
    """(kind, its judgements, the replies they hold in the order its metrics read them, metrics)."""
    kinds = []
    if encoded.pairs:
        kinds.append(("pairs", encoded.pairs, [p.chosen for p in encoded.pairs] + [p.rejected for p in encoded.pairs],
                      pair_metrics))
    if encoded.rankings:
        kinds.append(("rankings", encoded.rankings, [r for ranking in encoded.rankings for r in ranking.responses],
                      ranking_metrics))
    if encoded.ratings:
        kinds.append(("ratings", encoded.ratings, [r.example for r in encoded.ratings], rating_metrics))
    return kinds


def evaluate_reward_model(model, encoded, pad_token_id: int) -> dict[str, float]:
    """Agreement with every kind of held-out judgement present in `encoded`.

    An ensemble is measured by its members' mean normalised score (what `aggregate: mean`
    rewards) times their mean raw std, which keeps margins and calibration in the units the
    members were trained in, and each member on its own (`member_<k>/...`);
    `ensemble/disagreement` is the members' mean spread on those replies in normalised units,
    as the RL step sees it (see models/reward_ensemble.py).
    """
    results: dict[str, float] = {}
    spreads = []
    for _, judgements, replies, metrics in _judged_replies(encoded):
        members = score_encoded_members(model, replies, pad_token_id)  # (N, K) raw
        if members.shape[-1] == 1:
            results.update(metrics(members[:, 0], judgements))
            continue
        normalised = model.normalized(members)
        results.update(metrics(normalised.mean(-1) * model.score_std.mean(), judgements))
        for member in range(members.shape[-1]):
            results.update({f"member_{member}/{key}": value
                            for key, value in metrics(members[:, member], judgements).items()})
        spreads.append(disagreement(normalised))
    if spreads:
        results["ensemble/disagreement"] = float(torch.cat(spreads).mean())
    return results


def metric_text(name: str, value: float) -> str:
    """A figure as people read it: counts whole, the rest to four significant digits."""
    return f"{value:.0f}" if name.endswith("/count") else f"{value:.4g}"


def evaluation_headline(results: dict[str, float]) -> str:
    """`evaluate_reward_model`'s figures in one line: the model's (an ensemble's), then each
    member metric as the range over the members."""
    own = ", ".join(f"{key} {metric_text(key, value)}" for key, value in results.items() if not key.startswith("member_"))
    ranges: dict[str, list[float]] = {}
    for key, value in results.items():
        if key.startswith("member_"):
            ranges.setdefault(key.split("/", 1)[1], []).append(value)
    members = ", ".join(f"{name} {min(values):.3f}–{max(values):.3f}" for name, values in ranges.items()
                        if not name.endswith("/count"))
    return own + (f"; members: {members}" if members else "")
