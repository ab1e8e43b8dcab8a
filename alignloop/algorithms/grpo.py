"""GRPO and RLOO: policy gradient with a baseline from the other samples of the same prompt.

Both drop PPO's value network. For every prompt the policy samples K responses; a reward source
scores them; each response's advantage is its reward measured against its group:

* GRPO (Shao et al. 2024, DeepSeekMath, sec. 4.1): A_i = (r_i − mean_g) / std_g, and the KL to
  the frozen reference enters the loss as β·k3 per token (eq. 3–4);
* RLOO (Ahmadian et al. 2024, "Back to Basics"): A_i = r_i − mean of the other K−1 rewards, an
  unbiased baseline; the KL is usually folded into the reward (r_i − β·Σ_t log π/π_ref).

`kl_in` chooses either placement for either method. By default one policy update follows each
batch of samples, so the importance ratio is 1 and the loss is the plain policy gradient
−A·log π (averaged per sequence, as in GRPO's 1/|o_i|); with `num_iterations` μ > 1 the samples
are reused μ times with PPO's clipped ratio (GRPO's eq. 3), against log-probs recorded at
sampling time.

It is an on-policy method of the engine: `collect` samples K responses per prompt with the
current weights and scores them without gradients, then the engine runs the updates.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from alignloop.algorithms.online import OnlineRL, StopRules, per_sequence_mean, response_mask, start_online_run
from alignloop.algorithms.online import update_micro_batches
from alignloop.algorithms.run import RunContext, TrainingJob, run_method
from alignloop.config import Section
from alignloop.data.prompts import PromptDataConfig
from alignloop.engine import Experience, LossOutput, TrainConfig, TrainResult
from alignloop.engine.rollout import SamplingConfig
from alignloop.losses import GROUP_ADVANTAGES, entropy_from_logits, grpo_kl_term, kl_penalty, policy_gradient_loss
from alignloop.losses import policy_loss_items
from alignloop.losses.variants import call_variant, refuse_settings_not_taken
from alignloop.models import ModelConfig, save_trained_model
from alignloop.models.forward import response_token_logps
from alignloop.ops import on_grid
from alignloop.rewards import RewardSourceConfig

class GroupSettings(StopRules):
    advantage: Literal[tuple(GROUP_ADVANTAGES)] = Field(  # type: ignore[valid-type]
        "grpo", description="group baseline, a key of alignloop.losses.GROUP_ADVANTAGES: " + ", ".join(GROUP_ADVANTAGES))
    group_size: int = Field(4, ge=2, description="responses sampled per prompt (K)")
    scale_by_std: bool = Field(True, description="grpo: divide by the group std (false: Dr. GRPO)")
    kl_coef: float = Field(0.05, ge=0, description="β: weight of the KL to the frozen reference")
    kl_in: Literal["loss", "reward"] = Field("loss", description="KL as a k3 loss term, or subtracted from the reward")
    num_iterations: int = Field(1, ge=1, description="μ: updates on each batch of samples (>1 uses the clipped ratio)")
    clip_range: float = Field(0.2, gt=0, lt=1, description="ε of the clipped ratio when num_iterations > 1")
    missing_eos_penalty: float = Field(0.0, ge=0, description="subtracted from the reward of responses without EOS")
    entropy_coef: float = Field(0.0, ge=0, description="bonus on the policy entropy (0: none)")

    @model_validator(mode="after")
    def _refuse_settings_the_baseline_does_not_take(self) -> GroupSettings:
        chosen = {"scale_by_std": ("scale_by_std", self.scale_by_std)} if "scale_by_std" in self.model_fields_set else {}
        refuse_settings_not_taken(GROUP_ADVANTAGES, self.advantage, "advantage", chosen)
        return self


class GRPOConfig(Section):
    model: ModelConfig = Field(description="the policy (its starting point is the frozen reference)")
    data: PromptDataConfig = Field(description="the prompts to learn on")
    reward: RewardSourceConfig = Field(description="what scores a response (reward model, classifier, function, ...)")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="how responses are sampled")
    train: TrainConfig = Field(default_factory=TrainConfig, description="optimiser, schedule and run settings")
    group: GroupSettings = Field(default_factory=GroupSettings, description="group baseline and KL settings")
    save_merged: bool = Field(False, description="with LoRA, also write the base model with adapters merged")


# An item is a sequence: the loss averages each response's tokens (GRPO's 1/|o_i|).
AGGREGATION = "sequence-mean"


@dataclass(kw_only=True)
class GroupPolicyGradient(OnlineRL):
    settings: GroupSettings

    def kl_coef_now(self) -> float:
        return self.settings.kl_coef

    def updates_per_step(self) -> int:
        return self.settings.num_iterations

    def count_items(self, batch: dict[str, Any]) -> int:
        return policy_loss_items(response_mask(batch), AGGREGATION)

    def collect(self, model: torch.nn.Module, micro_batches: list[dict[str, Any]]) -> Experience:
        items = [item for batch in micro_batches for item in batch["prompts"]]
        # Log-probs at sampling time are needed for the ratio when the samples are reused, for
        # the KL in the reward, and for a KL budget, which must read the KL before the update.
        reused = self.settings.num_iterations > 1
        measured = reused or self.settings.kl_in == "reward" or self.settings.kl_stop is not None
        scored = self.sample(model, items, self.settings.group_size, record_logprobs=measured)
        mask = scored.mask
        ref_logps = self.reference_logps(model, scored.tokens)
        logps = self.sampling_logps(model, scored) if measured else None
        kl = kl_penalty(logps, ref_logps, "k1") if logps is not None else torch.zeros_like(ref_logps)
        rewards = scored.scores
        if self.settings.kl_in == "reward":
            rewards = rewards - self.settings.kl_coef * (kl * mask).sum(-1)
        experience = {**scored.tokens, "advantages": self._advantages(rewards), "ref_logps": ref_logps}
        if reused:
            experience["old_logps"] = logps
        updates = update_micro_batches(experience, self.rows_per_micro_batch, self.settings.num_iterations, 1)
        metrics = self.rollout_metrics(scored, kl)
        if logps is None:
            metrics.pop("kl/sequence")  # measured by the loss instead, in the update's forward pass
        return Experience(updates, metrics, len(scored.items),
                          self.sample_rows(scored, kl, every=self.settings.group_size), scored.statistics_tensors())

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> LossOutput:
        logps, mask, logits = response_token_logps(model, batch, self.temperature)  # (R, T-1)
        advantages = batch["advantages"].unsqueeze(-1).expand_as(logps)  # (R, T-1)
        old_logps = batch.get("old_logps")
        loss_sum, metrics = policy_gradient_loss(
            logps, advantages, mask, old_logps=old_logps,
            clip_range=self.settings.clip_range if old_logps is not None else None, aggregation=AGGREGATION,
        )
        if self.settings.kl_in == "loss" and self.settings.kl_coef > 0:
            kl_sum, kl_metrics = grpo_kl_term(logps, batch["ref_logps"], mask, self.settings.kl_coef,
                                              aggregation=AGGREGATION)
            loss_sum, metrics = loss_sum + kl_sum, {**metrics, **kl_metrics}
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.settings.entropy_coef > 0):  # else a metric
            entropy = per_sequence_mean(on_grid(entropy_from_logits(logits), mask), mask)  # (R,)
        if self.settings.entropy_coef > 0:
            loss_sum = loss_sum - self.settings.entropy_coef * entropy.sum()
        # With one update per rollout this is the KL at sampling time; `collect` reports it
        # itself (and overrides this) when it computes the log-probs anyway.
        kl = kl_penalty(logps.detach(), batch["ref_logps"], "k1")
        metrics.update({"entropy": entropy.detach().sum(), "kl/sequence": (kl * mask).sum()})
        return LossOutput(loss_sum, metrics)

    def _advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        return call_variant(GROUP_ADVANTAGES[self.settings.advantage], rewards=rewards,
                            group_size=self.settings.group_size, scale_by_std=self.settings.scale_by_std)


def run_grpo(config: GRPOConfig, resume: bool | str = False) -> TrainResult:
    return run_method(config, partial(prepare_grpo, config), resume)


def prepare_grpo(config: GRPOConfig, context: RunContext) -> TrainingJob:
    run = start_online_run(config, context)
    method = GroupPolicyGradient(
        **run.method_fields(),
        rows_per_micro_batch=config.train.batch_size * config.group.group_size,
        missing_eos_penalty=config.group.missing_eos_penalty,
        settings=config.group,
    )
    return run.job(run.policy, method, partial(save_trained_model, tokenizer=run.tokenizer, merged=config.save_merged))
