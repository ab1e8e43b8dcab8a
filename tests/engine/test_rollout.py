"""Rollouts: left padding does not change what a row generates; responses stop at EOS; on a
CPU that runs bf16 fast, under bf16 autocast, the policy samples from bf16 weights and keeps its
own; where bf16 is slow it samples from its own weights."""

from __future__ import annotations

import pytest
import torch

from alignloop import hardware
from alignloop.engine.rollout import GumbelMaxSampling, HFRolloutEngine, SamplingConfig, cut_at_eos, left_pad, sampling_dtype
from alignloop.models import LoraSettings, apply_lora, build_tiny_causal_lm


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


def test_gumbel_max_draws_each_token_with_its_softmax_probability():
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0, float("-inf")])
    draws = 200_000
    torch.manual_seed(0)
    picked = GumbelMaxSampling(0.7)(None, logits.expand(draws, -1)).argmax(-1)
    frequency = torch.bincount(picked, minlength=5).double() / draws
    expected = torch.softmax(logits.double() / 0.7, -1)
    # Five binomial standard errors: a wrong distribution (e.g. T ignored: 0.61 vs 0.73 for the
    # first token) is hundreds of them away.
    assert ((frequency - expected).abs() <= 5 * (expected * (1 - expected) / draws).sqrt() + 1e-12).all()
    assert frequency[4] == 0  # a masked token is never drawn


def test_generate_draws_first_tokens_from_the_models_tempered_softmax(smol_tokenizer):
    """Through transformers' generate: the mean log-probability of the drawn tokens is minus the
    entropy of softmax(logits / T), within 5 standard errors (the tiny model's distribution is
    nearly flat over 49k tokens, so a frequency table would be empty)."""
    model, tokenizer = build_tiny_causal_lm(smol_tokenizer, seed=1)
    prompt = [10, 11, 12]
    with torch.no_grad():
        log_probs = (model(torch.tensor([prompt])).logits[0, -1].double() / 0.7).log_softmax(-1)
    engine = HFRolloutEngine(model, tokenizer, SamplingConfig(temperature=0.7, max_new_tokens=1, min_new_tokens=1,
                                                              batch_size=2000))
    drawn = log_probs[torch.tensor([row[0] for row in engine.generate([prompt] * 4000, seed=0).response_ids])]
    entropy = -(log_probs.exp() * log_probs).sum()
    assert abs(drawn.mean() + entropy) <= 5 * drawn.std() / len(drawn) ** 0.5


def test_plain_sampling_uses_gumbel_max_and_truncated_sampling_transformers(smol_tokenizer):
    model, tokenizer = build_tiny_causal_lm(smol_tokenizer, seed=1)
    plain = HFRolloutEngine(model, tokenizer, SamplingConfig(temperature=0.7))._generation_kwargs(0)
    assert plain["do_sample"] is False and isinstance(plain["logits_processor"][0], GumbelMaxSampling)
    assert plain["logits_processor"][0].temperature == 0.7
    nucleus = HFRolloutEngine(model, tokenizer, SamplingConfig(temperature=0.7, top_p=0.9))._generation_kwargs(0)
    assert nucleus["do_sample"] is True and nucleus["top_p"] == 0.9 and "logits_processor" not in nucleus
    greedy = HFRolloutEngine(model, tokenizer, SamplingConfig(temperature=0.0))._generation_kwargs(0)
    assert greedy["do_sample"] is False and "logits_processor" not in greedy


BF16_FAST = hardware.PrecisionChoice("bf16", "bf16 autocast: an AMX CPU", 6.0)
BF16_SLOW = hardware.PrecisionChoice("no", "float32: an AVX2 CPU", 1 / 40)


@pytest.fixture
def bf16_is_fast(monkeypatch):
    monkeypatch.setattr(hardware, "auto_precision", lambda *args: BF16_FAST)


def test_sampling_precision_picks_bf16_on_the_cpu_under_bf16_autocast_only(bf16_is_fast):
    cpu = torch.device("cpu")
    assert sampling_dtype("auto", cpu) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert sampling_dtype("auto", cpu) == torch.bfloat16
        assert sampling_dtype("model", cpu) is None
    with torch.autocast("cpu", dtype=torch.float16):
        assert sampling_dtype("auto", cpu) is None
    assert sampling_dtype("bf16", cpu) == torch.bfloat16
    assert sampling_dtype("auto", torch.device("cuda")) is None  # a GPU keeps the caller's autocast


