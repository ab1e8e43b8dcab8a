"""Rollouts with vLLM on a GPU, behind the same interface as `HFRolloutEngine`.

vLLM runs in the training process ("colocated") and shares the GPU: `gpu_memory_utilization`
caps its share (weights + KV cache). Before each rollout the policy's current weights are
copied into vLLM's model: with LoRA the adapters are merged into the base weights for the copy
and unmerged right after, so vLLM always serves one plain model and needs no LoRA support.

vLLM samples with its own kernels, so its log-probs are never used for training: the trainer
recomputes them with the policy in torch (at the same temperature), as for the HF engine.
A vLLM seed is drawn from torch's RNG for every rollout, so a resumed run samples the same
responses as an uninterrupted one on the same machine.

vLLM is optional (`pip install "alignloop[vllm]"`, CUDA only): this module imports it only when an
engine is built, so importing the module costs nothing where vLLM is absent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

from alignloop.engine.rollout import Rollout, SamplingConfig, eos_token_ids
from alignloop.errors import UserError
from alignloop.models import resolve_model_source

PEFT_PREFIX = "base_model.model."


class VLLMUnavailableError(RuntimeError, UserError):
    """sampling.engine is 'vllm' but vLLM cannot run here."""


def vllm_parameter_name(name: str) -> str | None:
    """The name vLLM's `load_weights` expects for a (possibly peft-wrapped) parameter of the
    policy, or None for a LoRA adapter tensor (merged into its base weight before the copy)."""
    if "lora_" in name or "modules_to_save" in name:
        return None
    if name.startswith(PEFT_PREFIX):
        name = name[len(PEFT_PREFIX) :]
    return name.replace(".base_layer.", ".")


def _import_vllm():
    if not torch.cuda.is_available():
        raise VLLMUnavailableError("sampling.engine=vllm needs a CUDA GPU; use sampling.engine=hf on this machine")
    try:
        import vllm  # lazy: optional, CUDA-only dependency
    except ImportError:
        raise VLLMUnavailableError(
            'sampling.engine=vllm but vLLM is not installed: pip install "alignloop[vllm]" (CUDA only)'
        ) from None
    return vllm


class VLLMRolloutEngine:
    """Call it with the policy to sync weights; then `generate` like `HFRolloutEngine`."""

    def __init__(self, model_name: str, tokenizer, sampling: SamplingConfig, max_model_len: int,
                 gpu_memory_utilization: float = 0.3, seed: int = 0):
        vllm = _import_vllm()
        model_path = resolve_model_source(model_name)  # a built-in name becomes its prepared folder
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.llm = vllm.LLM(model=model_path, gpu_memory_utilization=gpu_memory_utilization,
                            max_model_len=max_model_len, seed=seed, enable_prefix_caching=True)
        self.eos_ids: set[int] = set()

    def __call__(self, policy: torch.nn.Module) -> "VLLMRolloutEngine":
        """Copy the policy's current weights into vLLM; returns self (a `make_engine` for the methods)."""
        self.eos_ids = eos_token_ids(policy, self.tokenizer)
        runner_model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        with _merged_adapters(policy):
            for name, tensor in _named_weights(policy):
                runner_model.load_weights([(name, tensor)])
        self.llm.reset_prefix_cache()  # cached prefixes were computed with the old weights
        return self

    @torch.no_grad()
    def generate(self, prompt_ids: Sequence[list[int]], *, seed: int | None = None,
                 record_logprobs: bool = False) -> Rollout:
        """`record_logprobs` is not honoured: vLLM samples from its own copy of the weights, so
        the methods compute the policy's log-probs themselves."""
        from vllm import SamplingParams, TokensPrompt  # lazy: optional, CUDA-only dependency

        s = self.sampling
        base_seed = seed if seed is not None else int(torch.randint(0, 2**31 - 1, ()))
        params = [
            SamplingParams(
                temperature=s.temperature, top_p=s.top_p, top_k=s.top_k if s.top_k > 0 else -1,
                max_tokens=s.max_new_tokens, min_tokens=s.min_new_tokens, seed=base_seed + i,
                stop_token_ids=sorted(self.eos_ids),
            )
            for i in range(len(prompt_ids))
        ]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids], params,
                                    use_tqdm=False)
        responses, finished = [], []
        for output in outputs:
            completion = output.outputs[0]
            tokens = list(completion.token_ids)
            done = bool(tokens) and tokens[-1] in self.eos_ids
            responses.append(tokens)
            finished.append(done)
        texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
        return Rollout([list(p) for p in prompt_ids], responses, finished, texts, s.temperature)


def _named_weights(policy: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    for name, param in policy.named_parameters():
        mapped = vllm_parameter_name(name)
        if mapped is not None:
            yield mapped, param.data


@contextlib.contextmanager
def _merged_adapters(policy: torch.nn.Module) -> Iterator[None]:
    """LoRA adapters folded into the base weights for the duration (a no-op without LoRA)."""
    lora = hasattr(policy, "merge_adapter")
    if lora:
        policy.merge_adapter()
    try:
        yield
    finally:
        if lora:
            policy.unmerge_adapter()
