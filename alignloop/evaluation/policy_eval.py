"""`alignloop eval`: a trained policy next to its reference on held-out prompts.

Both models answer every held-out prompt `samples_per_prompt` times with the same sampling
settings and the same seeds (batch k of both is drawn after `torch.manual_seed(seed + k)`), so
what differs between the two columns comes from the weights, not from the dice. Response j of
the policy and response j of the reference answer the same prompt: every comparison is paired.

Measured, for each model: the score of every reward source (learned reward model and gold
scorers: toxicity, sentiment, functions, ...), the raw toxicity probability when a toxicity source
is among them, response length in tokens, the share of responses that ended with EOS, distinct-1/2
and the share of wordless responses (`diversity`); between them: the win rate of the policy per
source (win + ½ tie over all pairs) and the KL of the policy to the reference — per response,
the summed log π − log π_ref of the policy's own sampled tokens at the sampling temperature, a
one-sample estimate of KL(π || π_ref) for that prompt (as in `benchmarks/heldout_reward.py` and the RL methods' logs).
Reward-hacking warnings come from `hacking`. The result is the eval.json the loop and the report
read (its keys are listed in `evaluate`).

The policy is a model (built-in name, folder, hub id) or a LoRA adapter folder such as the
`final/` of `alignloop ppo | grpo | dpo`: the adapter is loaded on the base model it names
(`adapter_base_model`: the built-in for one trained on a built-in, else `adapter_config.json`'s
base), or on `reference` when that base is not found here. The reference
defaults to the policy's base with the adapters switched off (no second copy in memory).
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator
from rich.console import Console

from alignloop.config import ConfigError, Section
from alignloop.engine.progress import TrainingProgress
from alignloop.data.prompts import PromptDataConfig, PromptItem, read_prompts
from alignloop.engine.rollout import (HFRolloutEngine, Rollout, SamplingConfig, check_context_fits, recorded_logps,
                                     rollout_batch)
from alignloop.evaluation.diversity import distinct_scores, wordless_rate
from alignloop.evaluation.hacking import MONITOR_ROLE, REWARD_MODEL_ROLE, eval_warnings, standard_error
from alignloop.hardware import resolve_weight_dtype
from alignloop.models import (
    ModelConfig,
    ModelLoadError,
    adapter_base_model,
    builtin_model_dir,
    disable_dropout,
    is_builtin,
    load_model_and_tokenizer,
    load_saved_adapter,
    resolve_model_source,
)
from alignloop.models.forward import response_token_logps
from alignloop.models.reference import reference_network
from alignloop.ops import IGNORE_INDEX, shifted_targets
from alignloop.rewards import RewardSource, RewardSourceConfig, build_reward_source, toxicity_probability

__all__ = ["EvalConfig", "PolicySpec", "ModelPlan", "plan_models", "evaluate", "win_counts", "mean_and_se", "source_role"]

TIE_TOLERANCE = 1e-6  # scores this close count as a tie (a reward model scores one text in different batches)


class PolicySpec(Section):
    """The model under evaluation."""

    name: str = Field(description="built-in name, model folder, hub id, or a LoRA adapter folder (e.g. runs/ppo/final)")
    adapter: str | None = Field(None, description="a LoRA adapter folder to load on `name` (then `name` is its base)")


class EvalConfig(Section):
    """What `alignloop eval` compares, on which prompts, scored by which sources."""

    policy: PolicySpec = Field(description="the policy: {name, adapter}, or just a name / adapter folder")
    reference: str | None = Field(
        None, description="the reference model (default: the policy's base with adapters off); also the base of an "
        "adapter whose own base model is not found here"
    )
    prompts: str = Field(description="held-out prompts (`prompt` records): JSONL / JSON / CSV / Parquet file, "
                                     "datasets folder (save_to_disk), or a hub dataset id (online)")
    split: str = Field("test", description="split of a DatasetDict folder or hub dataset that prompts names")
    name: str | None = Field(None, description="configuration name of a hub dataset (load_dataset's name)")
    samples_per_prompt: int = Field(4, ge=1, description="responses per prompt and model")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig,
                                     description="how both models sample (the same settings and seeds)")
    seed: int = Field(1234, description="sampling seed, shared by policy and reference")
    sources: list[RewardSourceConfig] = Field(
        [{"type": "toxicity"}, {"type": "sentiment"}], validate_default=True, min_length=1,
        description="reward sources to score with (e.g. reward_model, toxicity, sentiment); names must differ",
    )
    monitors: list[str] = Field(
        [], description="names of gold sources the reward model is not meant to raise (sentiment in a detox run): "
        "warned about only when they fall, not when they stay flat"
    )
    kl_bound: float | None = Field(10.0, gt=0, description="warn when the mean KL (nats per response) exceeds this")
    output: str = Field("eval.json", description="where eval.json is written")
    max_prompt_length: int = Field(256, ge=1, description="prompt tokens kept (longer prompts keep their end)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="precision of both models: auto (bfloat16 where this hardware runs it fast, see "
        "alignloop/hardware.py; else float32), float32, bfloat16, float16"
    )
    device: str = Field("auto", description="auto (CUDA if available, else CPU), cpu, cuda, cuda:1, ...")
    examples: int = Field(4, ge=0, description="prompts shown side by side in eval.json (first sample of each)")
    progress: bool = Field(True, description="show a progress bar")

    @field_validator("policy", mode="before")
    @classmethod
    def _a_name_alone(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value  # `policy=runs/ppo/final` on the command line

    @model_validator(mode="after")
    def _distinct_names_and_hf_sampling(self) -> EvalConfig:
        names = [source_name(source) for source in self.sources]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"sources: two sources are named {', '.join(map(repr, repeated))}; give each a `name`")
        learned = [source_name(source) for source in self.sources if source_role(source) == REWARD_MODEL_ROLE]
        gold = [name for name in names if name not in learned]
        for name in self.monitors:
            if name not in gold:
                raise ValueError(f"monitors: {name!r} is not one of the gold sources ({', '.join(gold)})")
        if self.sampling.engine != "hf":
            raise ValueError("sampling.engine: eval samples with transformers generate; set it to hf")
        return self


def source_name(source: RewardSourceConfig) -> str:
    return source.name or source.type


def source_role(source: RewardSourceConfig, monitors: Sequence[str] = ()) -> str:
    """"reward_model" for a learned reward model (or a mix holding one), "monitor" for a source
    named in `monitors`, else "gold"."""
    if source.type == "reward_model" or any(source_role(part) == REWARD_MODEL_ROLE for part in source.sources or []):
        return REWARD_MODEL_ROLE
    return MONITOR_ROLE if source_name(source) in monitors else "gold"


# ---------------------------------------------------------------------------- which models


@dataclass(frozen=True)
class ModelPlan:
    """What to load: the policy's base, the adapter on it (if any), and a separate reference
    model (None: the policy's own network, adapters off)."""

    base: str
    adapter: str | None
    reference: str | None


def _adapter_base(adapter: Path) -> str | None:
    """The base model an adapter folder names, if it can be found on this machine."""
    base = adapter_base_model(adapter)
    if base is None:
        return None
    try:
        resolve_model_source(base)
    except ModelLoadError:
        return None
    return base


def _same_model(a: str, b: str) -> bool:
    """Whether two names mean one model: equal, or the same folder (a built-in name means its
    cache folder, which adapters saved before alignloop_adapter.json recorded as their base)."""
    folders = [builtin_model_dir(name) if is_builtin(name) else Path(name) for name in (a, b)]
    return a == b or (all(f.is_dir() for f in folders) and folders[0].resolve() == folders[1].resolve())


def plan_models(config: EvalConfig) -> ModelPlan:
    """Resolve `policy` / `adapter` / `reference` into what `load_models` loads (see the module
    docstring); `config`: an EvalConfig, or any config with those two fields (best-of-n's)."""
    policy = config.policy
    if policy.adapter is not None:
        base, adapter = policy.name, policy.adapter
    elif (Path(policy.name) / "adapter_config.json").is_file():
        adapter = policy.name
        base = _adapter_base(Path(adapter)) or config.reference
        if base is None:
            raise ModelLoadError(
                f"policy {adapter!r} is a LoRA adapter whose base model (base_model_name_or_path in "
                f"{Path(adapter) / 'adapter_config.json'}) is not found here; set `reference` to the base model"
            )
    else:
        base, adapter = policy.name, None
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise ModelLoadError(f"adapter {adapter!r}: no adapter_config.json there (expected a saved LoRA adapter folder)")
    separate = config.reference is not None and not _same_model(config.reference, base)
    return ModelPlan(base, adapter, config.reference if separate else None)


def resolve_device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def load_models(plan: ModelPlan, dtype: str, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module | None, Any]:
    """(policy, separate reference or None, tokenizer), in eval mode with dropout off."""
    base, tokenizer = load_model_and_tokenizer(ModelConfig(name=plan.base, dtype=dtype))
    policy = load_saved_adapter(base, plan.adapter) if plan.adapter else base
    disable_dropout(policy.to(device).eval())
    if plan.reference is None:
        return policy, None, tokenizer
    reference, reference_tokenizer = load_model_and_tokenizer(ModelConfig(name=plan.reference, dtype=dtype))
    if reference_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ConfigError(
            f"reference {plan.reference!r} uses a different tokenizer from the policy's base {plan.base!r}; "
            "the KL between them needs the same tokens"
        )
    return policy, disable_dropout(reference.to(device).eval()), tokenizer


# ---------------------------------------------------------------------------- sampling and KL


def sample(model, tokenizer, prompt_ids: list[list[int]], sampling: SamplingConfig, seed: int,
           progress: TrainingProgress, record_logprobs: bool = False) -> Rollout:
    """One response per row; batch k drawn after `torch.manual_seed(seed + k)`, so two models
    sampled with the same arguments share their random numbers batch by batch. With
    `record_logprobs`, the drawn tokens' log-probs too (`HFRolloutEngine`)."""
    engine = HFRolloutEngine(model, tokenizer, sampling)
    parts = []
    for k, start in enumerate(range(0, len(prompt_ids), sampling.batch_size)):
        parts.append(engine.generate(prompt_ids[start : start + sampling.batch_size], seed=seed + k,
                                     record_logprobs=record_logprobs))
        progress.advance({})
    return Rollout(
        prompt_ids=[row for part in parts for row in part.prompt_ids],
        response_ids=[row for part in parts for row in part.response_ids],
        finished=[done for part in parts for done in part.finished],
        texts=[text for part in parts for text in part.texts],
        temperature=sampling.temperature,
        logprobs=(None if any(part.logprobs is None for part in parts)
                  else [row for part in parts for row in part.logprobs]),
    )


def kl_per_response(policy, reference, rollout: Rollout, pad_token_id: int, rows: int,
                    progress: TrainingProgress) -> list[float]:
    """Summed log π − log π_ref over each response's tokens (the policy's own samples; log π
    as the sampler recorded it where that stands for the policy's, `recorded_logps`)."""
    temperature = rollout.temperature or 1.0  # greedy decoding: the plain softmax
    tokens = rollout_batch(rollout, pad_token_id)
    device = next(policy.parameters()).device
    scored = (shifted_targets(tokens["labels"]) != IGNORE_INDEX).to(device)  # (R, T-1) the response tokens
    recorded = recorded_logps(rollout, scored, policy)
    kls: list[float] = []
    for start in range(0, len(rollout.texts), rows):
        chunk = {key: value[start : start + rows].to(device) for key, value in tokens.items()}
        if recorded is None:
            logps, mask, _ = response_token_logps(policy, chunk, temperature)  # (R, T-1)
        else:
            logps, mask = recorded[start : start + rows], scored[start : start + rows]
        with reference_network(policy, reference) as frozen:
            reference_logps, _, _ = response_token_logps(frozen, chunk, temperature)
        kls.extend(((logps - reference_logps) * mask).sum(-1).tolist())
        progress.advance({})
    return kls


# ---------------------------------------------------------------------------- statistics


def mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), standard_error(values)


