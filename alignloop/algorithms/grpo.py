"""GRPO and RLOO: policy gradient with a baseline from the other samples of the same prompt.

Both drop PPO's value network. For every prompt the policy samples K responses; a reward source
scores them; each response's advantage is its reward measured against its group:

* GRPO (Shao et al. 2024, DeepSeekMath, sec. 4.1): A_i = (r_i − mean_g) / std_g, and the KL to
  the frozen reference enters the loss as β·k3 per token (eq. 3–4);
* RLOO (Ahmadian et al. 2024, "Back to Basics"): A_i = r_i − mean of the other K−1 rewards, an
  unbiased baseline; the KL is usually folded into the reward (r_i − β·Σ_t log π/π_ref).

`kl_in` chooses either placement for either method. One policy update per batch of samples, so
the importance ratio is 1 and the loss is the plain policy gradient −A·log π (averaged per
sequence, as in GRPO's 1/|o_i|).

The generic engine drives this like any other method: its "examples" are prompts, and the loss
of a micro-batch first samples K responses per prompt with the current policy (no gradient),
scores them, then runs the policy forward on them. The item count (prompts × K sequences) is
known before sampling, which the engine's step-wide normalisation needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import torch
from accelerate.utils import set_seed
from pydantic import Field

from alignloop.config import Section, config_to_yaml
from alignloop.data import EncodedExample, PromptOnly, dataset_fingerprint, encode_prompt, pad_batch, read_records
from alignloop.engine import LossOutput, TrainConfig, Trainer, TrainResult, make_accelerator
from alignloop.engine.console import console_for
from alignloop.engine.rollout import HFRolloutEngine, Rollout, SamplingConfig
from alignloop.losses import entropy_from_logits, grpo_kl_term, group_normalized_advantages, kl_penalty
from alignloop.losses import leave_one_out_advantages, policy_gradient_loss
from alignloop.algorithms.reference import frozen_copy_unless_lora, reference_network
from alignloop.models import ModelConfig, load_model_and_tokenizer, save_trained_model
from alignloop.ops import IGNORE_INDEX, response_token_logps
from alignloop.rewards import RewardSourceConfig, build_reward_source, penalize_unfinished


class PromptDataConfig(Section):
    train: str = Field(description="prompts: JSONL / JSON / CSV / Parquet with a `prompt` field")
    eval: str | None = Field(None, description="held-out prompts, evaluated every train.eval_every steps")
    max_prompt_length: int = Field(256, ge=1, description="longer prompts keep their last tokens")
    use_chat_template: bool = Field(True, description="render prompts with the tokenizer's chat template")


class GroupSettings(Section):
    advantage: Literal["grpo", "rloo"] = Field("grpo", description="group baseline: grpo (z-score) or rloo")
    group_size: int = Field(4, ge=2, description="responses sampled per prompt (K)")
    scale_by_std: bool = Field(True, description="grpo: divide by the group std (false: Dr. GRPO)")
    kl_coef: float = Field(0.05, ge=0, description="β: weight of the KL to the frozen reference")
    kl_in: Literal["loss", "reward"] = Field("loss", description="KL as a k3 loss term, or subtracted from the reward")
    missing_eos_penalty: float = Field(0.0, ge=0, description="subtracted from the reward of responses without EOS")
    entropy_coef: float = Field(0.0, ge=0, description="bonus on the policy entropy (0: none)")


class GRPOConfig(Section):
    model: ModelConfig = Field(description="the policy (its starting point is the frozen reference)")
    data: PromptDataConfig = Field(description="the prompts to learn on")
    reward: RewardSourceConfig = Field(description="what scores a response (reward model, classifier, function, ...)")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="how responses are sampled")
    train: TrainConfig = Field(default_factory=TrainConfig, description="optimiser, schedule and run settings")
    group: GroupSettings = Field(default_factory=GroupSettings, description="group baseline and KL settings")
    save_merged: bool = Field(False, description="with LoRA, also write the base model with adapters merged")


@dataclass(frozen=True)
class PromptItem:
    record: PromptOnly  # the prompt as written (str or chat messages), for the reward source
    prompt_ids: list[int]

    @property
    def prompt(self) -> Any:
        return self.record.prompt


def collate_prompts(items: list[PromptItem]) -> dict[str, Any]:
    return {"prompts": items}


def rollout_batch(rollout: Rollout, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Prompt + response rows with labels on the response only (the tokens to score)."""
    examples = [
        EncodedExample(prompt + response, [IGNORE_INDEX] * len(prompt) + response)
        for prompt, response in zip(rollout.prompt_ids, rollout.response_ids)
    ]
    return pad_batch(examples, pad_token_id)


def reference_token_logps(model, batch, temperature, reference_model) -> torch.Tensor:
    with torch.no_grad(), reference_network(model, reference_model) as reference:
        return response_token_logps(reference, batch, temperature)[0]


