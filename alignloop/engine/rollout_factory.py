"""The one place that picks a rollout engine: transformers `generate` (anywhere) or vLLM (CUDA)."""

from __future__ import annotations

import functools
from typing import Callable

from alignloop.engine.rollout import HFRolloutEngine, SamplingConfig
from alignloop.engine.vllm_rollout import VLLMRolloutEngine


def rollout_engine_factory(sampling: SamplingConfig, tokenizer, model_name: str, max_model_len: int,
                           seed: int = 0) -> Callable:
    """A `policy -> RolloutEngine` callable for the RL methods, which call it before each rollout
    so that sampling uses the weights being trained. HF wraps the live policy (no copy); vLLM
    is started once on `model_name`'s weights and receives the current weights on each call."""
    if sampling.engine == "vllm":
        return VLLMRolloutEngine(model_name, tokenizer, sampling, max_model_len,
                                 sampling.vllm_gpu_memory_utilization, seed)
    return functools.partial(HFRolloutEngine, tokenizer=tokenizer, sampling=sampling)