def win_counts(policy: Sequence[float], reference: Sequence[float], tolerance: float = TIE_TOLERANCE) -> dict[str, Any]:
    """Policy vs reference response by response (higher is better): counts and
    rate = (win + ½ tie) / n, so 0.5 means no difference."""
    win = sum(p > r + tolerance for p, r in zip(policy, reference))
    loss = sum(p < r - tolerance for p, r in zip(policy, reference))
    tie = len(policy) - win - loss
    return {"win": win, "tie": tie, "loss": loss, "rate": (win + 0.5 * tie) / len(policy)}


def source_entry(role: str, policy: list[float], reference: list[float]) -> dict[str, Any]:
    (policy_mean, policy_se), (reference_mean, reference_se) = mean_and_se(policy), mean_and_se(reference)
    # Every reward source scores "higher = better" (the RewardSource contract); the key keeps
    # eval.json readable on its own.
    return {"role": role, "higher_is_better": True, "policy": policy, "reference": reference,
            "policy_mean": policy_mean, "policy_se": policy_se,
            "reference_mean": reference_mean, "reference_se": reference_se}


def reduction_of(policy_total: float, reference_total: float) -> float | None:
    """1 − policy / reference, for means or sums over as many replies each; None when the
    reference scores 0."""
    return 1.0 - policy_total / reference_total if reference_total > 0 else None


