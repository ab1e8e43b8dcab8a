"""Rollouts: left padding does not change what a row generates; responses stop at EOS."""

from __future__ import annotations


from alignloop.engine.rollout import HFRolloutEngine, SamplingConfig, cut_at_eos, left_pad
from alignloop.models import build_tiny_causal_lm


def test_left_pad_aligns_the_last_tokens():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_token_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_cut_at_eos_keeps_the_eos_and_reports_unfinished():
    assert cut_at_eos([4, 5, 2, 9, 9], {2}) == ([4, 5, 2], True)
    assert cut_at_eos([4, 5, 6], {2}) == ([4, 5, 6], False)


def test_greedy_rows_are_the_same_alone_and_in_a_padded_batch(smol_tokenizer):
    model, tokenizer = build_tiny_causal_lm(smol_tokenizer, seed=1)
    engine = HFRolloutEngine(model, tokenizer, SamplingConfig(temperature=0.0, max_new_tokens=6, batch_size=8))
    short, long = [10, 11], [20, 21, 22, 23, 24]
    together = engine.generate([short, long])
    alone = [engine.generate([short]).response_ids[0], engine.generate([long]).response_ids[0]]
    assert together.response_ids == alone
    assert together.prompt_ids == [short, long] and together.temperature == 0.0
    assert all(len(r) <= 6 for r in together.response_ids)


def test_sampling_is_reproducible_with_a_seed_and_marks_finished_rows(smol_tokenizer):
    model, tokenizer = build_tiny_causal_lm(smol_tokenizer, seed=1)
    engine = HFRolloutEngine(model, tokenizer, SamplingConfig(temperature=1.0, top_k=0, max_new_tokens=5))
    first = engine.generate([[10, 11]] * 4, seed=3)
    second = engine.generate([[10, 11]] * 4, seed=3)
    assert first.response_ids == second.response_ids
    for response, done in zip(first.response_ids, first.finished):
        assert done == (response[-1] in engine.eos_ids)
        assert len(response) <= 5
    assert len(first.texts) == 4