@dataclass
class GroupPolicyGradient:
    settings: GroupSettings
    sampling: SamplingConfig
    reward_source: Any
    pad_token_id: int
    make_engine: Any  # model -> rollout engine (so that sampling uses the weights being trained)
    reference_model: torch.nn.Module | None = None
    last_samples: list[dict] = field(default_factory=list)

    def count_items(self, batch: dict[str, Any]) -> int:
        return len(batch["prompts"]) * self.settings.group_size

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> LossOutput:
        rollout, rewards = self._sample_and_score(model, batch["prompts"])
        device = next(model.parameters()).device
        tokens = {k: v.to(device) for k, v in rollout_batch(rollout, self.pad_token_id).items()}
        batch["num_tokens"] = int(tokens["attention_mask"].sum())  # for the engine's tokens/s
        temperature = rollout.temperature or 1.0
        logps, mask, logits = response_token_logps(model, tokens, temperature)  # (R, T-1)
        ref_logps = reference_token_logps(model, tokens, temperature, self.reference_model)
        kl = kl_penalty(logps.detach(), ref_logps, "k1")  # (R, T-1), for the reward and the metrics
        if self.settings.kl_in == "reward":
            rewards = rewards - self.settings.kl_coef * (kl * mask).sum(-1)
        advantages = self._advantages(rewards).unsqueeze(-1).expand_as(logps)  # (R, T-1)
        loss_sum, _, metrics = policy_gradient_loss(logps, advantages, mask, aggregation="sequence-mean")
        if self.settings.kl_in == "loss" and self.settings.kl_coef > 0:
            kl_sum, _, kl_metrics = grpo_kl_term(logps, ref_logps, mask, self.settings.kl_coef,
                                                 aggregation="sequence-mean")
            loss_sum, metrics = loss_sum + kl_sum, {**metrics, **kl_metrics}
        entropy = entropy_from_logits(logits.float())  # (N,)
        if self.settings.entropy_coef > 0:
            loss_sum = loss_sum - self.settings.entropy_coef * per_sequence_mean(entropy, mask).sum()
        metrics.update(self._rollout_metrics(rollout, rewards, kl, mask, entropy))
        return LossOutput(loss_sum, metrics)

    def _sample_and_score(self, model, prompts: list[PromptItem]) -> tuple[Rollout, torch.Tensor]:
        k = self.settings.group_size
        engine = self.make_engine(getattr(model, "module", model))
        rollout = engine.generate([p.prompt_ids for p in prompts for _ in range(k)])
        texts = [p.prompt for p in prompts for _ in range(k)]
        scores = self.reward_source(texts, rollout.texts)
        scores = penalize_unfinished(scores, rollout.finished, self.settings.missing_eos_penalty)
        self.last_samples = [{"prompt": str(t)[:200], "response": r[:300], "reward": s}
                             for t, r, s in zip(texts[::k], rollout.texts[::k], scores[::k])]
        device = next(model.parameters()).device
        return rollout, torch.tensor(scores, dtype=torch.float32, device=device)

    def _advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        k = self.settings.group_size
        if self.settings.advantage == "rloo":
            return leave_one_out_advantages(rewards, k)
        return group_normalized_advantages(rewards, k, scale_by_std=self.settings.scale_by_std)

    @staticmethod
    def _rollout_metrics(rollout: Rollout, rewards, kl, mask, entropy) -> dict[str, torch.Tensor]:
        lengths = mask.sum(-1).float()  # (R,)
        finished = torch.tensor(rollout.finished, dtype=torch.float32, device=rewards.device)
        return {
            "reward/mean": rewards.detach().sum(),
            # The engine averages sums over items: the std of this micro-batch, weighted by its size.
            "reward/std": rewards.detach().std(unbiased=False) * rewards.numel(),
            "kl/sequence": (kl * mask).sum(),
            "response/length": lengths.sum(),
            "response/eos_rate": finished.sum(),
            "policy/entropy": per_sequence_mean(entropy.detach(), mask).sum(),
        }


def per_sequence_mean(per_token_flat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N,) values of the masked tokens (row-major) -> (R,) mean per row (0 for an empty row)."""
    grid = torch.zeros(mask.shape, dtype=per_token_flat.dtype, device=per_token_flat.device)
    grid = grid.masked_scatter(mask, per_token_flat)
    return grid.sum(-1) / mask.sum(-1).clamp(min=1)


def read_prompts(path: str, tokenizer, config: PromptDataConfig) -> list[PromptItem]:
    records = read_records(path, PromptOnly)
    items = []
    for record in records:
        ids = encode_prompt(tokenizer, record.prompt, config.use_chat_template)
        items.append(PromptItem(record, ids[-config.max_prompt_length :]))
    return items


def run_grpo(config: GRPOConfig, resume: bool | str = False) -> TrainResult:
    accelerator = make_accelerator(config.train)
    console = console_for(accelerator)
    set_seed(config.train.seed)
    model, tokenizer = load_model_and_tokenizer(config.model)
    train_prompts = read_prompts(config.data.train, tokenizer, config.data)
    eval_prompts = read_prompts(config.data.eval, tokenizer, config.data) if config.data.eval else []
    console.print(f"[bold]data[/]: {len(train_prompts)} training prompts, {len(eval_prompts)} held out")
    reference_model = frozen_copy_unless_lora(model, needed=config.group.kl_coef > 0)
    method = GroupPolicyGradient(
        config.group, config.sampling, build_reward_source(config.reward), tokenizer.pad_token_id,
        make_engine=partial(HFRolloutEngine, tokenizer=tokenizer, sampling=config.sampling),
        reference_model=reference_model,
    )
    trainer = Trainer(
        config.train, model, method, train_prompts, collate_prompts, eval_examples=eval_prompts,
        save_final=partial(save_trained_model, tokenizer=tokenizer, merged=config.save_merged),
        config_yaml=config_to_yaml(config),
        data_info={"train_sha256": dataset_fingerprint([p.record for p in train_prompts]),
                   "train_prompts": len(train_prompts), "eval_prompts": len(eval_prompts)},
        accelerator=accelerator,
    )
    result = trainer.train(resume=resume)
    console.print(f"[bold green]done[/]: {result.global_step} steps; final model in {result.final_model_dir}")
    return result
