"""Advantage estimators: how much better than expected each response (or token) turned out.

Two families, by what stands in for "expected":

- a learned critic (PPO-RLHF): the reward is per token, -kl_coef * KL at every token plus the
  reward model's score at the last one (`per_token_rewards`), and GAE turns it and the value
  model's predictions into per-token advantages and value targets (`gae`), usually whitened
  over the batch (`whiten`);
- the other samples of the same prompt (critic-free: GRPO, Dr. GRPO, RLOO): the policy draws
  K = `group_size` responses per prompt, each gets one scalar reward, and the baseline is the
  mean of its group (`group_normalized_advantages`) or of the rest of its group
  (`leave_one_out_advantages`). The sequence's advantage is then given to each of its tokens.
  Rows are grouped consecutively: rows 0..K-1 are one prompt's samples, K..2K-1 the next's
  (what `repeat_interleave(K)` on the prompts gives).

Advantages and returns are targets, not functions of the parameters being trained: every
function here returns detached tensors. Masks (B, T) are true on real response tokens; padded
positions may hold anything and come back as 0.

Two tables end the module, one per family, because their entries take different inputs:
`GROUP_ADVANTAGES` ("grpo", "rloo": rewards (B,) and group_size), which the critic-free methods'
config names (Dr. GRPO is "grpo" with `scale_by_std=False`, a setting "rloo" does not take), and
`ADVANTAGE_ESTIMATORS`, every estimator by name, "gae" (PPO's, with a value model) included.
"""

from __future__ import annotations

import torch

from alignloop.losses.reduce import masked_mean
from alignloop.losses.shapes import require_shapes


def _require_unit_interval(fn_name: str, **numbers: float) -> None:
    for name, value in numbers.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{fn_name}: {name} must be in [0, 1], got {value}")


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation, Schulman et al. 2016, "High-Dimensional Continuous
    Control Using Generalized Advantage Estimation", eq. 16:

        A_t = sum_l (gamma lam)^l delta_{t+l},  delta_t = r_t + gamma V_{t+1} - V_t

    computed backwards as A_t = delta_t + gamma lam A_{t+1}. Each response is one episode that
    ends after its last real token: the value and advantage beyond it are 0. Masked positions
    are not steps of the episode and are skipped (a right-padded row simply ends early). lam = 1
    gives Monte-Carlo returns minus V, lam = 0 the one-step TD error.

    rewards, values, mask: (B, T). Returns (advantages (B, T), returns (B, T)) with
    returns = advantages + values, the value model's regression targets; 0 on padding.
    """
    require_shapes("gae", 2, rewards=rewards, values=values, mask=mask)
    _require_unit_interval("gae", gamma=gamma, lam=lam)
    mask = mask.bool()
    rewards = torch.where(mask, rewards.detach(), torch.zeros_like(rewards))  # (B, T)
    values = torch.where(mask, values.detach(), torch.zeros_like(values))  # (B, T)
    advantages = torch.zeros_like(values)  # (B, T)
    next_value = torch.zeros_like(values[:, 0])  # (B,): V_{t+1}, 0 after the episode
    next_advantage = torch.zeros_like(values[:, 0])  # (B,): A_{t+1}
    for t in reversed(range(values.shape[1])):  # T is a response length: a short loop
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (B,)
        advantage = delta + gamma * lam * next_advantage  # (B,)
        real = mask[:, t]  # (B,)
        advantages[:, t] = torch.where(real, advantage, torch.zeros_like(advantage))
        # A padded position passes the next real step's value and advantage through unchanged.
        next_value = torch.where(real, values[:, t], next_value)
        next_advantage = torch.where(real, advantage, next_advantage)
    returns = torch.where(mask, advantages + values, torch.zeros_like(values))  # (B, T)
    return advantages, returns


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked entries only; any shape, mask of that shape.

    The population variance (divide by n) is used, so the result has mean 0 and standard
    deviation 1 over the masked entries (up to eps). With `shift_mean=False` the mean is added
    back: only the scale changes, as for rewards, where the sign of the mean matters. Whitening
    advantages keeps the size of the policy's step independent of the reward's scale. Padding
    comes back as 0; an empty mask gives all zeros.
    """
    if values.shape != mask.shape:
        raise ValueError(
            f"whiten: mask must have the shape of values: values {tuple(values.shape)}, mask {tuple(mask.shape)}"
        )
    mask = mask.bool()
    values = torch.where(mask, values.detach(), torch.zeros_like(values))
    mean = masked_mean(values, mask)  # ()
    variance = masked_mean((values - mean) ** 2, mask)  # ()
    whitened = (values - mean) * torch.rsqrt(variance + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask, whitened, torch.zeros_like(whitened))


