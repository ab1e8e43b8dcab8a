"""Rollouts: the policy writes responses to a batch of prompts.

Generation runs through Hugging Face `generate` with the KV cache, prompts left-padded so that
every row's next token is at the same column (transformers derives position ids from the
attention mask, so padding does not shift positions). Each response is cut after its first
end-of-sequence token; a response that never emitted one is marked unfinished, so the RL step
can penalise it.

On a CPU under bf16 mixed precision that runs bf16 fast, the policy samples from a bf16 copy of
its (LoRA-merged) weights, made once per rollout (`SamplingConfig.precision`); training keeps
its own weights.

Plain sampling (no top-k / top-p) draws each token with the Gumbel-max trick instead of
transformers' softmax + multinomial: the same distribution, drawn in half the time on a CPU
(`GumbelMaxSampling`: rollouts 9-13 % faster).

Rows that repeat a prompt (GRPO / RLOO groups, K candidates, K evaluation samples) share its
forward pass: `shared_prompt_cache` computes each distinct prompt once and hands `generate` the
cache laid out per row, which then runs only the last prompt token and the new ones. On a
2-core AVX2-only AMD EPYC in float32, the built-in model, the demo's prompts (48-63 tokens),
32 new tokens: 64 rows (16 prompts x 4) 16.5-17.2 -> 13.1 s, and 10.9-11.3 s as one batch of
64; 192 rows (48 x 4, batches of 96) 52.2 -> 29.7 s; 320 rows (40 x 8, batches of 120) 80.0 ->
48.4 s, 39.5 s in batches of 160. `benchmarks/rl_step_vs_trl.py`'s GRPO step (4 prompts of
42-52 tokens x 4, 48 new tokens, batch 16) did not change measurably: decoding dominates it.

The sampler's temperature is recorded with the rollout: the log-probs used for training must
be computed from logits divided by the same temperature, or the "old" policy of PPO is not the
policy that sampled, and the measured KL to the reference can even go negative.

Asked to (`generate(..., record_logprobs=True)`), the engine also keeps each drawn token's
log-probability under the model's own tempered softmax, read from its logits as `generate`
computes them (before any processor masks or truncates them, as the methods' own forward pass
would compute it). Where the sampler runs the policy's own weights, those are the policy's
log-probs at sampling time, which the methods then need not compute again
(`OnlineRL.sampling_logps`).

`RolloutEngine` is the interface; `HFRolloutEngine` the implementation that works everywhere;
`vllm_rollout.VLLMRolloutEngine` the same interface on vLLM for GPU machines;
`rollout_factory.rollout_engine_factory` picks one from the sampling config. `rollout_batch`
turns a rollout into the token batch the methods score.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

import torch
from pydantic import Field, model_validator
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList

from alignloop import hardware
from alignloop.config import Section
from alignloop.data import DataError, EncodedExample, IGNORE_INDEX, pad_batch
from alignloop.data.prompts import PromptDataConfig
from alignloop.models.inference import weights_in_dtype
from alignloop.models.lora import lora_merged_for_inference
from alignloop.ops import on_grid


class SamplingConfig(Section):
    temperature: float = Field(1.0, ge=0, description="softmax temperature; 0 means greedy decoding")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling: keep the smallest set with this mass")
    top_k: int = Field(0, ge=0, description="keep only the k most likely tokens (0: no limit)")
    max_new_tokens: int = Field(64, ge=1, description="longest response in tokens")
    min_new_tokens: int = Field(0, ge=0, description="EOS is suppressed before this many tokens (benchmarks: fixed lengths)")
    batch_size: int = Field(16, ge=1, description="prompts generated for together")
    engine: Literal["hf", "vllm"] = Field("hf", description="hf (transformers generate, anywhere) or vllm (CUDA, optional extra)")
    precision: Literal["auto", "bf16", "model"] = Field(
        "auto", description="hf: weights to sample with: bf16 (a bf16 copy), model (the weights as they are), or "
        "auto (bf16 on a CPU under bf16 mixed precision whose probe found bf16 fast; else as they are)"
    )
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, lt=1, description="vllm: share of GPU memory for vLLM (weights + KV cache)")

    @model_validator(mode="after")
    def _lengths_in_order(self) -> "SamplingConfig":
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"min_new_tokens ({self.min_new_tokens}) must not exceed max_new_tokens ({self.max_new_tokens})")
        return self


@dataclass(frozen=True)
class Rollout:
    """Responses to a batch of prompts (row i answers prompt_ids[i])."""

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]  # up to and including the first EOS
    finished: list[bool]  # whether the response ended with EOS (else it hit max_new_tokens)
    texts: list[str]  # decoded responses without special tokens
    temperature: float
    # Per response token, log softmax(logits / temperature) of the token drawn, where the
    # engine recorded it (see the module docstring); None elsewhere.
    logprobs: list[list[float]] | None = None


class RolloutEngine(Protocol):
    def generate(self, prompt_ids: Sequence[list[int]], *, seed: int | None = None,
                 record_logprobs: bool = False) -> Rollout:
        """One response per prompt (repeat a prompt K times for K samples); with
        `record_logprobs`, the drawn tokens' log-probs where the engine can tell them (else
        `Rollout.logprobs` stays None and the caller computes them)."""


def left_pad(rows: Sequence[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) with every row's last token in the last column."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids, mask


def cut_at_eos(tokens: list[int], eos_ids: set[int]) -> tuple[list[int], bool]:
    """The response up to and including its first EOS, and whether there was one."""
    for index, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[: index + 1], True
    return tokens, False


def eos_token_ids(model, tokenizer) -> set[int]:
    """Every id that ends a turn: the tokenizer's EOS and the generation config's (chat models
    often list the end-of-turn token there)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return ids


