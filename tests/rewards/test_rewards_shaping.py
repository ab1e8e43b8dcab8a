"""Reward shaping against values worked out by hand."""

from __future__ import annotations

import math
import statistics

import pytest

from alignloop.rewards import RunningMoments, clip_rewards, normalize_rewards, penalize_unfinished


def test_penalize_unfinished_subtracts_or_replaces():
    rewards, finished = [1.0, 2.0, -0.5], [True, False, False]
    assert penalize_unfinished(rewards, finished, 1.5) == [1.0, 0.5, -2.0]
    assert penalize_unfinished(rewards, finished, 1.5, mode="replace") == [1.0, -1.5, -1.5]
    assert penalize_unfinished(rewards, [True] * 3, 1.5) == rewards
    with pytest.raises(ValueError, match="2 finished flags"):
        penalize_unfinished(rewards, [True, False], 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        penalize_unfinished(rewards, finished, -1.0)


def test_clip_rewards():
    assert clip_rewards([-3.0, -0.5, 0.0, 2.0, 7.0], 2.0) == [-2.0, -0.5, 0.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="bound"):
        clip_rewards([1.0], 0.0)


def test_running_moments_over_batches_equal_moments_of_the_concatenation():
    first, second, third = [1.0, 2.0, 4.0], [10.0, -3.0], [0.5]
    moments = RunningMoments()
    for batch in (first, second, [], third):
        moments.update(batch)
    everything = first + second + third
    assert moments.count == 6
    assert moments.mean == pytest.approx(statistics.fmean(everything))
    assert moments.std == pytest.approx(statistics.stdev(everything))  # sample std (n - 1)
    # by hand: mean 14.5 / 6; squared deviations sum to 107.375 - 6 * (14.5 / 6) ** 2
    assert moments.var == pytest.approx((sum(x * x for x in everything) - 14.5**2 / 6) / 5)


def test_running_moments_stay_accurate_far_from_zero():
    moments = RunningMoments()
    for start in range(0, 1000, 10):
        moments.update([1e9 + x for x in range(start, start + 10)])
    assert moments.mean == pytest.approx(1e9 + 499.5)
    assert moments.std == pytest.approx(statistics.stdev(range(1000)), rel=1e-9)


def test_running_moments_state_round_trips():
    moments = RunningMoments()
    moments.update([1.0, 5.0, 6.0])
    restored = RunningMoments()
    restored.load_state_dict(moments.state_dict())
    assert (restored.count, restored.mean, restored.m2) == (moments.count, moments.mean, moments.m2)
    with pytest.raises(ValueError, match="finite"):
        moments.update([math.nan])


def test_normalize_rewards_uses_the_running_moments():
    moments = RunningMoments()
    moments.update([0.0, 4.0])  # mean 2, sample std sqrt(8)
    # The batch [2, 6] is folded in first: values 0, 4, 2, 6 -> mean 3, sample std sqrt(20 / 3).
    std = math.sqrt(20 / 3)
    assert normalize_rewards([2.0, 6.0], moments) == pytest.approx([(2 - 3) / std, (6 - 3) / std])
    assert normalize_rewards([3.0], moments, update=False, center=False) == pytest.approx([3 / std])
    assert moments.count == 4


def test_normalize_rewards_leaves_the_scale_while_std_is_zero():
    moments = RunningMoments()
    assert normalize_rewards([5.0], moments) == [0.0]
    assert normalize_rewards([5.0], moments, update=False, center=False) == [5.0]
