"""Turning raw scores into the rewards the RL step optimises: pure functions over floats.

- `penalize_unfinished`: a response cut off at the length limit (no end-of-sequence token) is
  usually scored as if it were complete, and a policy soon learns that rambling until the limit
  costs nothing. Following TRL's `missing_eos_penalty`, the penalty is SUBTRACTED from the
  reward (mode "subtract"), which keeps the reward model's ranking among unfinished responses;
  mode "replace" sets their reward to `-penalty` whatever the source said (as TRL's older
  `non_eos_penalty` did), which is blunter but cannot be outweighed by a high score.
- `clip_rewards`: bounds rare extreme scores, which would otherwise dominate a batch's update.
- `RunningMoments` + `normalize_rewards`: standardise rewards with the mean / std of ALL rewards
  seen so far, not just this batch, so that a batch of uniformly good responses still gets good
  rewards (per-batch whitening would make half of them look bad). The moments combine batches
  exactly (Chan et al., 1979, "Updating formulae and a pairwise algorithm for computing sample
  variances"), so they equal the moments of all rewards concatenated, and stay accurate over
  millions of rewards where a running sum of squares would lose precision.

Plain Python over lists: a batch has a few hundred rewards at most, and the shaping then works
the same for any source without torch. Tensors are accepted (anything iterable of numbers).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

__all__ = ["penalize_unfinished", "clip_rewards", "RunningMoments", "normalize_rewards"]


def penalize_unfinished(
    rewards: Sequence[float],
    finished: Sequence[bool],
    penalty: float,
    mode: Literal["subtract", "replace"] = "subtract",
) -> list[float]:
    """Rewards with unfinished responses (`finished[i]` False: no EOS) penalised by `penalty` >= 0:
    `reward - penalty` (mode "subtract", TRL's `missing_eos_penalty`) or `-penalty` ("replace")."""
    if len(rewards) != len(finished):
        raise ValueError(f"got {len(rewards)} rewards but {len(finished)} finished flags")
    if not math.isfinite(penalty) or penalty < 0:
        raise ValueError(f"penalty must be a finite number >= 0 (it is subtracted), got {penalty}")
    if mode not in ("subtract", "replace"):
        raise ValueError(f"mode must be 'subtract' or 'replace', got {mode!r}")
    shaped = []
    for reward, done in zip(rewards, finished):
        reward = float(reward)
        if not done:
            reward = reward - penalty if mode == "subtract" else -penalty
        shaped.append(reward)
    return shaped


def clip_rewards(rewards: Iterable[float], bound: float) -> list[float]:
    """Each reward clipped to [-bound, bound]."""
    if not bound > 0:
        raise ValueError(f"bound must be > 0, got {bound}")
    return [min(max(float(r), -bound), bound) for r in rewards]


class RunningMoments:
    """Mean and standard deviation of every value passed to `update`, batch by batch.

    `std` is the sample standard deviation (divides by n - 1, as TRL's RunningMoments does); it
    is 0 until two values have been seen. `state_dict` / `load_state_dict` carry the moments
    through a checkpoint, so a resumed run normalises as the original would have.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0  # sum of squared deviations from the mean

    def update(self, values: Iterable[float]) -> None:
        """Fold a batch into the moments (Chan et al.'s parallel combination)."""
        batch = [float(v) for v in values]
        if not batch:
            return
        if not all(math.isfinite(v) for v in batch):
            raise ValueError("RunningMoments.update: values must be finite")
        n = len(batch)
        batch_mean = math.fsum(batch) / n
        batch_m2 = math.fsum((v - batch_mean) ** 2 for v in batch)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.m2 += batch_m2 + delta * delta * self.count * n / total
        self.count = total

    @property
    def var(self) -> float:
        return self.m2 / (self.count - 1) if self.count > 1 else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def state_dict(self) -> dict[str, float]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])

    def __repr__(self) -> str:
        return f"RunningMoments(count={self.count}, mean={self.mean:.6g}, std={self.std:.6g})"


def normalize_rewards(
    rewards: Sequence[float],
    moments: RunningMoments,
    *,
    update: bool = True,
    center: bool = True,
    eps: float = 1e-8,
) -> list[float]:
    """`(reward - mean) / std` with the running moments (first updated with this batch, unless
    `update=False`). `center=False` only divides by std, keeping the sign of each reward. While
    the std is ~0 (fewer than two rewards seen, or all equal) rewards are not rescaled."""
    rewards = [float(r) for r in rewards]
    if update:
        moments.update(rewards)
    std = moments.std
    scale = std if std > eps else 1.0
    shift = moments.mean if center else 0.0
    return [(r - shift) / scale for r in rewards]
