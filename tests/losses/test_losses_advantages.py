"""Advantage estimators against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from alignloop.losses import (
    ADVANTAGE_ESTIMATORS,
    gae,
    group_normalized_advantages,
    leave_one_out_advantages,
    per_token_rewards,
    whiten,
)

NAN = float("nan")


def rows(*values):
    return torch.tensor(values, dtype=torch.float64)


def vector(*values):
    return torch.tensor(values, dtype=torch.float64)


# --- GAE -----------------------------------------------------------------------------------

def test_gae_by_hand_gamma_one():
    rewards, values = rows([0.0, 0.0, 1.0]), rows([0.5, 0.2, 0.1])
    advantages, returns = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=0.95)
    # Backwards; the value after the last token is 0 (the episode ends there).
    delta_2 = 1.0 + 1.0 * 0.0 - 0.1  # 0.9
    a_2 = delta_2
    delta_1 = 0.0 + 1.0 * 0.1 - 0.2  # -0.1
    a_1 = delta_1 + 1.0 * 0.95 * a_2  # 0.755
    delta_0 = 0.0 + 1.0 * 0.2 - 0.5  # -0.3
    a_0 = delta_0 + 1.0 * 0.95 * a_1  # 0.41725
    assert_close(advantages, rows([a_0, a_1, a_2]))
    assert_close(returns, rows([a_0 + 0.5, a_1 + 0.2, a_2 + 0.1]))


def test_gae_by_hand_with_discount():
    advantages, _ = gae(rows([1.0, 2.0]), rows([0.5, 1.0]), torch.ones(1, 2), gamma=0.9, lam=0.5)
    a_1 = 2.0 + 0.9 * 0.0 - 1.0  # 1.0
    a_0 = (1.0 + 0.9 * 1.0 - 0.5) + 0.9 * 0.5 * a_1  # 1.4 + 0.45
    assert_close(advantages, rows([a_0, a_1]))


def test_gae_of_a_padded_row_equals_the_row_alone():
    rewards = rows([0.0, 0.0, 1.0], [0.5, 2.0, 7.0])
    values = rows([0.5, 0.2, 0.1], [0.3, 0.4, NAN])  # padding holds garbage
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.95)
    alone, alone_returns = gae(rows([0.5, 2.0]), rows([0.3, 0.4]), torch.ones(1, 2), gamma=0.9, lam=0.95)
    assert_close(advantages[1, :2], alone[0])
    assert_close(returns[1, :2], alone_returns[0])
    assert advantages[1, 2].item() == 0.0 and returns[1, 2].item() == 0.0
    # by hand too: a_1 = 2.0 - 0.4 = 1.6; a_0 = 0.5 + 0.9 * 0.4 - 0.3 + 0.9 * 0.95 * 1.6
    assert_close(alone, rows([0.5 + 0.9 * 0.4 - 0.3 + 0.9 * 0.95 * 1.6, 2.0 - 0.4]))
    first, _ = gae(rewards[:1], values[:1], mask[:1], gamma=0.9, lam=0.95)
    assert_close(advantages[0], first[0])  # rows do not mix


def test_gae_returns_detached_targets():
    values = rows([0.5, 0.2]).requires_grad_()
    advantages, returns = gae(rows([0.0, 1.0]), values, torch.ones(1, 2), gamma=1.0, lam=1.0)
    assert not advantages.requires_grad and not returns.requires_grad


# --- whitening -----------------------------------------------------------------------------

def test_whiten_by_hand_over_masked_entries_only():
    values = rows([1.0, 2.0, 3.0], [4.0, NAN, 100.0])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    # masked entries 1, 2, 3, 4: mean 2.5, variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25
    std = math.sqrt(1.25 + 1e-8)
    whitened = whiten(values, mask)
    assert_close(whitened, rows([-1.5 / std, -0.5 / std, 0.5 / std], [1.5 / std, 0.0, 0.0]))
    kept = whitened[mask.bool()]
    assert_close(kept.mean(), torch.tensor(0.0, dtype=torch.float64))
    assert_close(kept.std(unbiased=False), torch.tensor(1.0, dtype=torch.float64))


def test_whiten_without_shifting_keeps_the_mean():
    values, mask = vector(1.0, 2.0, 3.0, 4.0), torch.ones(4)
    std = math.sqrt(1.25 + 1e-8)
    expected = vector(-1.5 / std + 2.5, -0.5 / std + 2.5, 0.5 / std + 2.5, 1.5 / std + 2.5)
    assert_close(whiten(values, mask, shift_mean=False), expected)


def test_whiten_of_an_empty_or_constant_mask_is_finite():
    assert whiten(vector(1.0, 2.0), torch.zeros(2)).tolist() == [0.0, 0.0]
    assert whiten(vector(3.0, 3.0), torch.ones(2)).tolist() == [0.0, 0.0]


# --- group baselines -----------------------------------------------------------------------

GROUP_REWARDS = vector(1.0, 2.0, 3.0, 0.0, 0.0, 6.0)  # two groups of three


def test_group_normalisation_by_hand():
    # group 1: mean 2, sample std sqrt((1 + 0 + 1) / 2) = 1; group 2: mean 2, sqrt((4 + 4 + 16) / 2) = sqrt(12)
    advantages = group_normalized_advantages(GROUP_REWARDS, 3)
    s1, s2 = 1.0 + 1e-6, math.sqrt(12) + 1e-6
    assert_close(advantages, vector(-1 / s1, 0 / s1, 1 / s1, -2 / s2, -2 / s2, 4 / s2))


def test_dr_grpo_only_centres():
    centred = group_normalized_advantages(GROUP_REWARDS, 3, scale_by_std=False)
    assert_close(centred, vector(-1.0, 0.0, 1.0, -2.0, -2.0, 4.0))


def test_a_group_of_equal_rewards_has_no_signal():
    assert group_normalized_advantages(vector(0.5, 0.5, 1.0, 0.0), 2).tolist()[:2] == [0.0, 0.0]


def test_leave_one_out_by_hand():
    assert_close(
        leave_one_out_advantages(GROUP_REWARDS, 3),
        vector(
            1.0 - (2.0 + 3.0) / 2, 2.0 - (1.0 + 3.0) / 2, 3.0 - (1.0 + 2.0) / 2,
            0.0 - (0.0 + 6.0) / 2, 0.0 - (0.0 + 6.0) / 2, 6.0 - (0.0 + 0.0) / 2,
        ),
    )


# --- the KL-shaped reward ------------------------------------------------------------------

def test_per_token_rewards_put_the_score_at_the_last_real_token():
    scores = vector(2.0, -1.0, 5.0)
    kl = rows([0.1, 0.2, 0.3], [0.4, 0.5, NAN], [NAN, NAN, NAN])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    rewards = per_token_rewards(scores, kl, mask, kl_coef=0.5)
    assert_close(
        rewards,
        rows(
            [-0.5 * 0.1, -0.5 * 0.2, -0.5 * 0.3 + 2.0],
            [-0.5 * 0.4, -0.5 * 0.5 + -1.0, 0.0],
            [0.0, 0.0, 0.0],  # no real token: nowhere to put the score
        ),
    )


# --- table and errors ----------------------------------------------------------------------

def test_the_table_names_the_estimators():
    assert ADVANTAGE_ESTIMATORS == {
        "gae": gae,
        "grpo": group_normalized_advantages,
        "rloo": leave_one_out_advantages,
    }


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="do not split into groups of 4"):
        group_normalized_advantages(GROUP_REWARDS, 4)
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        leave_one_out_advantages(GROUP_REWARDS, 1)
    with pytest.raises(ValueError, match=r"gae: expected \(B, T\) tensors"):
        gae(vector(1.0, 2.0), vector(1.0, 2.0), torch.ones(2), gamma=1.0, lam=1.0)
    with pytest.raises(ValueError, match=r"lam must be in \[0, 1\]"):
        gae(rows([1.0]), rows([1.0]), torch.ones(1, 1), gamma=1.0, lam=1.5)
    with pytest.raises(ValueError, match="2 scores for 3 rows"):
        per_token_rewards(vector(1.0, 2.0), torch.zeros(3, 2), torch.ones(3, 2), kl_coef=0.1)