def _grouped(fn_name: str, rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(B,) rewards -> (B / group_size, group_size), one prompt's samples per row."""
    require_shapes(fn_name, 1, rewards=rewards)
    if group_size < 2:
        raise ValueError(f"{fn_name}: group_size must be >= 2 (a baseline needs other samples), got {group_size}")
    if rewards.shape[0] % group_size != 0:
        raise ValueError(
            f"{fn_name}: {rewards.shape[0]} rewards do not split into groups of {group_size}"
        )
    return rewards.detach().view(-1, group_size)


def group_normalized_advantages(
    rewards: torch.Tensor,
    group_size: int,
    *,
    scale_by_std: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """GRPO's outcome advantage, Shao et al. 2024, "DeepSeekMath", sec. 4.1.2:
    A_i = (r_i - mean(r_group)) / (std(r_group) + eps), for every token of response i.

    rewards (B,), B = n_groups * group_size, consecutive rows one group -> advantages (B,).
    std is the sample standard deviation (divide by K - 1), as TRL and verl compute it. A group
    whose rewards are all equal gets advantages 0: it carries no signal about which response
    was better. `scale_by_std=False` only centres, as Dr. GRPO (Liu et al. 2025, "Understanding
    R1-Zero-Like Training: A Critical Perspective") argues: dividing by the std up-weights prompts that are
    nearly always solved or nearly always failed.
    """
    grouped = _grouped("group_normalized_advantages", rewards, group_size)  # (G, K)
    centred = grouped - grouped.mean(dim=-1, keepdim=True)  # (G, K)
    if scale_by_std:
        centred = centred / (grouped.std(dim=-1, keepdim=True) + eps)
    return centred.reshape(-1)  # (B,)


def leave_one_out_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO, Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for
    Learning from Human Feedback in LLMs", eq. 5 (after Kool et al. 2019):
    A_i = r_i - (1 / (K - 1)) sum_{j != i} r_j.

    The baseline of a sample is the mean of the *other* K - 1 samples of its prompt, so it does
    not depend on the sample itself and the estimate stays unbiased. rewards (B,), consecutive
    rows one group of `group_size` -> advantages (B,).
    """
    grouped = _grouped("leave_one_out_advantages", rewards, group_size)  # (G, K)
    others_mean = (grouped.sum(dim=-1, keepdim=True) - grouped) / (group_size - 1)  # (G, K)
    return (grouped - others_mean).reshape(-1)  # (B,)


def per_token_rewards(
    scores: torch.Tensor,
    kl: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> torch.Tensor:
    """The KL-shaped reward of PPO-RLHF (Ziegler et al. 2019, eq. 2; Stiennon et al. 2020,
    eq. 1; Ouyang et al. 2022, eq. 2): r_t = -kl_coef * KL_t at every response token, plus the
    reward model's score of the whole response at its last real token.

    scores (B,): one score per response; kl (B, T): a per-token KL estimate
    (`policy.kl_penalty(logps, ref_logps, "k1")` in those papers); mask (B, T). Returns (B, T),
    0 on padding. A row without any real token gets no reward at all (its score has no token to
    sit on).
    """
    require_shapes("per_token_rewards", 1, scores=scores)
    require_shapes("per_token_rewards", 2, kl=kl, mask=mask)
    if kl.shape[0] != scores.shape[0]:
        raise ValueError(f"per_token_rewards: {scores.shape[0]} scores for {kl.shape[0]} rows of kl")
    if kl_coef < 0:
        raise ValueError(f"per_token_rewards: kl_coef must be >= 0, got {kl_coef}")
    mask = mask.bool()
    rewards = torch.where(mask, -kl_coef * kl.detach(), torch.zeros_like(kl))  # (B, T)
    positions = torch.arange(mask.shape[1], device=mask.device)  # (T,)
    # Position indices are distinct, so the largest masked one is the last real token.
    last = torch.where(mask, positions, -1).max(dim=-1).values  # (B,), -1 for an empty row
    is_last = (positions == last.unsqueeze(-1)) & mask  # (B, T)
    return rewards + torch.where(is_last, scores.detach().to(rewards.dtype).unsqueeze(-1), 0.0)


# The group baselines a critic-free config names (GRPO / RLOO): rewards (B,) and group_size in.
GROUP_ADVANTAGES = {
    "grpo": group_normalized_advantages,
    "rloo": leave_one_out_advantages,
}

# Every advantage estimator by name; their inputs differ by family (see the module docstring).
ADVANTAGE_ESTIMATORS = {"gae": gae, **GROUP_ADVANTAGES}
