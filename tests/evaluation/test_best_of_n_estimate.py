"""Best-of-n estimated from N samples: hand-computed weights, a brute force over every subset,
and the KL formula's values."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from alignloop.evaluation.best_of_n import best_of_n_kl, best_of_n_weights, expected_best_of_n


def test_the_weights_by_hand():
    # N = 4, n = 2: the favourite is kept whenever it is drawn (3 of the 6 pairs), the second
    # when drawn with one of the two below it (2 of 6), the third with the last (1 of 6).
    assert best_of_n_weights(4, 2).tolist() == [3 / 6, 2 / 6, 1 / 6, 0.0]
    assert best_of_n_weights(4, 1).tolist() == [0.25] * 4  # n = 1: a plain sample
    assert best_of_n_weights(4, 4).tolist() == [1.0, 0.0, 0.0, 0.0]  # n = N: always the favourite
    for samples, n in ((7, 3), (32, 5), (64, 64)):
        assert math.isclose(float(best_of_n_weights(samples, n).sum()), 1.0, rel_tol=1e-12)
    with pytest.raises(ValueError, match="1 <= n <= samples"):
        best_of_n_weights(4, 5)


def test_the_estimate_is_the_mean_over_every_subset():
    reward = torch.tensor([[0.3, -1.0, 2.0, 0.5, 0.5, 1.1], [0.0, 0.2, -0.4, 0.9, 1.5, -2.0]])
    gold = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [-1.0, 0.5, 0.25, 2.0, -3.0, 7.0]])
    for n in range(1, 7):
        brute = []
        for prompt in range(2):
            kept = [gold[prompt, max(subset, key=lambda i: (reward[prompt, i], -i))].item()  # ties: the earlier
                    for subset in itertools.combinations(range(6), n)]
            brute.append(sum(kept) / len(kept))
        torch.testing.assert_close(expected_best_of_n(reward, gold, n), torch.tensor(brute, dtype=torch.float64),
                                   atol=1e-12, rtol=1e-12)


def test_the_kl_of_best_of_n():
    assert best_of_n_kl(1) == 0.0
    assert math.isclose(best_of_n_kl(2), math.log(2) - 0.5)
    assert math.isclose(best_of_n_kl(32), math.log(32) - 31 / 32)
