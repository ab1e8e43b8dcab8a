"""Token-level policy-gradient losses: PPO's clipped surrogate and value loss, the entropy
bonus, the GRPO / RLOO policy gradient and the KL estimators they share.

Inputs are per-token tensors (B, T) over the response tokens: `logps` = log pi(a_t | s_t) under
the policy being trained, `old_logps` under the policy that generated the batch (the behaviour
policy, fixed during the PPO epochs), `ref_logps` under the frozen reference, and `mask` (B, T),
true (or 1) on real response tokens. Padding may hold anything, NaN and -inf included: it is
selected away (`torch.where`) before any arithmetic. Advantages, returns, old log-probs and old
values are targets: they are detached here, whatever the caller passes.

What the losses return: `(loss_sum, metrics)`, the package's convention (see
`alignloop/losses/__init__.py`); the items they sum over are counted by `policy_loss_items`.

The engine sums the losses of every micro-batch of an optimizer step and divides by the item
count of the whole step (see `engine/method.py`), so that the gradient does not depend on how a
batch is split into micro-batches or processes. A loss therefore returns the *sum* over its
items, never a mean; `aggregation` says what an item is:

- "token-mean": an item is a token. `loss_sum` sums the per-token losses of every masked token;
  divided by the step's token count, every token weighs the same and a long response weighs
  more (DAPO, Yu et al. 2025, sec. 3.3; Dr. GRPO, Liu et al. 2025). The default.
- "sequence-mean": an item is a sequence. `loss_sum` sums, over the sequences, each sequence's
  mean over its own tokens; a row without any masked token contributes nothing and is not an
  item. Every response weighs the same, so a token of a short response weighs more: the 1/|o_i|
  of GRPO (Shao et al. 2024, eq. 3).

The trainer needs the step's item count before any forward pass, so the count is not returned
with the loss: `policy_loss_items(mask, aggregation)` gives it from the mask alone, and a
method's `count_items` calls it with the aggregation its losses use.

`metrics` are () detached *sums over the same items* as `loss_sum`, named `group/name`: divide by
the item count for this micro-batch's mean, or hand them to `LossOutput.metric_sums`, which the
engine divides by the step's item count. Under "token-mean", `policy/clipfrac / items` is the
fraction of clipped tokens; under "sequence-mean" it is the mean over sequences of each
sequence's clipped fraction.

Two tables end the module: `POLICY_LOSSES` (the policy objectives a config names) and
`KL_ESTIMATORS` (the per-token KL estimators `kl_penalty` takes by name).
"""

from __future__ import annotations

import torch

from alignloop.losses.reduce import Metrics, masked_mean, masked_sum
from alignloop.losses.shapes import require_shapes
from alignloop.ops import logit_slabs

AGGREGATIONS = ("token-mean", "sequence-mean")


def _require_aggregation(fn_name: str, aggregation: str) -> None:
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"{fn_name}: aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")


def _require_clip_range(fn_name: str, clip_range: float) -> None:
    # At 1 or more, 1 - eps <= 0 and the lower clip can never bind: almost surely a typo.
    if not 0 < clip_range < 1:
        raise ValueError(f"{fn_name}: clip_range must be in (0, 1), got {clip_range}")