def cpu_autocast_off(device: torch.device):
    """Sampling on a CPU runs in the weights' own precision even inside a bf16 autocast block.

    Decoding multiplies a few rows at a time: on the CPU, casting the weights to bf16 for every
    product costs more than AMX saves (the built-in model with merged LoRA: 16 prompts × 48 tokens
    in 8.7 s under autocast, 6.3 s without, on a 2-core AMX Xeon). A bf16 copy of the weights,
    made once per rollout, is faster still (`sampling_dtype`). On a GPU the caller's autocast
    stays in force.
    """
    if device.type != "cpu":
        return contextlib.nullcontext()
    return torch.autocast("cpu", enabled=False)


def sampling_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype to sample in under `SamplingConfig.precision`, or None for the weights as they are.

    `auto` picks bf16 where the caller trains in bf16 mixed precision on a CPU that runs bf16
    fast (AMX: 3.7 s instead of 5.7 s for the built-in model's rollout above, see
    `alignloop.models.inference`). Where bf16 is emulated (AVX2 only, ~40x slower products)
    `auto` samples from the weights as they are, even under an explicit bf16 autocast.
    """
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        if torch.get_autocast_dtype("cpu") != torch.bfloat16:
            return None
        return torch.bfloat16 if hardware.auto_precision("cpu").precision == "bf16" else None
    return None


class DrawnLogprobs:
    """Records, while `generate` runs, log softmax(logits / T) of each token drawn, from the
    model's own logits: a hook on the output layer keeps each step's last-position log-softmax
    until a hook on the input embeddings sees the next step's input, the token drawn from it
    (the last token drawn is read from the finished sequences). One (B, V) row block is held at
    a time."""

    def __init__(self, model, temperature: float):
        self.temperature = temperature
        self._steps: list[torch.Tensor] = []  # (B,) log-prob of each step's drawn token
        self._pending: torch.Tensor | None = None  # (B, V) the last step's, its token not yet seen
        self._hooks = [model.get_output_embeddings().register_forward_hook(self._logits),
                       model.get_input_embeddings().register_forward_pre_hook(self._next_input)]

    def _logits(self, module, inputs, logits: torch.Tensor) -> None:
        last = logits[:, -1]
        last = last.to(torch.promote_types(last.dtype, torch.float32))  # the model's precision, float32 at least
        self._pending = torch.log_softmax(last / self.temperature, dim=-1)

    def _next_input(self, module, inputs) -> None:
        self._keep_drawn(inputs[0][:, -1])

    def _keep_drawn(self, tokens: torch.Tensor) -> None:
        if self._pending is not None:
            self._steps.append(self._pending.gather(-1, tokens[:, None].to(self._pending.device)).squeeze(-1))
            self._pending = None

    def __enter__(self) -> "DrawnLogprobs":
        return self

    def __exit__(self, *exc) -> None:
        for hook in self._hooks:
            hook.remove()

    def drawn(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """(B, steps) log-probs of the (B, steps) tokens `generate` returned."""
        if new_tokens.shape[1]:
            self._keep_drawn(new_tokens[:, -1])
        return torch.stack(self._steps, dim=-1) if self._steps else torch.zeros(new_tokens.shape)


def recorded_logps(rollout: Rollout, mask: torch.Tensor, model) -> torch.Tensor | None:
    """(R, T-1) the rollout's recorded log-probs laid on the response grid `mask`, where they
    stand for `model`'s own: recorded (from its weights, not a sampling copy), a model in full
    precision (float32 or float64) and no autocast on `mask`'s device now, so that a forward
    pass of `model` would compute the same figures up to the order of float operations (merged
    LoRA, the KV cache). None otherwise: compute them."""
    full_precision = getattr(model, "dtype", None) in (torch.float32, torch.float64)
    if rollout.logprobs is None or not full_precision or torch.is_autocast_enabled(mask.device.type):
        return None
    return on_grid(torch.tensor([value for row in rollout.logprobs for value in row], device=mask.device), mask)


class GumbelMaxSampling(LogitsProcessor):
    """Makes greedy decoding draw from softmax(logits / T): argmax_i(l_i / T + g_i), with g_i
    independent standard Gumbel noise, is token i with exactly that probability (the Gumbel-max
    trick). It runs last among the processors, after any that mask tokens (-inf stays -inf).

    Why: on a CPU, torch.multinomial over a 49k-token vocabulary draws one exponential variate
    per token with a slow generator. The built-in model, 32 rows, one step: softmax + multinomial
    60 ms, uniform noise + two logs + argmax 29 ms (2-core AVX2 EPYC, torch 2.13), of a ~330 ms
    decoding step. Whole rollouts of 32 tokens, medians of 3: 32 rows 17.95 s -> 16.48 s (1.09x),
    96 rows 44.3 s -> 39.3 s (1.13x).
    """

    def __init__(self, temperature: float):
        if not temperature > 0:
            raise ValueError(f"Gumbel-max sampling needs a temperature > 0, got {temperature}")
        self.temperature = temperature

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        uniform = torch.rand(scores.shape, device=scores.device).clamp_(min=torch.finfo(torch.float32).tiny)
        gumbel = uniform.log_().neg_().log_().neg_()  # -log(-log u)
        return gumbel.add_(scores.float(), alpha=1.0 / self.temperature)  # in place: one vocabulary-wide buffer


def shared_prompt_cache(model, chunk: Sequence[list[int]], input_ids: torch.Tensor,
                        attention_mask: torch.Tensor) -> DynamicCache | None:
    """The KV cache of each row's prompt but its last token, computed once per distinct prompt
    and laid out for every row, or None where no prompt repeats (or prompts are one token).

    GRPO, RLOO, candidate generation and evaluation sample K replies per prompt; `generate`
    would run each prompt's forward pass K times. Given this cache it runs only the last
    prompt token and the new ones (transformers' prompt-cache reuse). Positions follow
    `generate`'s own rule for left-padded rows, so the cache holds what it would have computed.
    """
    distinct: dict[tuple[int, ...], int] = {}
    row_of = [distinct.setdefault(tuple(prompt), len(distinct)) for prompt in chunk]
    if len(distinct) == len(chunk) or input_ids.shape[1] < 2:
        return None
    firsts = torch.tensor([row_of.index(number) for number in range(len(distinct))], device=input_ids.device)
    ids, mask = input_ids[firsts, :-1], attention_mask[firsts, :-1]
    positions = (mask.long().cumsum(-1) - 1).masked_fill_(mask == 0, 1)
    cache = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=DynamicCache(),
                  use_cache=True, logits_to_keep=1).past_key_values
    cache.reorder_cache(torch.tensor(row_of, device=input_ids.device))  # one row per reply
    return cache


class HFRolloutEngine:
    """Batched sampling with transformers' `generate` (CPU or GPU). It records the drawn tokens'
    log-probs, when asked, where the sampler runs the model's own weights (see the module
    docstring)."""

    def __init__(self, model, tokenizer, sampling: SamplingConfig):
        self.model = model
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.eos_ids = eos_token_ids(model, tokenizer)

    @torch.no_grad()
    def generate(self, prompt_ids: Sequence[list[int]], *, seed: int | None = None,
                 record_logprobs: bool = False) -> Rollout:
        if seed is not None:
            torch.manual_seed(seed)
        responses: list[list[int]] = []
        finished: list[bool] = []
        logprobs: list[list[float]] = []
        with self._sampling_mode() as (device, own_weights):
            records = own_weights and record_logprobs
            for start in range(0, len(prompt_ids), self.sampling.batch_size):
                chunk = prompt_ids[start : start + self.sampling.batch_size]
                for tokens, token_logprobs in self._generate_chunk(chunk, device, records):
                    response, done = cut_at_eos(tokens, self.eos_ids)
                    responses.append(response)
                    finished.append(done)
                    logprobs.append(token_logprobs[: len(response)])
        texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
        return Rollout([list(p) for p in prompt_ids], responses, finished, texts, self.sampling.temperature,
                       logprobs if records else None)

    @contextlib.contextmanager
    def _sampling_mode(self):
        """Once per rollout, not per chunk: no dropout, LoRA merged, no CPU autocast, the weights
        in the sampling dtype; yields the model's device and whether the weights are the model's
        own (no sampling copy in another dtype), and restores the training mode and the weights
        even if sampling fails."""
        device = next(self.model.parameters()).device
        dtype = sampling_dtype(self.sampling.precision, device)  # before autocast is switched off
        was_training = self.model.training
        self.model.eval()
        try:
            with lora_merged_for_inference(self.model, dtype), weights_in_dtype(self.model, dtype), \
                    cpu_autocast_off(device):
                yield device, dtype is None
        finally:
            self.model.train(was_training)

    def _generate_chunk(self, chunk: Sequence[list[int]], device: torch.device,
                        records: bool) -> list[tuple[list[int], list[float]]]:
        """(new tokens, their log-probs if `records`, else []) of each row."""
        pad_id = self.tokenizer.pad_token_id
        input_ids, attention_mask = (tensor.to(device) for tensor in left_pad(chunk, pad_id))
        kwargs = self._generation_kwargs(pad_id)
        shared = shared_prompt_cache(self.model, chunk, input_ids, attention_mask)
        if shared is not None:
            kwargs["past_key_values"] = shared
        recording = DrawnLogprobs(self.model, self.sampling.temperature or 1.0) if records else contextlib.nullcontext()
        with recording:
            output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        new_tokens = output[:, input_ids.shape[1] :]
        logprobs = recording.drawn(new_tokens).tolist() if records else [[]] * len(new_tokens)
        return list(zip(new_tokens.tolist(), logprobs))

    def _generation_kwargs(self, pad_id: int) -> dict:
        s = self.sampling
        sample = s.temperature > 0
        kwargs = {
            "max_new_tokens": s.max_new_tokens,
            "min_new_tokens": s.min_new_tokens,
            "do_sample": sample,
            "pad_token_id": pad_id,
            "eos_token_id": sorted(self.eos_ids),
            "use_cache": True,
        }
        if sample and s.top_p == 1.0 and s.top_k == 0:
            # Greedy over Gumbel-perturbed logits: plain sampling, its draw in half the time on a CPU.
            kwargs.update(do_sample=False, logits_processor=LogitsProcessorList([GumbelMaxSampling(s.temperature)]))
        elif sample:
            # top_k=0 must be passed: None would fall back to the generation config default (50).
            kwargs.update(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
        return kwargs


def check_context_fits(model, data: PromptDataConfig, sampling: SamplingConfig) -> None:
    """Prompt + response must fit the model's positions, or generation fails deep inside torch."""
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if context is not None and data.max_prompt_length + sampling.max_new_tokens > context:
        raise DataError(
            f"data.max_prompt_length ({data.max_prompt_length}) + sampling.max_new_tokens "
            f"({sampling.max_new_tokens}) exceeds the model's context of {context} tokens; lower one of them"
        )


def rollout_batch(rollout: Rollout, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Prompt + response rows with labels on the response only (the tokens to score), and
    `prefix_groups` (R,) numbering runs of rows with the same prompt: the responses to one
    prompt, whose forward passes then compute the prompt once (models/padding_free.py)."""
    examples = [
        EncodedExample(prompt + response, [IGNORE_INDEX] * len(prompt) + response)
        for prompt, response in zip(rollout.prompt_ids, rollout.response_ids)
    ]
    batch = pad_batch(examples, pad_token_id)
    new_prompt = [i == 0 or prompt != rollout.prompt_ids[i - 1] for i, prompt in enumerate(rollout.prompt_ids)]
    batch["prefix_groups"] = torch.tensor(new_prompt, dtype=torch.long).cumsum(0) - 1  # (R,)
    return batch
