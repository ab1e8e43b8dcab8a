"""Best-of-n sampling: n replies per prompt from a policy, the one a reward scores highest kept.

The cheapest way to optimise outputs against a reward, with no training. The kept reply's
distribution is at most log n − (n − 1) / n nats from the policy's (evaluation/best_of_n.py).
The reward is any reward source; for a reward-model ensemble, a conservative aggregate
(`reward_model` with `aggregate: min` or `mean_minus_std`) keeps the replies its members agree
are good. Coste et al. (ICLR 2024) found that such aggregates help best-of-n most against
over-optimisation.

The kept (prompt, response) rows are SFT data as they stand: rejection-sampling fine-tuning
(expert iteration; Llama 2, Touvron et al. 2023, sec. 3.2.2) trains on them with `alignloop sft`.
Every candidate stays in the output with its reward (and an ensemble's disagreement), so the
choice can be audited.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from rich.console import Console

from alignloop.config import Section
from alignloop.data.prompts import PromptDataConfig, read_prompts
from alignloop.engine.progress import TrainingProgress
from alignloop.engine.rollout import SamplingConfig
from alignloop.evaluation.best_of_n import best_of_n_kl
from alignloop.evaluation.policy_eval import PolicySpec, load_models, plan_models, resolve_device, sample
from alignloop.hardware import resolve_weight_dtype
from alignloop.rewards import RewardSourceConfig, build_reward_source

__all__ = ["BestOfNConfig", "best_indices", "run_best_of_n"]


class BestOfNConfig(Section):
    """What `alignloop best-of-n` samples, how many, and which reward chooses."""

    policy: PolicySpec = Field(description="the policy: {name, adapter}, or just a name / adapter folder")
    reference: str | None = Field(None, description="the base model of a policy adapter whose own base is not "
                                                    "found here (only that: best-of-n samples the policy alone)")
    prompts: str = Field(description="prompts (`prompt` records): JSONL / JSON / CSV / Parquet file, datasets "
                                     "folder, or a hub dataset id (online)")
    split: str = Field("train", description="split of a DatasetDict folder or hub dataset that prompts names")
    n: int = Field(8, ge=1, le=4096, description="replies sampled per prompt; the best by `reward` is kept")
    reward: RewardSourceConfig = Field(description="what chooses: any reward source (reward_model with aggregate "
                                                   "min / mean_minus_std for a conservative ensemble, toxicity, ...)")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="how the policy samples")
    seed: int = Field(1234, description="sampling seed")
    max_prompt_length: int = Field(256, ge=1, description="prompt tokens kept (longer prompts keep their end)")
    output: str = Field("best_of_n.jsonl", description="JSONL: prompt, response (the kept reply), reward, and every "
                                                       "candidate with its reward")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="the policy's precision: auto (bfloat16 where this hardware runs it fast), float32, ...")
    device: str = Field("auto", description="auto (CUDA if available, else CPU), cpu, cuda, cuda:1, ...")
    progress: bool = Field(True, description="show a progress bar")

    @field_validator("policy", mode="before")
    @classmethod
    def _a_name_alone(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value  # `policy=runs/ppo/final` on the command line


def best_indices(rewards: Sequence[float], n: int) -> list[int]:
    """Rewards of consecutive groups of n candidates -> the index (into `rewards`) of each group's
    best; the first of equals."""
    if n < 1 or len(rewards) % n:
        raise ValueError(f"{len(rewards)} rewards do not make groups of {n}")
    return [start + max(range(n), key=lambda i: (rewards[start + i], -i)) for start in range(0, len(rewards), n)]


def output_rows(prompts: list[Any], texts: list[str], rewards: list[float], n: int,
                disagreement: list[float] | None) -> list[dict[str, Any]]:
    """One row per prompt: the kept reply, its reward and every candidate (with its disagreement)."""
    rows = []
    for group, best in enumerate(best_indices(rewards, n)):
        candidates = [{"response": texts[i], "reward": rewards[i],
                       **({} if disagreement is None else {"disagreement": disagreement[i]})}
                      for i in range(group * n, (group + 1) * n)]
        rows.append({"prompt": prompts[group], "response": texts[best], "reward": rewards[best], "n": n,
                     "candidates": candidates})
    return rows


def run_best_of_n(config: BestOfNConfig, console: Console | None = None) -> dict[str, Any]:
    """Sample, score, keep the best of each prompt's n; write `config.output`; return a summary:
    prompts, n, the mean reward of the kept replies and of all candidates, the KL bound."""
    console = console or Console(highlight=False)
    source = build_reward_source(config.reward)  # a wrong path stops the run before minutes of sampling
    device = resolve_device(config.device)
    dtype, why = resolve_weight_dtype(config.dtype, device.type)
    console.print(f"[bold]precision[/]: {why}", soft_wrap=True)
    policy, _, tokenizer = load_models(plan_models(config), dtype, device)
    data = PromptDataConfig(train=config.prompts, split=config.split, max_prompt_length=config.max_prompt_length)
    items = read_prompts(config.prompts, tokenizer, data, console)
    rows = [item for item in items for _ in range(config.n)]
    batches = math.ceil(len(rows) / config.sampling.batch_size)
    with torch.no_grad(), TrainingProgress(batches, 0, config.progress, "sampling") as progress:
        rollout = sample(policy, tokenizer, [item.prompt_ids for item in rows], config.sampling, config.seed, progress)
    rewards = [float(r) for r in source([item.prompt for item in rows], rollout.texts)]
    disagreement = source.diagnostics().get("disagreement")
    prompts = [item.record.model_dump(mode="json")["prompt"] for item in items]  # as written: text or messages
    kept = output_rows(prompts, rollout.texts, rewards, config.n, disagreement)
    output = Path(config.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in kept), encoding="utf-8")
    summary = {"prompts": len(items), "n": config.n, "kept_reward_mean": statistics.fmean(r["reward"] for r in kept),
               "candidate_reward_mean": statistics.fmean(rewards), "kl_bound": best_of_n_kl(config.n),
               "output": str(output)}
    console.print(f"best-of-{config.n} on {len(items)} prompts: mean reward {summary['candidate_reward_mean']:.4f} "
                  f"(all candidates) -> {summary['kept_reward_mean']:.4f} (kept), at most {summary['kl_bound']:.2f} "
                  f"nats from the policy; wrote {output}", soft_wrap=True)
    return summary
