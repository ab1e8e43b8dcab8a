"""Reward-model metrics against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from alignloop.evaluation.reward_metrics import expected_calibration_error, kendall_tau_b, pairwise_accuracy


def test_pairwise_accuracy_counts_strict_wins():
    assert pairwise_accuracy([2.0, 1.0, 0.0, 3.0], [1.0, 1.0, 1.0, 0.0]) == 0.5


def test_calibration_of_a_perfectly_calibrated_and_an_overconfident_model():
    # Margin 0: p = 0.5 both ways, outcomes 1 and 0 in the same bin -> perfectly calibrated.
    assert expected_calibration_error([0.0], [0.0]) == pytest.approx(0.0)
    # Margin ln 3: p = 0.75 for the real order (outcome 1), 0.25 for the swapped (outcome 0).
    # Bins [0.7, 0.8) and [0.2, 0.3) each hold one point: |0.75 - 1| and |0.25 - 0|, half weight each.
    assert expected_calibration_error([math.log(3.0)], [0.0]) == pytest.approx(0.25)
    # A wrong, confident pair: p = 0.25 for an order that happened: |0.25 - 1| and |0.75 - 0|.
    assert expected_calibration_error([0.0], [math.log(3.0)]) == pytest.approx(0.75)


def test_kendall_tau_b_by_hand():
    assert kendall_tau_b([3.0, 2.0, 1.0], [1, 2, 3]) == pytest.approx(1.0)
    assert kendall_tau_b([1.0, 2.0, 3.0], [1, 2, 3]) == pytest.approx(-1.0)
    # Pairs (0,1) concordant, (0,2) concordant, (1,2) discordant: (2 - 1) / 3.
    assert kendall_tau_b([3.0, 1.0, 2.0], [1, 2, 3]) == pytest.approx(1 / 3)
    # Ranks tie items 1 and 2: n0 = 3 pairs, one tied in ranks; C = 2, D = 0, tau-b = 2 / sqrt(3 * 2).
    assert kendall_tau_b([3.0, 2.0, 1.0], [1, 2, 2]) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(kendall_tau_b([1.0, 1.0], [1, 1]))