def test_sampling_precision_auto_keeps_the_weights_where_bf16_is_slow_even_under_bf16_autocast(monkeypatch):
    monkeypatch.setattr(hardware, "auto_precision", lambda *args: BF16_SLOW)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert sampling_dtype("auto", torch.device("cpu")) is None
        assert sampling_dtype("bf16", torch.device("cpu")) == torch.bfloat16  # as asked


@pytest.mark.parametrize("precision, sampled_in", [("auto", torch.bfloat16), ("model", torch.float32)])
def test_lora_policy_samples_in_bf16_under_bf16_autocast_and_keeps_its_weights(smol_tokenizer, bf16_is_fast, precision,
                                                                               sampled_in):
    model = apply_lora(build_tiny_causal_lm(smol_tokenizer, seed=1)[0], LoraSettings(r=4, dropout=0.0))
    weights = {name: (p, p.detach().clone()) for name, p in model.named_parameters()}
    head_dtypes = []
    model.get_output_embeddings().register_forward_hook(lambda m, *_: head_dtypes.append(m.weight.dtype))
    engine = HFRolloutEngine(model, smol_tokenizer, SamplingConfig(max_new_tokens=4, min_new_tokens=4, precision=precision))
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rollout = engine.generate([[10, 11], [12]], seed=0)
    assert set(head_dtypes) == {sampled_in}
    assert [len(r) for r in rollout.response_ids] == [4, 4]
    assert model.training  # the training mode is back
    for name, p in model.named_parameters():  # the same float32 tensors, bit for bit
        assert p is weights[name][0] and torch.equal(p, weights[name][1]), name


def lora_policy_in_float64(smol_tokenizer):
    """A tiny LoRA policy whose adapters are not zero (merged weights differ from the base's)."""
    model = apply_lora(build_tiny_causal_lm(smol_tokenizer, seed=1)[0], LoraSettings(r=4, dropout=0.0)).double()
    torch.manual_seed(5)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.5)
    return model


def test_recorded_logprobs_are_the_policys_own_in_float64(smol_tokenizer):
    """The sampler's log-probs of the tokens it drew (LoRA merged, KV cache, left padding, two
    chunks, responses cut at EOS) equal a fresh forward pass of the policy (LoRA as adapters,
    right padding, the tempered softmax) to float64 rounding."""
    from alignloop.engine.rollout import rollout_batch
    from alignloop.models.forward import response_logits

    model = lora_policy_in_float64(smol_tokenizer)
    sampling = SamplingConfig(temperature=0.7, max_new_tokens=6, batch_size=3)
    engine = HFRolloutEngine(model, smol_tokenizer, sampling)
    engine.eos_ids = set(range(3, len(smol_tokenizer), 8))  # an eighth of the tokens end a reply: some end early
    rollout = engine.generate([[10, 11], [12], [13, 14, 15], [16], [17, 18]], seed=0, record_logprobs=True)
    assert [len(lp) for lp in rollout.logprobs] == [len(r) for r in rollout.response_ids]
    assert any(len(r) < 6 for r in rollout.response_ids)
    with torch.no_grad():
        logits, targets = response_logits(model, rollout_batch(rollout, smol_tokenizer.pad_token_id))  # (N, V), (N,)
    computed = torch.log_softmax(logits.double() / 0.7, dim=-1).gather(-1, targets[:, None]).squeeze(-1)
    recorded = torch.tensor([value for row in rollout.logprobs for value in row], dtype=torch.float64)
    assert (computed < -1).all()  # real log-probs over a large vocabulary, not zeros
    # Float64 throughout: the two differ only by the order of operations (~1e-15).
    assert torch.allclose(recorded, computed, rtol=0, atol=1e-10)


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_prompts_repeated_for_a_group_are_computed_once_and_sample_what_each_row_alone_would(
        smol_tokenizer, monkeypatch, temperature):
    """K replies per prompt: the prompt's forward pass runs once for its distinct rows (here 3
    of 7, of different lengths, in any order) and the replies, their EOS and their log-probs
    are those of sampling every row's prompt in full, to float64 rounding."""
    import alignloop.engine.rollout as rollout_module

    model = lora_policy_in_float64(smol_tokenizer)
    engine = HFRolloutEngine(model, smol_tokenizer, SamplingConfig(temperature=temperature, max_new_tokens=6))
    engine.eos_ids = set(range(3, len(smol_tokenizer), 8))  # some replies end early
    prompts = [[10, 11, 12], [10, 11, 12], [13], [20, 21], [10, 11, 12], [13], [20, 21]]
    prefilled_rows = []
    real_cache = rollout_module.shared_prompt_cache

    def counting_cache(model, chunk, input_ids, attention_mask):
        cache = real_cache(model, chunk, input_ids, attention_mask)
        prefilled_rows.append(None if cache is None else len({tuple(p) for p in chunk}))
        return cache

    monkeypatch.setattr(rollout_module, "shared_prompt_cache", counting_cache)
    shared = engine.generate(prompts, seed=4, record_logprobs=True)
    monkeypatch.setattr(rollout_module, "shared_prompt_cache", lambda *args: None)
    in_full = engine.generate(prompts, seed=4, record_logprobs=True)
    assert prefilled_rows == [3]
    assert shared.response_ids == in_full.response_ids and shared.finished == in_full.finished
    assert any(len(r) < 6 for r in shared.response_ids)
    if temperature > 0:  # a group's replies differ: each row drew its own tokens from the shared prompt
        assert len(set(map(tuple, shared.response_ids))) > 3
    flat = [torch.tensor([v for row in rollout.logprobs for v in row], dtype=torch.float64) for rollout in (shared, in_full)]
    assert torch.allclose(flat[0], flat[1], rtol=0, atol=1e-10)  # float64: the order of operations only