def relative_reduction(policy: Sequence[float], reference: Sequence[float]) -> float | None:
    """(mean reference − mean policy) / mean reference; None when the reference scores 0."""
    return reduction_of(statistics.fmean(policy), statistics.fmean(reference))


def reduction_interval(policy: Sequence[float], reference: Sequence[float], samples_per_prompt: int,
                       level: float = 0.95, resamples: int = 2000, seed: int = 0) -> list[float] | None:
    """The relative reduction's `level` percentile interval, by a bootstrap over prompts.

    Why it is reported: toxicity is carried by a few profane replies among many clean ones, so
    one evaluation's reduction moves a lot with the draw (one demo policy measured 58, 46 and 38 %
    under three evaluation seeds at 3 replies per prompt). Whole prompts are resampled, each with
    its `samples_per_prompt` consecutive replies from both models, because replies to one prompt
    are alike and the two models' replies share their random numbers; resampling replies one by
    one would make the interval too narrow. Every prompt has the same number of replies, so each
    resample's reduction is a ratio of sums. None for fewer than two prompts, or when no resample
    has a toxic reference reply."""
    n_prompts = len(reference) // samples_per_prompt
    if n_prompts < 2:
        return None
    sums = [(sum(policy[i * samples_per_prompt:(i + 1) * samples_per_prompt]),
             sum(reference[i * samples_per_prompt:(i + 1) * samples_per_prompt])) for i in range(n_prompts)]
    rng = random.Random(seed)
    reductions = []
    for _ in range(resamples):
        drawn = rng.choices(sums, k=n_prompts)
        reduction = reduction_of(sum(p for p, _ in drawn), sum(r for _, r in drawn))
        if reduction is not None:
            reductions.append(reduction)
    if not reductions:
        return None
    reductions.sort()
    tail = (1.0 - level) / 2
    return [reductions[int(tail * (len(reductions) - 1))], reductions[round((1.0 - tail) * (len(reductions) - 1))]]


