"""`attn_implementation: auto`: matmul attention computes what SDPA computes (outputs and
gradients, with causal, padding and grouped-query masks) and is only chosen where it is faster."""

from __future__ import annotations

import json
import math
import types

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from alignloop.models import load_model_and_tokenizer
from alignloop import hardware
from alignloop.models.attention import matmul_attention, uses_matmul_attention



def padding_mask(lengths: list[int], width: int, left: bool) -> torch.Tensor:
    """(B, 1, T, T) boolean causal mask that also hides each row's padding (True = attend)."""
    keep = torch.zeros(len(lengths), width, dtype=torch.bool)
    for row, length in enumerate(lengths):
        if left:
            keep[row, width - length:] = True
        else:
            keep[row, :length] = True
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    return (causal[None] & keep[:, None, :])[:, None]


def qkv(batch: int, heads: int, kv_heads: int, width: int):
    torch.manual_seed(0)
    return [torch.randn(batch, h, width, 8, requires_grad=True) for h in (heads, kv_heads, kv_heads)]


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2)])
@pytest.mark.parametrize("mask", ["causal", "right", "left"])
def test_matmul_attention_matches_sdpa_outputs_and_gradients(heads, kv_heads, mask):
    width, lengths = 6, [6, 4, 2]
    attention_mask = None if mask == "causal" else padding_mask(lengths, width, left=mask == "left")
    real = torch.ones(3, width, dtype=torch.bool) if attention_mask is None else attention_mask[:, 0].any(-1)
    module = types.SimpleNamespace(is_causal=True, training=False, num_key_value_groups=heads // kv_heads)
    results = []
    for kernel in (matmul_attention, lambda *a, **k: sdpa_attention_forward(*a, **k)[0]):
        q, k, v = qkv(3, heads, kv_heads, width)
        out = kernel(module, q, k, v, attention_mask, scaling=0.3)  # (B, T, H, D)
        out[real].square().sum().backward()  # only real query rows are ever read
        results.append((out[real].detach(), q.grad, k.grad, v.grad))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_matmul_attention_only_up_to_the_crossover_this_machine_measured(monkeypatch):
    crossovers = {torch.float32: 128, torch.bfloat16: 192}
    monkeypatch.setattr(hardware, "matmul_attention_max_keys", crossovers.__getitem__)
    for dtype, longest in crossovers.items():
        short = torch.zeros(1, 1, longest, 8, dtype=dtype)
        long = torch.zeros(1, 1, longest + 1, 8, dtype=dtype)
        assert uses_matmul_attention(short, short)
        assert not uses_matmul_attention(long, long)  # the fused kernel: faster and O(T) memory
        with torch.no_grad():
            assert not uses_matmul_attention(short, short)  # generation and scoring keep SDPA
    float32 = torch.zeros(1, 1, 192, 8)
    assert not uses_matmul_attention(float32, float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # under autocast, the autocast dtype's crossover
        assert uses_matmul_attention(float32, float32)


def test_auto_is_the_default_and_never_reaches_a_saved_config(tiny_model_dir, tmp_path):
    model, _ = load_model_and_tokenizer(str(tiny_model_dir))
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    training = model(ids, attention_mask=mask).logits  # matmul attention (gradients recorded)
    model.config._attn_implementation = "sdpa"
    with torch.no_grad():
        reference = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(training[mask.bool()], reference[mask.bool()], rtol=1e-5, atol=1e-5)
    model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert "alignloop" not in json.dumps(saved)  # plain transformers can load it


def test_under_autocast_the_result_is_eager_attention_within_bf16_rounding():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, h, 5, 64, requires_grad=True) for h in (4, 2, 2))  # float32, as rotary leaves them
    module = types.SimpleNamespace(is_causal=True, training=False, num_key_value_groups=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = matmul_attention(module, q, k, v, None)
    assert out.dtype == torch.bfloat16
    (q_grad, k_grad, v_grad) = torch.autograd.grad(out.float().square().sum(), (q, k, v))
    assert q_grad.dtype == k_grad.dtype == v_grad.dtype == torch.float32  # back to the inputs' dtype

    # transformers' eager formula in float64: scaled scores, causal mask, softmax, weights @ v
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    kk, vv = (t.repeat_interleave(2, dim=1) for t in (k64, v64))
    scores = (q64 @ kk.transpose(2, 3) * 64**-0.5).masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), -math.inf)
    eager = (torch.softmax(scores, -1) @ vv).transpose(1, 2)
    eager_grads = torch.autograd.grad(eager.square().sum(), (q64, k64, v64))
    torch.testing.assert_close(out.double(), eager, rtol=0.02, atol=0.02)  # bf16 products: ~3 significant digits
    for ours, exact in zip((q_grad, k_grad, v_grad), eager_grads):
        assert (ours.double() - exact).norm() < 0.02 * exact.norm()


@pytest.mark.parametrize("attention, rotary_dtype_under_autocast", [("auto", torch.bfloat16), ("sdpa", torch.float32)])
def test_auto_makes_the_rotary_embedding_in_autocast_dtype(tiny_model_dir, attention, rotary_dtype_under_autocast):
    model, _ = load_model_and_tokenizer(str(tiny_model_dir), attn_implementation=attention)
    seen = []
    rotary = [m for m in model.modules() if type(m).__name__.endswith("RotaryEmbedding")]
    assert rotary
    rotary[0].register_forward_hook(lambda _, __, outputs: seen.append(outputs[0].dtype))  # after ours
    ids = torch.tensor([[5, 6, 7, 8]])
    model(ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(ids).logits
    assert seen == [torch.float32, rotary_dtype_under_autocast]
    assert torch.isfinite(logits).all()