@pytest.mark.parametrize("settings", [{"min_new_tokens": 4}, {"top_k": 5}, {"temperature": 0.0}])
def test_recorded_logprobs_are_the_models_own_softmax_whatever_generate_masks(smol_tokenizer, settings):
    """A minimum length masks EOS, top-k truncates, greedy takes the argmax: the log-probs kept
    are still those of the model's own (tempered; T = 1 for greedy) softmax, as the methods'
    forward pass computes them."""
    from alignloop.engine.rollout import rollout_batch
    from alignloop.models.forward import response_logits

    model = lora_policy_in_float64(smol_tokenizer)
    sampling = SamplingConfig(**{"temperature": 0.7, "max_new_tokens": 4, **settings})
    rollout = HFRolloutEngine(model, smol_tokenizer, sampling).generate([[10, 11], [12]], seed=0, record_logprobs=True)
    with torch.no_grad():
        logits, targets = response_logits(model, rollout_batch(rollout, smol_tokenizer.pad_token_id))
    computed = torch.log_softmax(logits.double() / (sampling.temperature or 1.0), -1).gather(-1, targets[:, None])
    recorded = torch.tensor([value for row in rollout.logprobs for value in row], dtype=torch.float64)
    assert torch.allclose(recorded, computed.squeeze(-1), rtol=0, atol=1e-10)


def test_logprobs_are_not_recorded_unless_asked_or_from_a_sampling_copy(smol_tokenizer, bf16_is_fast):
    model = apply_lora(build_tiny_causal_lm(smol_tokenizer, seed=1)[0], LoraSettings(r=4, dropout=0.0))
    sampling = SamplingConfig(temperature=0.7, max_new_tokens=3)
    engine = HFRolloutEngine(model, smol_tokenizer, sampling)
    assert engine.generate([[10, 11]], seed=0).logprobs is None
    assert len(engine.generate([[10, 11]], seed=0, record_logprobs=True).logprobs) == 1
    with torch.autocast("cpu", dtype=torch.bfloat16):  # samples from a bf16 copy: not the policy's weights
        assert engine.generate([[10, 11]], seed=0, record_logprobs=True).logprobs is None
    output, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    assert not output._forward_hooks and not embeddings._forward_pre_hooks  # the recorder's hooks are gone
