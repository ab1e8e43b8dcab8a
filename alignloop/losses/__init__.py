"""Losses as plain functions over tensors: tensors and numbers in, `(losses, metrics)` out.

`losses` is per example (B,); the caller sums it and the engine divides by the item count of
the whole optimizer step. `metrics` are detached per-example tensors (B,) named `group/name`.
This package imports torch only: never transformers, never the config layer.

- `reduce`: masked sums and means, per-token -> per-sequence log-probs.
- `preference`: the DPO family (`DPO_LOSSES`), SimPO, KTO.
- `reward`: reward-model losses for comparisons, rankings and ratings (`REWARD_LOSSES`).
- `policy`: token-level PPO / GRPO / RLOO losses (`POLICY_LOSSES`, `KL_ESTIMATORS`); these return
  `(loss_sum, num_items, metrics)` over tokens or sequences, see that module's docstring.
- `advantages`: GAE, whitening, group baselines (`ADVANTAGE_ESTIMATORS`); detached targets.
"""

from alignloop.losses.advantages import (
    ADVANTAGE_ESTIMATORS,
    GROUP_ADVANTAGES,
    gae,
    group_normalized_advantages,
    leave_one_out_advantages,
    per_token_rewards,
    whiten,
)
from alignloop.losses.policy import (
    KL_ESTIMATORS,
    POLICY_LOSSES,
    entropy_from_logits,
    grpo_kl_term,
    kl_penalty,
    policy_gradient_loss,
    ppo_policy_loss,
    value_loss,
)
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
from alignloop.losses.reduce import masked_mean, masked_sum
from alignloop.losses.reward import (
    RATING_LOSSES,
    REWARD_LOSSES,
    bradley_terry,
    ordinal_log_probs,
    plackett_luce,
    rating_ordinal,
    rating_regression,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "DPO_LOSSES",
    "GROUP_ADVANTAGES",
    "KL_ESTIMATORS",
    "POLICY_LOSSES",
    "RATING_LOSSES",
    "REWARD_LOSSES",
    "bradley_terry",
    "dpo_hinge",
    "dpo_ipo",
    "dpo_robust",
    "dpo_sigmoid",
    "entropy_from_logits",
    "gae",
    "group_normalized_advantages",
    "grpo_kl_term",
    "kl_penalty",
    "kto",
    "kto_reference_point",
    "leave_one_out_advantages",
    "masked_mean",
    "masked_sum",
    "ordinal_log_probs",
    "per_token_rewards",
    "plackett_luce",
    "policy_gradient_loss",
    "ppo_policy_loss",
    "rating_ordinal",
    "rating_regression",
    "simpo",
    "value_loss",
    "whiten",
]