def _select(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`values` on the mask, 0 on padding, so that padding (NaN, -inf) never reaches arithmetic."""
    return torch.where(mask, values, torch.zeros_like(values))


def policy_loss_items(mask: torch.Tensor, aggregation: str) -> int:
    """How many items the policy losses sum over for this (B, T) mask: the masked tokens under
    "token-mean", the sequences with at least one masked token under "sequence-mean" (see the
    module docstring). The one definition of an item; a method's `count_items` calls it."""
    _require_aggregation("policy_loss_items", aggregation)
    mask = mask.bool()
    return int(mask.sum() if aggregation == "token-mean" else mask.any(-1).sum())


def _aggregate(per_token: torch.Tensor, mask: torch.Tensor, aggregation: str) -> torch.Tensor:
    """(B, T) per-token values -> () sum over the items `policy_loss_items` counts."""
    if aggregation == "token-mean":
        return masked_sum(per_token, mask)
    return masked_mean(per_token, mask, dim=-1).sum()  # each sequence's mean; 0 for a row without tokens


def _metric(per_token: torch.Tensor, mask: torch.Tensor, aggregation: str) -> torch.Tensor:
    return _aggregate(per_token.detach(), mask, aggregation)


def _kl_k1(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    return logps - ref_logps  # (B, T): -log r


def _kl_k2(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    return 0.5 * (logps - ref_logps) ** 2  # (B, T): (log r)^2 / 2


def _kl_k3(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    log_r = ref_logps - logps  # (B, T)
    return log_r.exp() - 1 - log_r  # (B, T): (r - 1) - log r


def kl_penalty(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi; (B, T) -> (B, T).

    Schulman 2020, "Approximating KL Divergence" (joschu.net/blog/kl-approx.html), with
    r = pi_ref(a) / pi(a) = exp(ref_logps - logps):

    - "k1": -log r = logps - ref_logps. Unbiased, high variance, negative on some tokens.
    - "k2": (log r)^2 / 2. Biased (little when the policies are close), low variance, >= 0.
    - "k3": (r - 1) - log r. Unbiased and >= 0 (log x <= x - 1), low variance: GRPO's KL term
      (Shao et al. 2024, eq. 4).

    Not masked: padding positions hold whatever their inputs give; reduce with a mask.
    """
    if logps.shape != ref_logps.shape:
        raise ValueError(
            f"kl_penalty: logps {tuple(logps.shape)} and ref_logps {tuple(ref_logps.shape)} differ in shape"
        )
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_penalty: estimator must be one of {sorted(KL_ESTIMATORS)}, got {estimator!r}")
    return KL_ESTIMATORS[estimator](logps, ref_logps)


def ppo_policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_range: float,
    aggregation: str = "token-mean",
) -> tuple[torch.Tensor, Metrics]:
    """PPO's clipped surrogate, Schulman et al. 2017, "Proximal Policy Optimization
    Algorithms", eq. 7, per token: -min(rho A, clip(rho, 1 - eps, 1 + eps) A), rho = exp(logps - old_logps).

    The minimum is a pessimistic bound: once rho has moved past 1 + eps (A > 0) or below 1 - eps
    (A < 0), the clipped term is the smaller one and the token gives no gradient; a move that
    makes the objective *worse* is never clipped. Returns (loss_sum, metrics), see the
    module docstring for `aggregation`. Metrics (sums over items):
    `policy/clipfrac` (1 where the clipped term was the one taken, so the gradient is 0),
    `policy/approx_kl` (k3 estimate of KL(pi_old || pi): rho - 1 - log rho, from tokens sampled
    from pi_old), `policy/ratio_mean` (rho).
    """
    require_shapes("ppo_policy_loss", 2, logps=logps, old_logps=old_logps, advantages=advantages, mask=mask)
    _require_clip_range("ppo_policy_loss", clip_range)
    _require_aggregation("ppo_policy_loss", aggregation)
    mask = mask.bool()
    log_ratio = _select(logps - old_logps.detach(), mask)  # (B, T), 0 on padding
    advantages = _select(advantages.detach(), mask)  # (B, T)
    ratio = log_ratio.exp()  # (B, T)
    unclipped = -advantages * ratio  # (B, T)
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)  # (B, T)
    per_token = torch.maximum(unclipped, clipped)  # (B, T): -min(rho A, clip(rho) A)
    loss_sum = _aggregate(per_token, mask, aggregation)
    metrics = {
        "policy/clipfrac": _metric((clipped > unclipped).to(per_token.dtype), mask, aggregation),
        "policy/approx_kl": _metric(ratio - 1 - log_ratio, mask, aggregation),
        "policy/ratio_mean": _metric(ratio, mask, aggregation),
    }
    return loss_sum, metrics


def policy_gradient_loss(
    logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    old_logps: torch.Tensor | None = None,
    clip_range: float | None = None,
    aggregation: str = "token-mean",
) -> tuple[torch.Tensor, Metrics]:
    """REINFORCE (Williams 1992) per token: -A * logps, for GRPO / RLOO with one update per batch.

    With a single gradient step per batch of samples the policy is still the one that sampled
    them, rho = 1 and the clip cannot bind: the gradient of -A log pi equals that of PPO's
    surrogate, without computing old log-probs. Only the gradient means something; the value of
    -A log pi is not a quantity to watch. `clip_range` alone is accepted and has no effect
    (rho = 1 lies inside any clip range), so one config serves both cases.

    With `old_logps` (several updates per batch, GRPO's mu > 1, Shao et al. 2024, eq. 3) this is
    the clipped-ratio objective, i.e. exactly `ppo_policy_loss`, and `clip_range` is required.
    Returns (loss_sum, metrics), see the module docstring; metric `policy/logps`.
    """
    if old_logps is not None:
        if clip_range is None:
            raise ValueError("policy_gradient_loss: the clipped form (old_logps given) needs clip_range")
        return ppo_policy_loss(
            logps, old_logps, advantages, mask, clip_range=clip_range, aggregation=aggregation
        )
    require_shapes("policy_gradient_loss", 2, logps=logps, advantages=advantages, mask=mask)
    _require_aggregation("policy_gradient_loss", aggregation)
    mask = mask.bool()
    logps = _select(logps, mask)  # (B, T)
    per_token = -_select(advantages.detach(), mask) * logps  # (B, T)
    loss_sum = _aggregate(per_token, mask, aggregation)
    return loss_sum, {"policy/logps": _metric(logps, mask, aggregation)}


def grpo_kl_term(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    mask: torch.Tensor,
    coef: float,
    *,
    aggregation: str = "token-mean",
) -> tuple[torch.Tensor, Metrics]:
    """GRPO's KL penalty, Shao et al. 2024, eq. 4, per token: coef * [r - log r - 1] with
    r = pi_ref / pi, the k3 estimator (see `kl_penalty`).

    GRPO puts the KL in the loss, beside the policy objective, rather than into the reward as
    PPO-RLHF does (`advantages.per_token_rewards`). Add its `loss_sum` to the policy loss's (same
    `aggregation`, hence the same items). Metric `kl/mean`: the k3 estimate without `coef`.
    """
    require_shapes("grpo_kl_term", 2, logps=logps, ref_logps=ref_logps, mask=mask)
    if coef < 0:
        raise ValueError(f"grpo_kl_term: coef must be >= 0, got {coef}")
    _require_aggregation("grpo_kl_term", aggregation)
    mask = mask.bool()
    kl = _kl_k3(_select(logps, mask), _select(ref_logps.detach(), mask))  # (B, T), 0 on padding
    loss_sum = _aggregate(coef * kl, mask, aggregation)
    return loss_sum, {"kl/mean": _metric(kl, mask, aggregation)}


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_range: float | None,
    aggregation: str = "token-mean",
) -> tuple[torch.Tensor, Metrics]:
    """Clipped value loss per token: 1/2 max((V - R)^2, (clip(V, V_old - eps, V_old + eps) - R)^2).

    Not in the PPO paper: it is the form of OpenAI's baselines (ppo2) that PPO-RLHF
    implementations kept (Huang et al. 2022, "The 37 Implementation Details of Proximal Policy
    Optimization", detail 9). Like the policy's clip, the max is pessimistic: a value that has
    moved more than eps from V_old gets no gradient when the move does not lower its error.
    Andrychowicz et al. 2021 found the clip no help; `clip_range=None` gives 1/2 (V - R)^2.
    Returns (loss_sum, metrics), see the module docstring. Metrics (sums over items):
    `value/clipfrac` (1 where the clipped error was the larger), `value/mean` (V),
    `value/error` ((V - R)^2).
    """
    require_shapes("value_loss", 2, values=values, old_values=old_values, returns=returns, mask=mask)
    if clip_range is not None and not clip_range > 0:
        raise ValueError(f"value_loss: clip_range must be > 0 (or None), got {clip_range}")
    _require_aggregation("value_loss", aggregation)
    mask = mask.bool()
    values = _select(values, mask)  # (B, T)
    old_values = _select(old_values.detach(), mask)  # (B, T)
    returns = _select(returns.detach(), mask)  # (B, T)
    error = (values - returns) ** 2  # (B, T)
    if clip_range is None:
        clipped_error = error
    else:
        clipped_values = old_values + (values - old_values).clamp(-clip_range, clip_range)  # (B, T)
        clipped_error = (clipped_values - returns) ** 2  # (B, T)
    per_token = 0.5 * torch.maximum(error, clipped_error)  # (B, T)
    loss_sum = _aggregate(per_token, mask, aggregation)
    metrics = {
        "value/clipfrac": _metric((clipped_error > error).to(per_token.dtype), mask, aggregation),
        "value/mean": _metric(values, mask, aggregation),
        "value/error": _metric(error, mask, aggregation),
    }
    return loss_sum, metrics


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last axis: (B, T, V) -> (B, T), any leading shape
    (e.g. the (N, V) response logits of `models.forward.response_logits` -> (N,)).

    H = logsumexp(x) - sum_v p_v x_v with x the logits less their row maximum, so logits of 1e4
    are as fine as logits of 1. Half-precision logits are upcast to float32 (a sum over tens of
    thousands of classes), a slab of rows at a time (`ops.LOGIT_SLAB_ELEMENTS`: the passes stay
    in the CPU cache). A logit of -inf (a token ruled out) contributes 0 log 0 = 0, without NaN
    in the value or the gradient.
    """
    if logits.dim() < 1:
        raise ValueError("entropy_from_logits: logits need a vocabulary axis, got a scalar")
    rows = logits.reshape(-1, logits.shape[-1])
    return torch.cat([_entropy_of_rows(slab) for slab in logit_slabs(rows)]).view(logits.shape[:-1])


def _entropy_of_rows(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    shifted = logits - logits.amax(-1, keepdim=True).detach()  # entropy does not change with a shift
    probs = shifted.softmax(-1)
    # where p = 0 the logit may be -inf, and p * x would be 0 * -inf = NaN: count it as the 0 it is.
    return shifted.logsumexp(-1) - torch.linalg.vecdot(probs, shifted.nan_to_num(neginf=0.0))


# The policy objectives a config names. Signatures differ in what they require: call them by
# keyword (logps=, advantages=, mask=, aggregation=, and old_logps=, clip_range= for "ppo_clip").
POLICY_LOSSES = {
    "ppo_clip": ppo_policy_loss,
    "policy_gradient": policy_gradient_loss,
}

# Per-token estimators of KL(pi || pi_ref), by the names of Schulman 2020; see `kl_penalty`.
KL_ESTIMATORS = {
    "k1": _kl_k1,
    "k2": _kl_k2,
    "k3": _kl_k3,
}
