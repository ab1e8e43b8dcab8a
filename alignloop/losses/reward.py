"""Reward-model losses: learning one scalar score per response from what evaluators said.

What the evaluators gave decides the loss:

- a comparison of two responses: Bradley-Terry, P(chosen beats rejected) = sigma(s_c - s_r);
- a ranking of K responses: Plackett-Luce, which reads the ranking as successive choices, best
  first, each among the responses not chosen yet. One likelihood per ranking uses all of it at
  once, and for K = 2 it is exactly Bradley-Terry;
- a rating on a declared scale (1-5 stars, 0-10): either regression onto the rating mapped to
  [0, 1], or an ordinal (cumulative-link) model that treats the rating as an ordered class and
  learns the cut points between classes, without assuming the steps of the scale are equal.

For comparisons and rankings only differences of scores matter: adding a constant to every
response of a prompt changes nothing. An item is an example (a comparison, a ranking, a rating):
every loss returns `(loss_sum, metrics)`, sums over the examples (the engine divides by the example
count of the optimizer step; see `alignloop/losses/__init__.py`). Each is written per example, as
below, and summed by `reduce.sums_over_examples`; `loss.per_example` gives the losses (B,) and
metrics (B,) of each example, which the reward ensemble weights by its bootstrap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignloop.losses.reduce import Metrics, sums_over_examples


def _require_shapes(loss_name: str, dims: int, **tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(shapes.values()))
    if len(first) != dims or any(shape != first for shape in shapes.values()):
        expected = "(B,)" if dims == 1 else "(B, K)"
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"{loss_name}: expected {expected} tensors of one shape, got {listed}")


def _per_example(loss_name: str, name: str, value, like: torch.Tensor) -> torch.Tensor:
    """A float or a () / (B,) tensor as a tensor that broadcasts against `like` (B,)."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if value.dim() != 0 and value.shape != like.shape:
        raise ValueError(
            f"{loss_name}: {name} must be a number or a {tuple(like.shape)} tensor, got {tuple(value.shape)}"
        )
    return value


