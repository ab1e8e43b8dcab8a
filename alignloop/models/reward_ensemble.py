"""An ensemble of reward models: how its members are made to differ, and how their scores combine.

A policy trained against a learned reward finds the replies where the reward model is wrong
and climbs there (Gao et al. 2023, "Scaling Laws for Reward Model Overoptimization"). Members
trained on different bootstraps of the same judgements agree where the judgements pin a score
down and disagree where they do not, which is exactly where a policy that exploits errors goes.
Coste et al. (ICLR 2024, "Reward Model Ensembles Help Mitigate Overoptimization") optimise the
worst member (`min`) or the mean minus the members' spread (`mean_minus_std`, their
"uncertainty-weighted optimisation") and find that it stops over-optimisation where the mean
alone does not.

Each member is scored on its own normalisation (mean 0, std 1 on the training replies), so the
members' spread is in the units the RL step sees and a wide-scaled member cannot dominate.

Bootstraps are Poisson(1) weights per judgement and member (Oza & Russell 2001, "online
bagging"): the same law as resampling n of n with replacement for large n, but drawn per item,
so one training run with shuffled mini-batches trains every member on its own resample. A
judgement's weights come from a hash of what identifies it (its kind, its replies' tokens and
its verdict) and the run's seed, so they do not depend on the batch it lands in, and a resumed
run draws the same ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["AGGREGATES", "aggregate_members", "bootstrap_weights", "disagreement"]

AGGREGATES = ("mean", "min", "mean_minus_std")


def disagreement(member_scores: torch.Tensor) -> torch.Tensor:
    """(N, K) normalised member scores -> (N,) their population standard deviation (0 for one member)."""
    return member_scores.std(-1, correction=0)


def aggregate_members(member_scores: torch.Tensor, how: str = "mean", penalty: float = 1.0) -> torch.Tensor:
    """(N, K) normalised member scores -> (N,) one reward each: the members' mean, their minimum
    (the worst case), or mean − `penalty` · std (uncertainty-weighted)."""
    if how == "mean":
        return member_scores.mean(-1)
    if how == "min":
        return member_scores.min(-1).values
    if how == "mean_minus_std":
        return member_scores.mean(-1) - penalty * disagreement(member_scores)
    raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {how!r}")


def _item_seed(identity: object, seed: int) -> int:
    digest = hashlib.blake2b(repr((seed, identity)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def bootstrap_weights(identities: Sequence[object], members: int, seed: int) -> torch.Tensor:
    """(B, K) float32 Poisson(1) weights, one per judgement (given by an identity whose repr is
    stable: plain tuples and lists of numbers and strings) and member; all ones for a single
    member, which trains on the data as it is."""
    if members == 1:
        return torch.ones(len(identities), 1)
    rows = [np.random.default_rng(_item_seed(identity, seed)).poisson(1.0, members) for identity in identities]
    return torch.tensor(np.stack(rows), dtype=torch.float32).reshape(len(identities), members)
