"""The KL coefficient β of PPO-RLHF: fixed, or adapted toward a target KL.

Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences", sec. 2.2) steer β
with a proportional controller so that the policy's KL to the reference stays near a target:

    e = clip(KL / KL_target - 1, -0.2, 0.2),   β ← β · (1 + e · n / horizon)

where n is the number of sequences in the step and `horizon` sets how many sequences it takes
to correct an error (their K_β = n / horizon). A too-large KL raises β, a too-small one lowers
it; the clip keeps one odd batch from moving β by more than 0.2 · n / horizon.
"""

from __future__ import annotations

PROPORTIONAL_ERROR_CLIP = 0.2


def adaptive_kl_coef(coef: float, observed_kl: float, target: float, horizon: int, num_sequences: int) -> float:
    """β for the next step after a step of `num_sequences` sequences with mean KL `observed_kl`."""
    if not target > 0:
        raise ValueError(f"the KL target must be > 0, got {target}")
    if not horizon > 0:
        raise ValueError(f"the KL horizon must be > 0, got {horizon}")
    error = min(max(observed_kl / target - 1.0, -PROPORTIONAL_ERROR_CLIP), PROPORTIONAL_ERROR_CLIP)
    return coef * (1.0 + error * num_sequences / horizon)
