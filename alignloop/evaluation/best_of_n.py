"""Best-of-n: what a reward model's choice among n samples is worth, estimated exactly from N ≥ n.

Best-of-n sampling draws n replies from a policy and keeps the one a reward model scores
highest: the simplest way to optimise against a reward model, with a known KL to the policy,
log n − (n − 1) / n nats (Stiennon et al. 2020; Gao et al. 2023 chart over-optimisation
with it). With N samples per prompt, the expected value of anything about the kept
reply (its gold score, its proxy score, the ensemble's disagreement on it) is computed for
every n ≤ N without drawing subsets: the reply ranked j-th (from 0) by the reward model is the
best of a uniformly drawn n-subset with probability C(N − 1 − j, n − 1) / C(N, n), the chance
that the subset holds it and n − 1 of the N − 1 − j replies ranked below it (an unbiased
estimator: no subset drawn, no sampling noise added). Ties in the reward are broken by sample order.
"""

from __future__ import annotations

import math

import torch

__all__ = ["best_of_n_kl", "best_of_n_weights", "expected_best_of_n"]


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n ‖ policy) in nats: log n − (n − 1) / n."""
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def best_of_n_weights(samples: int, n: int) -> torch.Tensor:
    """(samples,) float64: the probability that the reply ranked j-th of `samples` (0 = the
    reward model's favourite) is the best of a uniform n-subset. Sums to 1."""
    if not 1 <= n <= samples:
        raise ValueError(f"best-of-n needs 1 <= n <= samples, got n={n} with {samples} samples")
    total = math.comb(samples, n)
    return torch.tensor([math.comb(samples - 1 - j, n - 1) / total for j in range(samples)], dtype=torch.float64)


def expected_best_of_n(reward: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """(P, N) reward of N samples for each of P prompts, (P, N) values of the same samples ->
    (P,) the expected value of the sample best-of-n keeps, per prompt."""
    if reward.shape != values.shape or reward.dim() != 2:
        raise ValueError(f"reward and values must both be (prompts, samples), got {tuple(reward.shape)} and "
                         f"{tuple(values.shape)}")
    order = torch.sort(reward.double(), dim=-1, descending=True, stable=True).indices  # (P, N)
    ranked = values.double().gather(-1, order)
    return ranked @ best_of_n_weights(reward.shape[-1], n)