@sums_over_examples
def bradley_terry(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """Bradley & Terry 1952: -log sigma(r_c - r_r), the negative log-likelihood of the comparison.

    With `margin` m (a number or (B,)), Llama 2's reward loss (Touvron et al. 2023, eq. 2):
    -log sigma(r_c - r_r - m), where m grows with how strongly the evaluator preferred the
    chosen response, so clear preferences must be won by more. `rewards/margins` is r_c - r_r.
    """
    _require_shapes("bradley_terry", 1, chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards)
    margins = chosen_rewards - rejected_rewards  # (B,)
    if margin is not None:
        margins_to_win = margins - _per_example("bradley_terry", "margin", margin, margins)  # (B,)
    else:
        margins_to_win = margins
    losses = -F.logsigmoid(margins_to_win)  # (B,)
    margins = margins.detach()
    metrics = {
        "rewards/chosen": chosen_rewards.detach(),
        "rewards/rejected": rejected_rewards.detach(),
        "rewards/margins": margins,
        "rewards/accuracies": (margins > 0).to(margins.dtype),
    }
    return losses, metrics


def _ranking_metrics(scores: torch.Tensor, ranks: torch.Tensor, valid: torch.Tensor) -> Metrics:
    scores, big = scores.detach(), torch.iinfo(torch.int64).max
    ranks = ranks.long()  # (B, K)
    best_rank = torch.where(valid, ranks, big).min(-1).values  # (B,)
    top_scored = torch.where(valid, scores, float("-inf")).argmax(-1, keepdim=True)  # (B, 1)
    top1 = ranks.gather(-1, top_scored).squeeze(-1) == best_rank  # (B,)
    both_valid = valid.unsqueeze(-1) & valid.unsqueeze(-2)  # (B, K, K)
    ordered = both_valid & (ranks.unsqueeze(-1) < ranks.unsqueeze(-2))  # [b, k, j]: k ranked above j
    agrees = ordered & (scores.unsqueeze(-1) > scores.unsqueeze(-2))  # (B, K, K)
    # A row with no strictly ordered pair (all tied) scores 0 rather than 0 / 0.
    pairwise = agrees.sum((-1, -2)) / ordered.sum((-1, -2)).clamp(min=1)  # (B,)
    return {
        "ranking/top1_accuracy": top1.to(scores.dtype),
        "ranking/pairwise_accuracy": pairwise.to(scores.dtype),
    }


@sums_over_examples
def plackett_luce(
    scores: torch.Tensor,
    ranks: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """Plackett-Luce negative log-likelihood of a ranking (Plackett 1975; Luce 1959).

    `scores` (B, K) are reward-model scores; `ranks` (B, K) integers, 1 = best, equal ranks tie;
    `mask` (B, K) is True on the slots that hold a real response (rows with fewer than K are
    padded; padded slots may hold anything). The ranking is a sequence of choices, each of the
    best remaining item with probability softmax over the items still in play, so

        loss = - sum over valid k of [ s_k - logsumexp_{j valid, rank_j >= rank_k} s_j ].

    The last item's term is 0 (its set holds only itself). For K = 2 without ties this is
    exactly Bradley-Terry.

    Ties, the Breslow way (Breslow 1974): every member of a tie group is "chosen" from the same
    set, all items ranked the same or worse, as if each were the only one picked at that step.
    It is the simplest rule that treats the members alike and vectorises; Efron's is closer to
    the exact likelihood when large groups tie. A consequence: a tie pulls the tied scores
    together, and a row where all m items tie has loss m log m at best (equal scores), a
    constant that does not affect gradients.
    """
    optional = {} if mask is None else {"mask": mask}
    _require_shapes("plackett_luce", 2, scores=scores, ranks=ranks, **optional)
    valid = torch.ones_like(scores, dtype=torch.bool) if mask is None else mask.bool()  # (B, K)
    # Padding may hold NaN; select it away so that no arithmetic (nor its gradient) touches it.
    scores = torch.where(valid, scores, torch.zeros_like(scores))  # (B, K)
    K = scores.shape[-1]
    # still_in_play[b, k, j]: item j is among those item k is chosen from. A padded k is given
    # itself so that no logsumexp runs over an empty set (-inf, and NaN gradients); its term is
    # dropped below.
    still_in_play = valid.unsqueeze(-2) & (ranks.unsqueeze(-2) >= ranks.unsqueeze(-1))  # (B, K, K)
    still_in_play |= torch.eye(K, dtype=torch.bool, device=scores.device)
    candidates = torch.where(still_in_play, scores.unsqueeze(-2), float("-inf"))  # (B, K, K)
    log_choice_probs = scores - torch.logsumexp(candidates, dim=-1)  # (B, K)
    log_choice_probs = torch.where(valid, log_choice_probs, torch.zeros_like(log_choice_probs))
    losses = -log_choice_probs.sum(-1)  # (B,)
    return losses, _ranking_metrics(scores, ranks, valid)


@sums_over_examples
def rating_regression(
    predicted: torch.Tensor,
    score: torch.Tensor,
    scale_min: torch.Tensor | float,
    scale_max: torch.Tensor | float,
) -> tuple[torch.Tensor, Metrics]:
    """Squared error against the rating mapped to [0, 1] on its declared scale:
    (predicted - (score - scale_min) / (scale_max - scale_min))^2.

    Normalising by the declared scale lets ratings from different scales (1-5 stars, 0-10)
    train one reward model. `predicted` is compared as it is; a head meant to stay in [0, 1]
    applies its own sigmoid. Scales are numbers or (B,) tensors (one scale per example).
    Metrics: `rating/target` (the normalised rating), `rating/abs_error`.
    """
    _require_shapes("rating_regression", 1, predicted=predicted, score=score)
    low = _per_example("rating_regression", "scale_min", scale_min, predicted)  # () or (B,)
    high = _per_example("rating_regression", "scale_max", scale_max, predicted)  # () or (B,)
    if bool((high <= low).any()):
        raise ValueError("rating_regression: every scale_max must be greater than its scale_min")
    target = (score.to(predicted.dtype) - low) / (high - low)  # (B,)
    errors = predicted - target  # (B,)
    metrics = {"rating/target": target.detach(), "rating/abs_error": errors.detach().abs()}
    return errors**2, metrics


def ordinal_log_probs(predicted: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """(B,) scores and (C-1,) increasing cut points -> (B, C) log P(y = c) of the cumulative-link
    (proportional-odds) model, McCullagh 1980: P(y <= c) = sigma(theta_c - s).

    P(y = c) = sigma(b) - sigma(a) with b = theta_c - s, a = theta_{c-1} - s. Subtracting two
    probabilities near 1 (or taking the log of a difference near 0) loses everything in float32
    for extreme s, so it is factored exactly as

        sigma(b) - sigma(a) = sigma(b) * sigma(-a) * (1 - exp(-(theta_c - theta_{c-1})))

        log P(y = c) = logsigmoid(b) + logsigmoid(-a) + log(-expm1(-(theta_c - theta_{c-1})))

    every term of which is finite and accurate: the last does not even depend on s. For the first
    class (theta_{-1} = -inf) only logsigmoid(b) remains; for the last (theta_{C-1} = +inf) only
    logsigmoid(-a).
    """
    if predicted.dim() != 1 or thresholds.dim() != 1 or thresholds.numel() < 1:
        raise ValueError(
            f"ordinal_log_probs: expected predicted (B,) and thresholds (C-1,) with C >= 2, "
            f"got {tuple(predicted.shape)} and {tuple(thresholds.shape)}"
        )
    gaps = thresholds[1:] - thresholds[:-1]  # (C-2,)
    if bool((gaps <= 0).any()):
        raise ValueError("ordinal_log_probs: thresholds must be strictly increasing")
    below = thresholds.unsqueeze(0) - predicted.unsqueeze(-1)  # (B, C-1): theta_c - s
    no_bound = torch.zeros_like(predicted).unsqueeze(-1)  # (B, 1): log 1, an infinite threshold
    log_upper = torch.cat([F.logsigmoid(below), no_bound], dim=-1)  # (B, C)
    log_lower = torch.cat([no_bound, F.logsigmoid(-below)], dim=-1)  # (B, C)
    no_gap = thresholds.new_zeros(1)  # (1,)
    log_gap = torch.cat([no_gap, torch.log(-torch.expm1(-gaps)), no_gap])  # (C,)
    return log_upper + log_lower + log_gap  # (B, C)


@sums_over_examples
def rating_ordinal(
    predicted: torch.Tensor,
    score_index: torch.Tensor,
    thresholds: torch.Tensor,
) -> tuple[torch.Tensor, Metrics]:
    """Ordinal logistic regression (cumulative link, McCullagh 1980): -log P(y = score_index).

    `predicted` (B,) is the reward model's score; `score_index` (B,) the rating as a class in
    [0, C-1]; `thresholds` (C-1,) the strictly increasing cut points, which the caller owns as
    a trainable parameter (e.g. a cumulative sum of softplus steps, to keep them ordered). The
    score then needs no scale of its own: the thresholds learn where one rating ends and the
    next begins. See `ordinal_log_probs` for the numerically stable form.
    Metrics: `rating/accuracy` (most likely class is the rating), `rating/expected_class`.
    """
    _require_shapes("rating_ordinal", 1, predicted=predicted, score_index=score_index)
    num_classes = thresholds.numel() + 1
    if bool(((score_index < 0) | (score_index >= num_classes)).any()):
        raise ValueError(
            f"rating_ordinal: score_index must lie in [0, {num_classes - 1}] for {num_classes} classes"
        )
    log_probs = ordinal_log_probs(predicted, thresholds)  # (B, C)
    losses = -log_probs.gather(-1, score_index.long().unsqueeze(-1)).squeeze(-1)  # (B,)
    probs = log_probs.detach().exp()  # (B, C)
    classes = torch.arange(num_classes, dtype=probs.dtype, device=probs.device)  # (C,)
    metrics = {
        "rating/accuracy": (probs.argmax(-1) == score_index).to(probs.dtype),
        "rating/expected_class": probs @ classes,
    }
    return losses, metrics


# The rating losses a reward-model config names (`reward.rating_loss`).
RATING_LOSSES = {
    "regression": rating_regression,
    "ordinal": rating_ordinal,
}

# Reward-model losses by the kind of feedback they learn from.
REWARD_LOSSES = {
    "bradley_terry": bradley_terry,
    "plackett_luce": plackett_luce,
    **{f"rating_{name}": loss for name, loss in RATING_LOSSES.items()},
}
