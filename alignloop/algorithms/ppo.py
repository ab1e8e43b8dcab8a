"""PPO for RLHF (Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al. 2022), with the
implementation details that make it work (Huang et al. 2024, "The N+ Implementation Details of
RLHF with PPO"):

1. the policy samples one response per prompt; a reward source scores the whole response;
2. the per-token reward is −β·KL_t (k1 = log π − log π_ref, or k3) at every response token, plus
   the score at the last one, so reward hacking that drifts from the reference costs reward;
   β is fixed or adapted toward a target KL (`kl_control.py`);
3. a value head on the policy's last hidden state estimates V(s_t); GAE(γ, λ) turns rewards and
   values into advantages (whitened per rollout) and returns (the value targets);
4. several epochs of minibatch updates with the clipped ratio and the clipped value loss;
5. dropout off everywhere, so the ratio is exactly 1 before the first update and the KL is not
   noise; responses without EOS can be penalised; scores can be clipped and rewards whitened.

Log-probs, values and the reference are computed at sampling time, without gradients, with the
sampler's temperature. The reference is the policy with its LoRA adapters off (or a frozen
copy for full fine-tuning). β lives in the checkpoint, so a resumed run continues with the
coefficient it had reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch
from pydantic import Field

from alignloop.algorithms.kl_control import adaptive_kl_coef
from alignloop.algorithms.online import OnlineRL, StopRules, response_mask, start_online_run, update_micro_batches
from alignloop.algorithms.run import RunContext, TrainingJob, run_method
from alignloop.config import Section
from alignloop.data.prompts import PromptDataConfig
from alignloop.engine import Experience, LossOutput, TrainConfig, TrainResult
from alignloop.engine.rollout import SamplingConfig
from alignloop.losses import KL_ESTIMATORS, entropy_from_logits, gae, kl_penalty, per_token_rewards, ppo_policy_loss
from alignloop.losses import policy_loss_items, value_loss, whiten
from alignloop.models import ModelConfig, PolicyWithValueHead, save_policy_with_value_head
from alignloop.rewards import RewardSourceConfig

class PPOSettings(StopRules):
    epochs: int = Field(4, ge=1, description="PPO epochs over each rollout")
    num_minibatches: int = Field(1, ge=1, description="optimizer updates per epoch (the rollout is split)")
    clip_range: float = Field(0.2, gt=0, lt=1, description="ε of the clipped policy ratio")
    value_clip_range: float | None = Field(0.2, gt=0, description="ε of the clipped value loss (null: unclipped)")
    vf_coef: float = Field(0.1, ge=0, description="weight of the value loss")
    gamma: float = Field(1.0, ge=0, le=1, description="GAE discount")
    lam: float = Field(0.95, ge=0, le=1, description="GAE λ")
    kl_coef: float = Field(0.05, ge=0, description="β: per-token KL penalty (initial value when adaptive)")
    kl_estimator: Literal[tuple(KL_ESTIMATORS)] = Field(  # type: ignore[valid-type]
        "k1", description="per-token KL estimate in the reward, a key of alignloop.losses.KL_ESTIMATORS")
    kl_target: float | None = Field(None, gt=0, description="adaptive β: target KL per sequence (null: fixed β)")
    kl_horizon: int = Field(10000, ge=1, description="adaptive β: sequences to correct a KL error")
    whiten_advantages: bool = Field(True, description="normalise advantages over each rollout")
    whiten_rewards: bool = Field(False, description="scale per-token rewards to unit variance per rollout")
    reward_clip: float | None = Field(None, gt=0, description="clip scores to [-c, c] (null: no clipping)")
    missing_eos_penalty: float = Field(0.0, ge=0, description="subtracted from the score of responses without EOS")
    entropy_coef: float = Field(0.0, ge=0, description="bonus on the policy entropy (0: none)")


class PPOConfig(Section):
    model: ModelConfig = Field(description="the policy (its starting point is the frozen reference)")
    data: PromptDataConfig = Field(description="the prompts to learn on")
    reward: RewardSourceConfig = Field(description="what scores a response (reward model, classifier, function, ...)")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="how responses are sampled")
    train: TrainConfig = Field(default_factory=TrainConfig, description="optimiser, schedule and run settings")
    ppo: PPOSettings = Field(default_factory=PPOSettings, description="PPO, KL and advantage settings")
    save_merged: bool = Field(False, description="with LoRA, also write the base model with adapters merged")


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """1 - Var(R - V) / Var(R) over the masked tokens (all without a mask): 1 is a perfect critic,
    0 no better than the mean return, negative worse than that. Not a sum: computed once per step
    over the gathered rollout (`PPO.rollout_statistics`)."""
    if mask is not None:
        values, returns = values[mask], returns[mask]
    values, returns = values.double(), returns.double()
    variance = returns.var(unbiased=False)
    return float(1.0 - (returns - values).var(unbiased=False) / variance) if variance > 0 else 0.0


# An item is a response token (the entropy bonus below sums over them too).
AGGREGATION = "token-mean"


@dataclass(kw_only=True)
class PPO(OnlineRL):
    settings: PPOSettings
    sequences_per_step: int  # over all processes: the adaptive KL controller's n
    kl_coef: float = 0.0  # β now; set from the settings in __post_init__, then adapted

    def __post_init__(self) -> None:
        self.kl_coef = self.settings.kl_coef

    def policy_of(self, model: torch.nn.Module) -> torch.nn.Module:
        return getattr(model, "module", model).policy

    def kl_coef_now(self) -> float:
        return self.kl_coef

    def updates_per_step(self) -> int:
        return self.settings.epochs * self.settings.num_minibatches

    def count_items(self, batch: dict[str, Any]) -> int:
        return policy_loss_items(response_mask(batch), AGGREGATION)

    def collect(self, model: torch.nn.Module, micro_batches: list[dict[str, Any]]) -> Experience:
        s = self.settings
        scored = self.sample(model, [item for batch in micro_batches for item in batch["prompts"]], per_prompt=1)
        mask = scored.mask  # (R, T-1)
        old_logps, values = self._logps_and_values(model, scored.tokens)  # (R, T-1) each
        ref_logps = self.reference_logps(model, scored.tokens)  # (R, T-1)
        scores = scored.scores.clamp(-s.reward_clip, s.reward_clip) if s.reward_clip else scored.scores
        rewards = per_token_rewards(scores, kl_penalty(old_logps, ref_logps, s.kl_estimator), mask, self.kl_coef)
        if s.whiten_rewards:
            rewards = whiten(rewards, mask, shift_mean=False)
        advantages, returns = gae(rewards, values, mask, gamma=s.gamma, lam=s.lam)
        if s.whiten_advantages:
            advantages = whiten(advantages, mask)
        experience = {**scored.tokens, "old_logps": old_logps, "old_values": values,
                      "advantages": advantages, "returns": returns}
        updates = update_micro_batches(experience, self.rows_per_micro_batch, s.epochs, s.num_minibatches)
        kl = kl_penalty(old_logps, ref_logps, "k1")  # the reported KL is always the k1 sum per sequence
        rollout = {**scored.statistics_tensors(), "values": values[mask], "returns": returns[mask]}  # tokens: (N,)
        return Experience(updates, self.rollout_metrics(scored, kl), len(scored.items), self.sample_rows(scored, kl),
                          rollout)

    def _logps_and_values(self, model, tokens: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        network = getattr(model, "module", model)
        logps, values = [], []
        for start in range(0, tokens["input_ids"].shape[0], self.rows_per_micro_batch):
            chunk = {k: v[start : start + self.rows_per_micro_batch] for k, v in tokens.items()}
            chunk_logps, _, _, chunk_values = network(chunk, self.temperature)
            logps.append(chunk_logps)
            values.append(chunk_values)
        return torch.cat(logps), torch.cat(values)

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> LossOutput:
        s = self.settings
        logps, mask, logits, values = model(batch, self.temperature)  # through DDP when distributed
        policy_sum, metrics = ppo_policy_loss(logps, batch["old_logps"], batch["advantages"], mask,
                                              clip_range=s.clip_range, aggregation=AGGREGATION)
        value_sum, value_metrics = value_loss(values, batch["old_values"], batch["returns"], mask,
                                              clip_range=s.value_clip_range, aggregation=AGGREGATION)
        with torch.set_grad_enabled(torch.is_grad_enabled() and s.entropy_coef > 0):  # else only a metric
            entropy_sum = entropy_from_logits(logits).sum()  # over the response tokens
        loss_sum = policy_sum + s.vf_coef * value_sum - s.entropy_coef * entropy_sum
        metrics.update(value_metrics)
        metrics.update({"policy/loss": policy_sum.detach(), "value/loss": value_sum.detach(),
                        "entropy": entropy_sum.detach()})
        return LossOutput(loss_sum, metrics)

    def rollout_statistics(self, rollout: dict[str, torch.Tensor]) -> dict[str, float]:
        return {**super().rollout_statistics(rollout),
                "value/explained_variance": explained_variance(rollout["values"], rollout["returns"])}

    def end_step(self, metrics: dict[str, float]) -> dict[str, float]:
        used = self.kl_coef
        if self.settings.kl_target is not None:
            self.kl_coef = adaptive_kl_coef(used, metrics["kl/sequence"], self.settings.kl_target,
                                            self.settings.kl_horizon, self.sequences_per_step)
        return {"kl/coef": used, **super().end_step(metrics)}

    def state_dict(self) -> dict[str, Any]:
        return {"kl_coef": self.kl_coef, **super().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kl_coef = float(state.get("kl_coef", self.settings.kl_coef))
        super().load_state_dict(state)


def run_ppo(config: PPOConfig, resume: bool | str = False) -> TrainResult:
    return run_method(config, partial(prepare_ppo, config), resume)


def prepare_ppo(config: PPOConfig, context: RunContext) -> TrainingJob:
    run = start_online_run(config, context)
    method = PPO(
        **run.method_fields(),
        rows_per_micro_batch=config.train.batch_size,
        missing_eos_penalty=config.ppo.missing_eos_penalty,
        settings=config.ppo,
        sequences_per_step=config.train.batch_size * config.train.grad_accum * context.accelerator.num_processes,
    )
    save_final = partial(save_policy_with_value_head, tokenizer=run.tokenizer, merged=config.save_merged)
    return run.job(PolicyWithValueHead(run.policy), method, save_final)
