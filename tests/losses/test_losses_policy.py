"""Token-level policy losses against values computed by hand.

PPO examples take old log-probs 0 and log-probs log(rho), so that the ratio is rho itself;
clip_range 0.2 clips it to [0.8, 1.2].
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from alignloop.losses import (
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

NAN = float("nan")


def rows(*values):
    return torch.tensor(values, dtype=torch.float64)


def scalar(value):
    return torch.tensor(value, dtype=torch.float64)


def log_ratios(*ratios):
    return rows([math.log(r) for r in ratios])


# --- KL estimators -------------------------------------------------------------------------

def test_kl_estimators_by_hand():
    logps = rows([-1.0, -2.0, -2.0])
    ref = rows([-1.5, -1.0, -2.0])  # logp - ref = 0.5, -1, 0
    assert_close(kl_penalty(logps, ref, "k1"), rows([0.5, -1.0, 0.0]))
    assert_close(kl_penalty(logps, ref, "k2"), rows([0.5 * 0.5**2, 0.5 * 1.0**2, 0.0]))
    # k3 = e^(ref - logp) - 1 - (ref - logp), with ref - logp = -0.5, 1, 0
    k3 = kl_penalty(logps, ref, "k3")
    assert_close(k3, rows([math.exp(-0.5) - 1 + 0.5, math.e - 1 - 1, 0.0]))
    assert (k3 >= 0).all()  # unlike k1, never negative
    assert k3[0, 2].item() == 0.0  # equal log-probs: exactly 0


def test_kl_penalty_rejects_unknown_estimators_and_shapes():
    with pytest.raises(ValueError, match="estimator must be one of"):
        kl_penalty(rows([0.0]), rows([0.0]), "k4")
    with pytest.raises(ValueError, match="differ in shape"):
        kl_penalty(rows([0.0, 1.0]), rows([0.0]), "k1")


# --- PPO clipped surrogate -----------------------------------------------------------------

# Four tokens of one row, eps = 0.2:
#   rho 1.1, A  2: inside the range      -> -1.1 * 2                  = -2.2,  not clipped
#   rho 1.5, A  1: above 1 + eps, A > 0  -> -min(1.5, 1.2) * 1        = -1.2,  clipped
#   rho 0.5, A -1: below 1 - eps, A < 0  -> -min(-0.5, -0.8)          =  0.8,  clipped
#   rho 1.5, A -1: above 1 + eps, A < 0  -> -min(-1.5, -1.2)          =  1.5,  not clipped (pessimistic)
PPO_LOGPS = log_ratios(1.1, 1.5, 0.5, 1.5)
PPO_OLD = rows([0.0, 0.0, 0.0, 0.0])
PPO_ADV = rows([2.0, 1.0, -1.0, -1.0])
PPO_MASK = torch.ones(1, 4, dtype=torch.bool)


def test_ppo_clip_by_hand():
    loss_sum, metrics = ppo_policy_loss(PPO_LOGPS, PPO_OLD, PPO_ADV, PPO_MASK, clip_range=0.2)
    assert_close(loss_sum, scalar(-1.1 * 2 + -1.2 * 1 + 0.8 + 1.5))
    assert policy_loss_items(PPO_MASK, "token-mean") == 4
    assert_close(metrics["policy/clipfrac"], scalar(0.0 + 1.0 + 1.0 + 0.0))
    assert_close(metrics["policy/ratio_mean"], scalar(1.1 + 1.5 + 0.5 + 1.5))
    # k3 of KL(old || new): rho - 1 - log rho
    expected_kl = sum(r - 1 - math.log(r) for r in (1.1, 1.5, 0.5, 1.5))
    assert_close(metrics["policy/approx_kl"], scalar(expected_kl))


def test_ppo_clipped_tokens_get_no_gradient():
    logps = PPO_LOGPS.clone().requires_grad_()
    ppo_policy_loss(logps, PPO_OLD, PPO_ADV, PPO_MASK, clip_range=0.2)[0].backward()
    # d(-rho A)/d logp = -rho A where unclipped; 0 where the clipped (constant) term is taken.
    assert_close(logps.grad, rows([-1.1 * 2, 0.0, 0.0, -1.5 * -1]))


def test_ppo_at_ratio_one_is_the_policy_gradient():
    logps = rows([-1.0, -2.0], [-0.5, NAN]).requires_grad_()
    advantages, mask = rows([2.0, -1.0], [3.0, 0.0]), torch.tensor([[1, 1], [1, 0]])
    loss_sum, metrics = ppo_policy_loss(logps, logps.detach(), advantages, mask, clip_range=0.2)
    assert_close(loss_sum, scalar(-(2.0 - 1.0 + 3.0)))  # rho = 1: -sum A
    assert_close(metrics["policy/approx_kl"], scalar(0.0))
    loss_sum.backward()
    assert_close(logps.grad, rows([-2.0, 1.0], [-3.0, 0.0]))  # -A, and 0 (not NaN) on padding


def test_sequence_mean_and_token_mean_count_different_items():
    # Row 1: three tokens, per-token losses -1.1*2 = -2.2, -1.2, 0.8; row 2: one token, 1.5;
    # row 3: no token at all.
    logps = torch.cat([log_ratios(1.1, 1.5, 0.5), log_ratios(1.5, 1.0, 1.0), log_ratios(1.0, 1.0, 1.0)])
    old = torch.zeros(3, 3, dtype=torch.float64)
    advantages = rows([2.0, 1.0, -1.0], [-1.0, 5.0, 5.0], [5.0, 5.0, 5.0])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    token_sum, token_metrics = ppo_policy_loss(logps, old, advantages, mask, clip_range=0.2)
    assert_close(token_sum, scalar(-2.2 - 1.2 + 0.8 + 1.5))
    assert policy_loss_items(mask, "token-mean") == 4
    assert_close(token_metrics["policy/clipfrac"], scalar(2.0))  # two clipped tokens
    seq_sum, seq_metrics = ppo_policy_loss(
        logps, old, advantages, mask, clip_range=0.2, aggregation="sequence-mean"
    )
    assert_close(seq_sum, scalar((-2.2 - 1.2 + 0.8) / 3 + 1.5))
    assert policy_loss_items(mask, "sequence-mean") == 2  # the empty row is not an item
    assert_close(seq_metrics["policy/clipfrac"], scalar(2 / 3 + 0.0))  # per-sequence fractions, summed


def test_padding_never_leaks():
    logps = torch.cat([PPO_LOGPS, rows([NAN, -math.inf, math.inf, NAN])])
    old = torch.cat([PPO_OLD, rows([-math.inf, -math.inf, NAN, 0.0])])
    advantages = torch.cat([PPO_ADV, rows([NAN, 1.0, NAN, 1e30])])
    mask = torch.cat([PPO_MASK, torch.zeros(1, 4, dtype=torch.bool)])
    loss_sum, metrics = ppo_policy_loss(logps, old, advantages, mask, clip_range=0.2)
    alone = ppo_policy_loss(PPO_LOGPS, PPO_OLD, PPO_ADV, PPO_MASK, clip_range=0.2)
    assert_close(loss_sum, alone[0])
    assert policy_loss_items(mask, "token-mean") == 4
    for name, value in metrics.items():
        assert_close(value, alone[1][name])


def test_metrics_are_detached():
    logps = PPO_LOGPS.clone().requires_grad_()
    _, metrics = ppo_policy_loss(logps, PPO_OLD, PPO_ADV, PPO_MASK, clip_range=0.2)
    values = torch.tensor([[1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    _, value_metrics = value_loss(values, rows([1.0, 2.0]), rows([0.0, 0.0]), torch.ones(1, 2), clip_range=0.2)
    assert not any(m.requires_grad for m in {**metrics, **value_metrics}.values())


# --- value loss ----------------------------------------------------------------------------

def test_value_loss_by_hand():
    # eps = 0.2. Token 1: V 1.1 within 0.2 of V_old 1.0, R 2.0: both errors (1.1 - 2)^2 = 0.81.
    # Token 2: V 1.5 clipped to 1.2, R 2.0: max((1.5 - 2)^2, (1.2 - 2)^2) = max(0.25, 0.64), clipped.
    # Token 3: V 1.5 clipped to 1.2, R 0.0: max(2.25, 1.44) = 2.25, the unclipped error.
    values = rows([1.1, 1.5, 1.5]).requires_grad_()
    old_values, returns = rows([1.0, 1.0, 1.0]), rows([2.0, 2.0, 0.0])
    loss_sum, metrics = value_loss(values, old_values, returns, torch.ones(1, 3), clip_range=0.2)
    assert_close(loss_sum, scalar(0.5 * 0.81 + 0.5 * 0.64 + 0.5 * 2.25))
    assert policy_loss_items(torch.ones(1, 3), "token-mean") == 3
    assert_close(metrics["value/clipfrac"], scalar(0.0 + 1.0 + 0.0))
    assert_close(metrics["value/mean"], scalar(1.1 + 1.5 + 1.5))
    assert_close(metrics["value/error"], scalar(0.81 + 0.25 + 2.25))
    loss_sum.backward()
    # d/dV of 1/2 (V - R)^2 = V - R; 0 where the clipped error (constant in V) is taken.
    assert_close(values.grad, rows([1.1 - 2.0, 0.0, 1.5 - 0.0]))


def test_value_loss_without_clipping_and_with_padding():
    values, old_values, returns = rows([1.5, NAN]), rows([1.0, NAN]), rows([2.0, NAN])
    mask = torch.tensor([[True, False]])
    loss_sum, metrics = value_loss(values, old_values, returns, mask, clip_range=None)
    assert_close(loss_sum, scalar(0.5 * 0.25))
    assert policy_loss_items(mask, "token-mean") == 1 and metrics["value/clipfrac"].item() == 0.0


# --- entropy -------------------------------------------------------------------------------

def test_entropy_of_a_uniform_distribution_is_log_v():
    logits = torch.zeros(2, 3, 5, dtype=torch.float64)
    logits[1] = 1000.0  # any constant: no overflow
    assert_close(entropy_from_logits(logits), torch.full((2, 3), math.log(5), dtype=torch.float64))


def test_entropy_by_hand_and_of_ruled_out_tokens():
    logits = rows([0.0, math.log(3)]).unsqueeze(0)  # p = 1/4, 3/4
    assert_close(entropy_from_logits(logits), rows([-(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]))
    ruled_out = torch.tensor([[0.0, 0.0, -math.inf]], dtype=torch.float64, requires_grad=True)
    entropy = entropy_from_logits(ruled_out)  # (N, V) -> (N,)
    assert_close(entropy, torch.tensor([math.log(2)], dtype=torch.float64))
    entropy.sum().backward()
    assert torch.isfinite(ruled_out.grad).all()


def test_entropy_upcasts_half_precision():
    assert entropy_from_logits(torch.zeros(1, 1, 4, dtype=torch.bfloat16)).dtype == torch.float32


# --- policy gradient and GRPO's KL term -----------------------------------------------------

def test_policy_gradient_by_hand():
    logps, advantages = rows([-1.0, -2.0], [-3.0, NAN]), rows([2.0, -1.0], [0.5, NAN])
    mask = torch.tensor([[1, 1], [1, 0]])
    loss_sum, metrics = policy_gradient_loss(logps, advantages, mask)
    assert_close(loss_sum, scalar(-(2.0 * -1.0) - (-1.0 * -2.0) - (0.5 * -3.0)))
    assert policy_loss_items(mask, "token-mean") == 3
    assert_close(metrics["policy/logps"], scalar(-1.0 - 2.0 - 3.0))
    seq_sum, _ = policy_gradient_loss(logps, advantages, mask, aggregation="sequence-mean")
    assert_close(seq_sum, scalar((2.0 - 2.0) / 2 + 1.5))
    assert policy_loss_items(mask, "sequence-mean") == 2


def test_policy_gradient_with_old_logps_is_ppo():
    with_old = policy_gradient_loss(PPO_LOGPS, PPO_ADV, PPO_MASK, old_logps=PPO_OLD, clip_range=0.2)
    ppo = ppo_policy_loss(PPO_LOGPS, PPO_OLD, PPO_ADV, PPO_MASK, clip_range=0.2)
    assert_close(with_old[0], ppo[0])
    assert with_old[1].keys() == ppo[1].keys()
    with pytest.raises(ValueError, match="needs clip_range"):
        policy_gradient_loss(PPO_LOGPS, PPO_ADV, PPO_MASK, old_logps=PPO_OLD)


def test_grpo_kl_term_by_hand():
    logps, ref = rows([-1.0, -2.0, NAN]), rows([-1.5, -2.0, 0.0])
    mask = torch.tensor([[True, True, False]])
    loss_sum, metrics = grpo_kl_term(logps, ref, mask, 0.1)
    k3 = math.exp(-0.5) - 1 + 0.5  # pi_ref / pi - log(pi_ref / pi) - 1 with log-ratio -0.5; 0 for equal
    assert_close(loss_sum, scalar(0.1 * k3 + 0.0))
    assert policy_loss_items(mask, "token-mean") == 2
    assert_close(metrics["kl/mean"], scalar(k3))


# --- tables and errors ---------------------------------------------------------------------

def test_the_tables_name_the_variants():
    assert POLICY_LOSSES == {"ppo_clip": ppo_policy_loss, "policy_gradient": policy_gradient_loss}
    assert set(KL_ESTIMATORS) == {"k1", "k2", "k3"}


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"ppo_policy_loss: expected \(B, T\) tensors of one shape.*advantages \(4,\)"):
        ppo_policy_loss(PPO_LOGPS, PPO_OLD, PPO_ADV[0], PPO_MASK, clip_range=0.2)
    with pytest.raises(ValueError, match=r"clip_range must be in \(0, 1\)"):
        ppo_policy_loss(PPO_LOGPS, PPO_OLD, PPO_ADV, PPO_MASK, clip_range=0.0)
    with pytest.raises(ValueError, match="aggregation must be one of"):
        value_loss(PPO_LOGPS, PPO_OLD, PPO_ADV, PPO_MASK, clip_range=0.2, aggregation="mean")
    with pytest.raises(ValueError, match="coef must be >= 0"):
        grpo_kl_term(PPO_LOGPS, PPO_OLD, PPO_MASK, -0.1)
    with pytest.raises(ValueError, match="policy_loss_items: aggregation must be one of"):
        policy_loss_items(PPO_MASK, "mean")
