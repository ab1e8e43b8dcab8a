"""Scoring encoded judgements with a reward model and measuring agreement with them."""

from __future__ import annotations

import torch

from alignloop.evaluation.reward_metrics import (
    expected_calibration_error,
    kendall_tau_b,
    mean_ignoring_nan,
    pairwise_accuracy,
)


@torch.no_grad()
def score_encoded(model, examples: list, pad_token_id: int, batch_size: int = 16) -> list[float]:
    """Raw scores of encoded (prompt + response) sequences, in order; longest-first batches
    keep padding small."""
    from alignloop.data import pad_batch
    from alignloop.models.reward_model import response_mask_of

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
    scores = [0.0] * len(examples)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = pad_batch([examples[i] for i in chunk], pad_token_id)
        values = model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                       response_mask=response_mask_of(batch).to(device))
        for index, value in zip(chunk, values.tolist()):
            scores[index] = value
    model.train(was_training)
    return scores


def pair_metrics(model, pairs: list, pad_token_id: int) -> dict[str, float]:
    scores = score_encoded(model, [p.chosen for p in pairs] + [p.rejected for p in pairs], pad_token_id)
    chosen, rejected = scores[: len(pairs)], scores[len(pairs) :]
    return {
        "pairs/count": float(len(pairs)),
        "pairs/accuracy": pairwise_accuracy(chosen, rejected),
        "pairs/mean_margin": sum(c - r for c, r in zip(chosen, rejected)) / len(pairs),
        "pairs/calibration_error": expected_calibration_error(chosen, rejected),
    }


def ranking_metrics(model, rankings: list, pad_token_id: int) -> dict[str, float]:
    flat = [response for ranking in rankings for response in ranking.responses]
    scores = score_encoded(model, flat, pad_token_id)
    taus, top1, start = [], [], 0
    for ranking in rankings:
        own = scores[start : start + len(ranking.responses)]
        start += len(ranking.responses)
        taus.append(kendall_tau_b(own, ranking.ranks))
        top1.append(float(ranking.ranks[max(range(len(own)), key=own.__getitem__)] == min(ranking.ranks)))
    return {"rankings/count": float(len(rankings)), "rankings/kendall_tau": mean_ignoring_nan(taus),
            "rankings/top1_accuracy": sum(top1) / len(top1)}


def rating_metrics(model, ratings: list, pad_token_id: int) -> dict[str, float]:
    scores = score_encoded(model, [r.example for r in ratings], pad_token_id)
    targets = [(r.score - r.scale_min) / (r.scale_max - r.scale_min) for r in ratings]
    return {"ratings/count": float(len(ratings)), "ratings/kendall_tau": kendall_tau_b(scores, [-t for t in targets])}


def evaluate_reward_model(model, encoded, pad_token_id: int) -> dict[str, float]:
    """Agreement with every kind of held-out judgement present in `encoded`."""
    results: dict[str, float] = {}
    if encoded.pairs:
        results.update(pair_metrics(model, encoded.pairs, pad_token_id))
    if encoded.rankings:
        results.update(ranking_metrics(model, encoded.rankings, pad_token_id))
    if encoded.ratings:
        results.update(rating_metrics(model, encoded.ratings, pad_token_id))
    return results
