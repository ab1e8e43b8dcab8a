"""Losses as plain functions over tensors: tensors and numbers in, `(loss_sum, metrics)` out.

One convention for every loss of the package: `loss_sum` is a () *sum* over the loss's items,
never a mean, and `metrics` are () detached sums over the same items, named `group/name`. The
engine sums them over the micro-batches of an optimizer step and divides by the step's item
count, which a method states once, in its `count_items` (see `engine/method.py`), before any
forward pass:

- preference and reward losses: an item is an example (a pair, a ranking, a rating, a labelled
  response), so the count is the batch size. They are written per example and summed by
  `reduce.sums_over_examples`; `loss.per_example` gives the (B,) values.
- policy losses: an item is a token or a sequence (`aggregation`); `policy.policy_loss_items`
  counts them from the mask, the one definition of an item the methods call.

This package imports torch only: never transformers, never the config layer.

- `reduce`: masked sums and means; `sums_over_examples`, a per-example loss as sums.
- `preference`: the DPO family (`DPO_LOSSES`), SimPO, KTO.
- `reward`: reward-model losses for comparisons, rankings and ratings (`REWARD_LOSSES`).
- `policy`: token-level PPO / GRPO / RLOO losses (`POLICY_LOSSES`, `KL_ESTIMATORS`) and
  `policy_loss_items`; see that module's docstring for tokens versus sequences.
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
    policy_loss_items,
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
    "policy_loss_items",
    "ppo_policy_loss",
    "rating_ordinal",
    "rating_regression",
    "simpo",
    "value_loss",
    "whiten",
]