def reduction_text(reduction: float, interval: Sequence[float] | None) -> str:
    """`58 % (95 % interval 45-68 %)`, or `58 %` when no interval was computed."""
    text = f"{100 * reduction:.0f} %"
    return text if not interval else f"{text} (95 % interval {100 * interval[0]:.0f}-{100 * interval[1]:.0f} %)"


def toxicity_block(policy_texts: list[str], reference_texts: list[str], samples_per_prompt: int) -> dict[str, Any]:
    """Raw toxicity probabilities (alt-profanity-check), the relative reduction (ref − pol) / ref
    and its 95 % bootstrap interval over prompts."""
    policy, reference = toxicity_probability(policy_texts), toxicity_probability(reference_texts)
    return {"policy": policy, "reference": reference, "policy_mean": statistics.fmean(policy),
            "reference_mean": statistics.fmean(reference), "relative_reduction": relative_reduction(policy, reference),
            "relative_reduction_interval": reduction_interval(policy, reference, samples_per_prompt)}


def prompt_text(prompt: Any) -> str:
    """A prompt as one string: itself, or a conversation as `role: content` lines."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{message.role}: {message.content}" for message in prompt)


# ---------------------------------------------------------------------------- the evaluation


def _score(scorers: dict[str, tuple[str, RewardSource]], rows: list[PromptItem], policy: Rollout,
           reference: Rollout, progress: TrainingProgress) -> dict[str, dict[str, Any]]:
    """name -> source entry, for `scorers`: name -> (role, source)."""
    prompts = [item.prompt for item in rows]
    sources = {}
    for name, (role, source) in scorers.items():
        policy_scores, policy_figures = source(prompts, policy.texts), source.diagnostics()
        reference_scores, reference_figures = source(prompts, reference.texts), source.diagnostics()
        sources[name] = source_entry(role, policy_scores, reference_scores)
        if "disagreement" in policy_figures and "disagreement" in reference_figures:  # a reward-model ensemble
            sources[name]["disagreement"] = {"policy_mean": statistics.fmean(policy_figures["disagreement"]),
                                             "reference_mean": statistics.fmean(reference_figures["disagreement"])}
        progress.advance({})
    return sources


def _examples(config: EvalConfig, rows: list[PromptItem], policy: Rollout, reference: Rollout,
              sources: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    picked = range(0, len(rows), config.samples_per_prompt)[: config.examples]  # first sample of each prompt
    return [{"prompt": prompt_text(rows[i].prompt), "reference": reference.texts[i], "policy": policy.texts[i],
             "scores": {name: [entry["reference"][i], entry["policy"][i]] for name, entry in sources.items()}}
            for i in picked]


def _per_model(rollout: Rollout) -> dict[str, Any]:
    return {"length": statistics.fmean(len(r) for r in rollout.response_ids),
            "eos_rate": statistics.fmean(float(f) for f in rollout.finished),
            "distinct": distinct_scores(rollout.texts), "wordless_rate": wordless_rate(rollout.texts)}


def evaluate(config: EvalConfig, console: Console | None = None) -> dict[str, Any]:
    """Sample, score and compare; write eval.json to `config.output` and return its content:

    policy, reference, prompts, samples_per_prompt, created_at, sources (per source: role,
    higher_is_better, per-response policy / reference scores, means and standard errors),
    toxicity (raw probabilities, the relative reduction and its 95 % bootstrap interval, when a
    toxicity source is present), kl (per_response, mean, se),
    win_rate (per source: win, tie, loss, rate), length, eos_rate, distinct (distinct_1 / 2 per
    model), wordless_rate, warnings, examples, and config (the resolved settings). The caller's
    random state is left as it was.
    """
    plan = plan_models(config)
    # Sources first: a wrong path or function should stop the run before minutes of sampling.
    scorers = {source_name(c): (source_role(c, config.monitors), build_reward_source(c)) for c in config.sources}
    device = resolve_device(config.device)
    dtype, why = resolve_weight_dtype(config.dtype, device.type)
    if console is not None:
        console.print(f"[bold]precision[/]: {why}", soft_wrap=True)
    policy, reference, tokenizer = load_models(plan, dtype, device)
    data = PromptDataConfig(train=config.prompts, split=config.split, name=config.name,
                            max_prompt_length=config.max_prompt_length)
    check_context_fits(policy, data, config.sampling)
    rows = [item for item in read_prompts(config.prompts, tokenizer, data, console)
            for _ in range(config.samples_per_prompt)]
    prompt_ids = [item.prompt_ids for item in rows]
    batches = math.ceil(len(rows) / config.sampling.batch_size)
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with (torch.random.fork_rng(devices=devices), torch.no_grad(),
          TrainingProgress(3 * batches + len(config.sources), 0, config.progress, "evaluating") as progress):
        with reference_network(policy, reference) as frozen:
            reference_rollout = sample(frozen, tokenizer, prompt_ids, config.sampling, config.seed, progress)
        policy_rollout = sample(policy, tokenizer, prompt_ids, config.sampling, config.seed, progress,
                                record_logprobs=True)
        kls = kl_per_response(policy, reference, policy_rollout, tokenizer.pad_token_id,
                              config.sampling.batch_size, progress)
        sources = _score(scorers, rows, policy_rollout, reference_rollout, progress)
    result = _result(config, plan, rows, policy_rollout, reference_rollout, kls, sources)
    result["precision"] = {"dtype": dtype, "reason": why}
    output = Path(config.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return result


def _result(config: EvalConfig, plan: ModelPlan, rows: list[PromptItem], policy: Rollout, reference: Rollout,
            kls: list[float], sources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    kl_mean, kl_se = mean_and_se(kls)
    per_model = {"policy": _per_model(policy), "reference": _per_model(reference)}
    result: dict[str, Any] = {
        "policy": plan.adapter or plan.base,
        "reference": plan.reference or (f"{plan.base} (adapters off)" if plan.adapter else plan.base),
        "prompts": config.prompts,
        "samples_per_prompt": config.samples_per_prompt,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sources": sources,
    }
    if any(source.type == "toxicity" for source in config.sources):
        result["toxicity"] = toxicity_block(policy.texts, reference.texts, config.samples_per_prompt)
    result.update({
        "kl": {"per_response": kls, "mean": kl_mean, "se": kl_se},
        "win_rate": {name: win_counts(entry["policy"], entry["reference"]) for name, entry in sources.items()},
        **{key: {side: per_model[side][key] for side in per_model}
           for key in ("length", "eos_rate", "distinct", "wordless_rate")},
    })
    same = plan.adapter is None and plan.reference is None
    note = ["the reference is the policy itself (a full model with no `reference` given): KL is 0 and every "
            "comparison is a tie; set `reference` to the model the policy was trained from"] if same else []
    result["warnings"] = note + eval_warnings(result, config.kl_bound)
    result["examples"] = _examples(config, rows, policy, reference, sources)
    result["config"] = config.model_dump(mode="json")
    return result
