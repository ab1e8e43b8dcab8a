"""The over-optimisation alarm: a reward-model ensemble grows unsure of the replies it rewards.

Members trained on different bootstraps of the judgements agree on replies like those they
learned from and disagree where the judgements did not pin a score down. A policy that climbs
errors the members do not share moves there, so the ensemble's disagreement on the policy's
replies grows relative to its disagreement on the starting model's while the proxy reward
rises. That is visible during training, without a gold scorer, which the
reward-hacking warnings (hacking.py) need.

How far to trust it, measured (README, "Over-optimisation"): a ring is a reason to look, and
silence is no proof. With 8-32 rankings, members on one model's features share most of the
proxy's mistakes, and no spread shows a mistake every member makes. Over 7 best-of-n curves
whose gold fell, the alarm rang in time for 2; it rang on 6 of 17 where gold did not fall (a
watching ensemble, n up to 512, AVX2 EPYC). A conservative aggregate (`min`,
`mean_minus_std`) picks the replies its own members agree on, so a reward `mix` lets a
weight-0 monitor's disagreement win over theirs.

The rule, a pure function of the figures of the first step (whose replies are the reference's
own: the policy has not moved) and of the current step: the alarm rings when the disagreement
is at least `bound` times the first step's while the proxy reward is above the first step's.
`alignloop eval` applies the same rule to the policy's and the reference's replies to the
held-out prompts (`ensemble_warnings`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_BOUND", "OveroptimisationWatch", "ensemble_warnings", "overoptimisation_alarm"]

DEFAULT_BOUND = 1.5  # disagreement on the policy's replies, as a multiple of the starting model's


def overoptimisation_alarm(
    disagreement: float, reward: float, first_disagreement: float, first_reward: float, bound: float
) -> str | None:
    """A sentence if the ensemble's disagreement on this step's replies is `bound` times the
    first step's or more while the proxy reward rose, else None."""
    if first_disagreement <= 0 or reward <= first_reward:
        return None
    ratio = disagreement / first_disagreement
    if ratio < bound:
        return None
    return (f"the reward-model ensemble disagrees {ratio:.2f}x as much on the policy's replies as on the starting "
            f"model's ({disagreement:.3f} vs {first_disagreement:.3f}, bound {bound:g}) while the proxy reward rose "
            f"({first_reward:.3f} -> {reward:.3f}): the policy may be climbing the reward model's errors")


@dataclass
class OveroptimisationWatch:
    """The first step's figures and the alarm's state across the steps of one run."""

    bound: float
    first: tuple[float, float] | None = None  # (disagreement, reward) of the first step watched
    steps: int = 0  # steps watched so far
    rang_at: int | None = None  # the step the alarm first rang (1 = the first watched)

    def ratio(self, disagreement: float) -> float | None:
        """A disagreement relative to the first step's (None before the first, or when it was 0)."""
        if self.first is None or self.first[0] <= 0:
            return None
        return disagreement / self.first[0]

    def check(self, disagreement: float, reward: float) -> str | None:
        """Record the next step's figures; the alarm's sentence the first time it rings, else None."""
        self.steps += 1
        if self.first is None:
            self.first = (disagreement, reward)
            return None
        alarm = overoptimisation_alarm(disagreement, reward, *self.first, self.bound)
        if alarm is None or self.rang_at is not None:
            return None
        self.rang_at = self.steps
        return alarm

    def state_dict(self) -> dict:
        return {"first": self.first, "steps": self.steps, "rang_at": self.rang_at}

    @classmethod
    def from_state(cls, bound: float, state: dict) -> OveroptimisationWatch:
        first = state.get("first")
        return cls(bound, tuple(first) if first else None, int(state.get("steps", 0)), state.get("rang_at"))


def ensemble_warnings(sources: Mapping[str, Mapping[str, Any]], bound: float = DEFAULT_BOUND) -> list[str]:
    """The alarm on an eval.json's sources: for each one with an ensemble's `disagreement`, the
    policy's replies against the reference's."""
    warnings = []
    for name, entry in sources.items():
        spread = entry.get("disagreement")
        if spread is None:
            continue
        alarm = overoptimisation_alarm(spread["policy_mean"], entry["policy_mean"], spread["reference_mean"],
                                       entry["reference_mean"], bound)
        if alarm is not None:
            warnings.append(f"{name}: {alarm.replace('starting model', 'reference')}")
    return warnings
