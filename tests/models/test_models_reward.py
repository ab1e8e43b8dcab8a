"""RewardModel and score_texts: head initialisation, scores read at the last real token whatever
the padding or batch, normalisation, LoRA trainability and gradient flow."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from alignloop.data.encode import encode_prompt_response
from alignloop.data.schemas import Message
from alignloop.losses.reward import ordinal_log_probs
from alignloop.models import (
    LoraSettings,
    RewardModel,
    RewardScorer,
    build_reward_model,
    build_tiny_causal_lm,
    init_reward_head,
    is_lora_model,
    score_texts,
)
from alignloop.models.reward_model import last_token_indices, positions_from_mask

PROMPTS = [
    "What is the capital of France?",
    "Hi",
    [{"role": "user", "content": "Name a colour."}],
    "Write one word about the sea, please, and keep it short.",
    "Why?",
]
RESPONSES = ["Paris.", "Hello! How can I help you today?", "Blue", "Waves", "Because the sky scatters blue light."]


@pytest.fixture(scope="module")
def reward_model(smol_tokenizer):
    backbone, _ = build_tiny_causal_lm(smol_tokenizer, seed=1)
    return RewardModel(backbone).eval()


def _encoded(tokenizer, count=3):
    """Token ids as score_texts builds them (it accepts dict messages; encode_prompt_response wants Message)."""
    rows = []
    for prompt, response in zip(PROMPTS[:count], RESPONSES[:count]):
        prompt = prompt if isinstance(prompt, str) else [Message(**m) for m in prompt]
        rows.append(sum(encode_prompt_response(tokenizer, prompt, response), []))
    return rows


def _padded(rows, pad_id, side):
    longest = max(map(len, rows))
    ids = torch.full((len(rows), longest), pad_id)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(0, len(row)) if side == "right" else slice(longest - len(row), longest)
        ids[i, span], mask[i, span] = torch.tensor(row), 1
    return ids, mask


def _scored_one_by_one(model, rows):
    return torch.cat([model(torch.tensor([row]), torch.ones(1, len(row), dtype=torch.long)) for row in rows])


def test_head_init_follows_ziegler_et_al():
    d_model = 4095  # big enough that the sample std is within 3 % of the true one
    head = init_reward_head(nn.Linear(d_model, 1))
    assert head.weight.std().item() == pytest.approx(1 / (d_model + 1) ** 0.5, rel=0.05)
    assert abs(head.weight.mean().item()) < 3 / d_model  # ~ 3 standard errors of the mean
    assert torch.equal(head.bias, torch.zeros(1))


def test_model_parts(reward_model):
    assert reward_model.hidden_size == 64
    assert reward_model.head.weight.dtype == torch.float32
    assert reward_model.rating_thresholds is None
    assert reward_model.normalization == (0.0, 1.0)


def test_rating_thresholds_start_increasing_and_uniform(smol_tokenizer):
    model = RewardModel(build_tiny_causal_lm(smol_tokenizer)[0], num_rating_classes=5)
    thresholds = model.rating_thresholds
    assert thresholds.requires_grad and thresholds.shape == (4,)
    assert bool((thresholds[1:] > thresholds[:-1]).all())
    probs = ordinal_log_probs(torch.zeros(1), thresholds.detach()).exp()  # at score 0: uniform
    torch.testing.assert_close(probs, torch.full((1, 5), 0.2))
    with pytest.raises(ValueError, match="at least 2"):
        RewardModel(build_tiny_causal_lm(smol_tokenizer)[0], num_rating_classes=1)


def test_mask_helpers_for_both_padding_sides():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_indices(mask).tolist() == [2, 4, 4]
    assert positions_from_mask(mask).tolist() == [[0, 1, 2, 2, 2], [0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


def test_score_is_the_same_alone_right_padded_and_left_padded(reward_model, smol_tokenizer):
    rows = _encoded(smol_tokenizer)
    assert len({len(row) for row in rows}) == 3, "the rows should need padding"
    with torch.no_grad():
        alone = _scored_one_by_one(reward_model, rows)
        right = reward_model(*_padded(rows, smol_tokenizer.pad_token_id, "right"))
        left = reward_model(*_padded(rows, smol_tokenizer.pad_token_id, "left"))
    assert right.shape == (3,) and right.dtype == torch.float32
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(left, alone, atol=1e-5, rtol=0)
    assert alone.std() > 0  # different texts, different scores


def test_left_padding_with_absolute_positions(smol_tokenizer):
    # RoPE (the Llama above) hardly notices shifted positions; GPT-2's learned absolute
    # positions do, so this checks that positions really come from the attention mask.
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=32, bos_token_id=0, eos_token_id=0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = RewardModel(GPT2LMHeadModel(config)).eval()
    rows = [[1, 2, 3, 4, 5, 6, 7], [8, 9, 10]]
    with torch.no_grad():
        alone = _scored_one_by_one(model, rows)
        left = model(*_padded(rows, 0, "left"))
    torch.testing.assert_close(left, alone, atol=1e-5, rtol=0)


def test_scores_do_not_depend_on_batch_size(reward_model, smol_tokenizer):
    by_size = [score_texts(reward_model, smol_tokenizer, PROMPTS, RESPONSES, batch_size=n) for n in (1, 2, 5)]
    for scores in by_size[1:]:
        assert scores == pytest.approx(by_size[0], abs=1e-5)
    scorer = RewardScorer(reward_model, smol_tokenizer, batch_size=2)
    assert scorer(PROMPTS, RESPONSES) == pytest.approx(by_size[0], abs=1e-5)
    assert score_texts(reward_model, smol_tokenizer, [], []) == []
    with pytest.raises(ValueError, match="5 prompts but 4 responses"):
        score_texts(reward_model, smol_tokenizer, PROMPTS, RESPONSES[:4])


def test_replies_to_one_prompt_are_scored_together_with_the_prompt_computed_once(tiny_model_dir, smol_tokenizer):
    from alignloop.models import load_model_and_tokenizer

    reward_model = RewardModel(load_model_and_tokenizer(str(tiny_model_dir))[0]).eval()  # alignloop's attention
    prompts = [PROMPTS[0], PROMPTS[3]] * 3  # interleaved: the scorer brings each prompt's replies together
    responses = ["Paris", "Waves", "Lyon", "Foam", "Nice", "Salt"]  # no two share a first token
    alone = score_texts(reward_model, smol_tokenizer, prompts, responses, batch_size=1)
    computed = []
    embeddings = reward_model.backbone.get_input_embeddings()
    hook = embeddings.register_forward_hook(lambda module, args, out: computed.append(args[0].numel()))
    try:
        together = score_texts(reward_model, smol_tokenizer, prompts, responses, batch_size=6)
    finally:
        hook.remove()
    assert together == pytest.approx(alone, abs=1e-5)  # in the caller's order
    rows = [sum(encode_prompt_response(smol_tokenizer, p, r), []) for p, r in zip(prompts, responses)]
    prompt_lengths = [len(encode_prompt_response(smol_tokenizer, p, "x")[0]) for p in (PROMPTS[0], PROMPTS[3])]
    assert computed == [sum(map(len, rows)) - 2 * sum(prompt_lengths)]  # each prompt once, not three times


def test_max_length_keeps_the_end_of_the_text(reward_model, smol_tokenizer):
    row = _encoded(smol_tokenizer, 1)[0]
    with torch.no_grad():
        expected = reward_model(torch.tensor([row[-5:]]), torch.ones(1, 5, dtype=torch.long))
    got = score_texts(reward_model, smol_tokenizer, PROMPTS[:1], RESPONSES[:1], max_length=5, normalize=False)
    assert got == pytest.approx(expected.tolist(), abs=1e-5)


def test_normalisation_applies_in_score_texts_not_in_forward(smol_tokenizer):
    model = RewardModel(build_tiny_causal_lm(smol_tokenizer, seed=2)[0]).eval()
    ids, mask = _padded(_encoded(smol_tokenizer), smol_tokenizer.pad_token_id, "right")
    with torch.no_grad():
        raw = model(ids, mask)
        model.set_normalization(2.0, 4.0)
        assert torch.equal(model(ids, mask), raw)
    model.train()
    normalized = score_texts(model, smol_tokenizer, PROMPTS[:3], RESPONSES[:3])
    assert normalized == pytest.approx(((raw - 2.0) / 4.0).tolist(), abs=1e-5)
    unnormalized = score_texts(model, smol_tokenizer, PROMPTS[:3], RESPONSES[:3], normalize=False)
    assert unnormalized == pytest.approx(raw.tolist(), abs=1e-5)
    assert model.training, "score_texts restores the previous mode"
    with pytest.raises(ValueError, match="std > 0"):
        model.set_normalization(0.0, 0.0)


def test_head_runs_in_float32_under_autocast_and_with_a_bf16_backbone(reward_model, smol_tokenizer):
    ids, mask = _padded(_encoded(smol_tokenizer), smol_tokenizer.pad_token_id, "left")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert reward_model(ids, mask).dtype == torch.float32
    bf16_model = RewardModel(build_tiny_causal_lm(smol_tokenizer, seed=1)[0].to(torch.bfloat16)).eval()
    assert bf16_model.head.weight.dtype == torch.float32
    with torch.no_grad():
        assert bf16_model(ids, mask).dtype == torch.float32


def test_lora_reward_model_trains_adapters_and_head_only(tiny_model_dir, smol_tokenizer):
    model, tokenizer = build_reward_model(str(tiny_model_dir), lora=LoraSettings(r=4, dropout=0.0))
    assert is_lora_model(model.backbone) and model.base_model_name == str(tiny_model_dir)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert "head.weight" in trainable and "head.bias" in trainable
    assert all(name.startswith("head.") or "lora_" in name for name in trainable)
    assert any("lora_" in name for name in trainable)

    with torch.no_grad():  # B starts at zero, which would leave A without a gradient
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(generator=torch.Generator().manual_seed(0))
    model.train()
    model(*_padded(_encoded(tokenizer), tokenizer.pad_token_id, "left")).sum().backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and g.abs().sum() > 0 for name, g in grads.items() if name.startswith("head."))
    assert any("lora_A" in name and g is not None and g.abs().sum() > 0 for name, g in grads.items())
    assert any("lora_B" in name and g is not None and g.abs().sum() > 0 for name, g in grads.items())


def test_full_reward_model_gradient_reaches_backbone_and_thresholds(smol_tokenizer):
    from alignloop.losses.reward import rating_ordinal

    model = RewardModel(build_tiny_causal_lm(smol_tokenizer, seed=4)[0], num_rating_classes=3).train()
    scores = model(*_padded(_encoded(smol_tokenizer), smol_tokenizer.pad_token_id, "right"))
    loss_sum, _ = rating_ordinal(scores, torch.tensor([0, 1, 2]), model.rating_thresholds)
    loss_sum.backward()
    assert model.head.weight.grad.abs().sum() > 0
    assert model.rating_threshold_first.grad.abs().sum() > 0
    assert model.rating_threshold_gaps.grad.abs().sum() > 0
    assert model.backbone.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_rating_thresholds_stay_increasing_whatever_the_parameters(smol_tokenizer):
    model = RewardModel(build_tiny_causal_lm(smol_tokenizer, seed=4)[0], num_rating_classes=5)
    with torch.no_grad():
        model.rating_threshold_gaps.fill_(-30.0)  # an optimiser pushing the gaps far negative
    thresholds = model.rating_thresholds
    assert thresholds.shape == (4,) and bool((thresholds[1:] > thresholds[:-1]).all())


def test_mean_pooling_scores_the_average_of_the_response_states(smol_tokenizer):
    """A float64 backbone's final hidden states averaged by hand over the response tokens, then
    the head; score_texts (shared prompts, padding) must give the same scores. The head runs in
    float32 by design, so the tolerance is float32's: |score| ~ 1 from H = 64 products,
    a few ulps (1e-7) each, with room for another summation order."""
    backbone, _ = build_tiny_causal_lm(smol_tokenizer, seed=3)
    model = RewardModel(backbone.double(), pooling="mean").eval()
    pairs = [encode_prompt_response(smol_tokenizer, p if isinstance(p, str) else [Message(**m) for m in p], r)
             for p, r in zip(PROMPTS[:3], RESPONSES[:3])]
    expected = []
    for prompt_ids, response_ids in pairs:
        with torch.no_grad():
            states = backbone(torch.tensor([prompt_ids + response_ids]), output_hidden_states=True).hidden_states[-1][0]
            pooled = states[len(prompt_ids):].mean(0)  # (H,) over the response's tokens only
            expected.append(float(pooled @ model.head.weight[0].double() + model.head.bias.double()))
    got = score_texts(model, smol_tokenizer, PROMPTS[:3], RESPONSES[:3], normalize=False, batch_size=3)
    assert got == pytest.approx(expected, abs=2e-6)
    last_token = RewardModel(backbone, pooling="last").eval()
    last_token.load_state_dict(model.state_dict())
    assert score_texts(last_token, smol_tokenizer, PROMPTS[:3], RESPONSES[:3], normalize=False) != pytest.approx(got, abs=1e-3)
    with pytest.raises(ValueError, match="needs the response_mask"):
        model(torch.tensor([sum(pairs[0], [])]), torch.ones(1, len(sum(pairs[0], [])), dtype=torch.long))


def test_pooling_is_saved_with_the_reward_model_and_refused_by_the_classifier_export(tmp_path, smol_tokenizer):
    from alignloop.models import ModelLoadError, export_sequence_classifier, load_reward_model, save_reward_model

    model = RewardModel(build_tiny_causal_lm(smol_tokenizer, seed=4)[0], pooling="mean").eval()
    save_reward_model(model, tmp_path / "rm", smol_tokenizer)
    loaded, _ = load_reward_model(tmp_path / "rm")
    assert loaded.pooling == "mean"
    assert score_texts(loaded, smol_tokenizer, PROMPTS[:2], RESPONSES[:2]) == pytest.approx(
        score_texts(model, smol_tokenizer, PROMPTS[:2], RESPONSES[:2]), abs=1e-6)
    with pytest.raises(ModelLoadError, match="pooling 'mean' has no transformers sequence-classifier form"):
        export_sequence_classifier(loaded, smol_tokenizer, tmp_path / "hf")
    with pytest.raises(ValueError, match="pooling must be one of"):
        RewardModel(build_tiny_causal_lm(smol_tokenizer, seed=4)[0], pooling="max")


def test_feature_layers_score_each_layers_normalised_mean_side_by_side(smol_tokenizer):
    """A float64 backbone's embeddings (layer 0) and final hidden states (layer 2 of the tiny
    model's 2), each token RMS-normalised by hand, averaged over the response, side by side,
    then the head; score_texts (shared prompts, padding: the packed forward) must agree to
    float32's ulps, as in the mean-pooling test above."""
    backbone, _ = build_tiny_causal_lm(smol_tokenizer, seed=3)
    model = RewardModel(backbone.double(), pooling="mean", feature_layers=[0, 2]).eval()
    assert model.hidden_size == 2 * backbone.config.hidden_size and model.feature_layers == (0, 2)
    pairs = [encode_prompt_response(smol_tokenizer, p if isinstance(p, str) else [Message(**m) for m in p], r)
             for p, r in zip(PROMPTS[:3], RESPONSES[:3])]
    expected = []
    for prompt_ids, response_ids in pairs:
        with torch.no_grad():
            states = backbone(torch.tensor([prompt_ids + response_ids]), output_hidden_states=True).hidden_states
            pooled = []
            for layer in (0, 2):
                response = states[layer][0, len(prompt_ids):]  # (R, H)
                rms = (response.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()
                pooled.append((response / rms).mean(0))
            feature = torch.cat(pooled)  # (2H,)
            expected.append(float(feature @ model.head.weight[0].double() + model.head.bias.double()))
    got = score_texts(model, smol_tokenizer, PROMPTS[:3], RESPONSES[:3], normalize=False, batch_size=3)
    assert got == pytest.approx(expected, abs=2e-6)
    one_layer = RewardModel(backbone, pooling="mean").eval()  # the last layer, not normalised again
    with torch.no_grad():
        one_layer.head.weight.copy_(model.head.weight[:, backbone.config.hidden_size:])
    assert score_texts(one_layer, smol_tokenizer, PROMPTS[:3], RESPONSES[:3], normalize=False) != pytest.approx(
        got, abs=1e-3)


def test_feature_layers_are_saved_checked_and_refused_by_the_classifier_export(tmp_path, smol_tokenizer):
    from alignloop.errors import UserError
    from alignloop.models import ModelLoadError, export_sequence_classifier, load_reward_model, save_reward_model

    model = RewardModel(build_tiny_causal_lm(smol_tokenizer, seed=4)[0], feature_layers=[1, 0]).eval()
    save_reward_model(model, tmp_path / "rm", smol_tokenizer)
    loaded, _ = load_reward_model(tmp_path / "rm")
    assert loaded.feature_layers == (1, 0) and loaded.pooling == "last"
    assert score_texts(loaded, smol_tokenizer, PROMPTS[:2], RESPONSES[:2]) == pytest.approx(
        score_texts(model, smol_tokenizer, PROMPTS[:2], RESPONSES[:2]), abs=1e-6)
    with pytest.raises(ModelLoadError, match=r"reading layers \[1, 0\] has no transformers sequence-classifier"):
        export_sequence_classifier(loaded, smol_tokenizer, tmp_path / "hf")
    for wrong in ([0, 3], [1, 1], [-1]):
        with pytest.raises(UserError, match=r"reward.feature_layers: .* from 0 \(the token embeddings\) to 2"):
            RewardModel(build_tiny_causal_lm(smol_tokenizer, seed=4)[0], feature_layers=wrong)
