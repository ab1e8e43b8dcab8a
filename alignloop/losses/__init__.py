"""Losses as plain functions over tensors: tensors and numbers in, `(losses, metrics)` out.

`losses` is per example (B,); the caller sums it and the engine divides by the item count of
the whole optimizer step. `metrics` are detached per-example tensors (B,) named `group/name`.
This package imports torch only: never transformers, never the config layer.

- `reduce`: masked sums and means, per-token -> per-sequence log-probs.
- `preference`: the DPO family (`DPO_LOSSES`), SimPO, KTO.
- `reward`: reward-model losses for comparisons, rankings and ratings (`REWARD_LOSSES`).
"""

from alignloop.losses.preference import (
    DPO_LOSSES,
    dpo_hinge,
    dpo_ipo,
    dpo_robust,
    dpo_sigmoid,
    kto,
    kto_reference_point,
    simpo,
)
from alignloop.losses.reduce import masked_mean, masked_sum, sequence_logps
from alignloop.losses.reward import (
    REWARD_LOSSES,
    bradley_terry,
    ordinal_log_probs,
    plackett_luce,
    rating_ordinal,
    rating_regression,
)

__all__ = [
    "DPO_LOSSES",
    "REWARD_LOSSES",
    "bradley_terry",
    "dpo_hinge",
    "dpo_ipo",
    "dpo_robust",
    "dpo_sigmoid",
    "kto",
    "kto_reference_point",
    "masked_mean",
    "masked_sum",
    "ordinal_log_probs",
    "plackett_luce",
    "rating_ordinal",
    "rating_regression",
    "sequence_logps",
    "simpo",
]
