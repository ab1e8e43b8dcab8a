"""The vLLM engine's parts that run without a GPU: weight names and the error on a CPU machine."""

from __future__ import annotations

import pytest
import torch

from alignloop.engine.rollout import SamplingConfig
from alignloop.engine.rollout_factory import rollout_engine_factory
from alignloop.engine.vllm_rollout import VLLMUnavailableError, vllm_parameter_name
from alignloop.models import LoraSettings, apply_lora, build_tiny_causal_lm


def test_peft_names_map_to_the_plain_model_and_adapters_are_skipped(smol_tokenizer):
    model, _ = build_tiny_causal_lm(smol_tokenizer)
    plain = {name for name, _ in model.named_parameters()}
    lora = apply_lora(model, LoraSettings(r=2, alpha=4, dropout=0.0, target_modules="all-linear"))
    mapped = {vllm_parameter_name(name) for name, _ in lora.named_parameters()} - {None}
    assert mapped == plain  # every base weight once, under the name vLLM's loader expects
    assert vllm_parameter_name("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight") is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only error")
def test_asking_for_vllm_without_a_gpu_is_a_clear_error(smol_tokenizer):
    with pytest.raises(VLLMUnavailableError, match="needs a CUDA GPU; use sampling.engine=hf"):
        rollout_engine_factory(SamplingConfig(engine="vllm"), smol_tokenizer, "unused", 512)


def test_min_new_tokens_cannot_exceed_max_new_tokens():
    with pytest.raises(ValueError, match="min_new_tokens"):
        SamplingConfig(min_new_tokens=10, max_new_tokens=5)
