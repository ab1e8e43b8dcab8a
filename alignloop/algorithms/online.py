"""What every online RL method (PPO, GRPO, RLOO) shares: prompts in, responses sampled with the
current weights and scored, the experience cut into update micro-batches, and the held-out
evaluation that says whether the policy got better.

The experience of a step is one right-padded batch of (prompt + response) rows with per-token
grids aligned to the shifted labels: grid column t belongs to the token at position t + 1, the
one the logits of position t predict. Methods add their own grids (old log-probs, values,
advantages) and `update_micro_batches` cuts the rows into the optimizer updates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from pydantic import Field

from alignloop.algorithms.run import RunContext, SaveFinal, TrainingJob
from alignloop.config import Section
from alignloop.data import dataset_fingerprint
from alignloop.data.prompts import PromptItem, collate_prompts, read_prompts
from alignloop.engine import LossOutput, OnPolicyMethod
from alignloop.engine.rollout import Rollout, SamplingConfig, check_context_fits, recorded_logps, rollout_batch
from alignloop.engine.rollout_factory import rollout_engine_factory
from alignloop.evaluation.diversity import is_wordless, ngram_codes
from alignloop.evaluation.overoptimisation import DEFAULT_BOUND, OveroptimisationWatch
from alignloop.losses import kl_penalty
from alignloop.models import disable_dropout, load_model_and_tokenizer
from alignloop.models.forward import response_token_logps
from alignloop.models.reference import frozen_copy_unless_lora, reference_network
from alignloop.ops import IGNORE_INDEX
from alignloop.rewards import build_reward_source, penalize_unfinished


class StopRules(Section):
    """When an online method ends a run before its last step, and the alarm that may do it."""

    kl_stop: float | None = Field(None, gt=0, description="end the run at the first step whose replies are this "
                                  "many nats (per reply) from the reference, on the last weights whose replies "
                                  "measured under it: a KL budget (null: none)")
    kl_backtracks: int = Field(0, ge=0, description="times a run that reaches kl_stop goes back to the last weights "
                               "measured under it and carries on at half the learning rate, before it ends there")
    overoptimisation_bound: float = Field(DEFAULT_BOUND, gt=1, description="the alarm rings when a reward-model "
                                          "ensemble disagrees this many times as much as on the first step's replies")
    stop_on_overoptimisation: bool = Field(False, description="end the run at the step the alarm rings, "
                                           "without its update")


def select_rows(batch: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
    """The given rows of an experience batch, cut to the width their longest row needs.

    Token tensors are (R, T), per-token grids (R, T-1) and per-row tensors (R,); right padding
    beyond the longest selected row is dropped so short micro-batches cost less.
    """
    index = torch.tensor(rows, device=batch["input_ids"].device)
    full = batch["input_ids"].shape[1]
    width = int(batch["attention_mask"][index].sum(-1).max())
    picked = {}
    for key, value in batch.items():
        value = value.index_select(0, index)
        if value.dim() == 2:
            value = value[:, : width if value.shape[1] == full else width - 1]
        picked[key] = value
    return picked


def update_micro_batches(batch: dict[str, torch.Tensor], rows_per_micro_batch: int, epochs: int,
                         num_minibatches: int) -> list[list[dict[str, torch.Tensor]]]:
    """`epochs` passes over the rows in a fresh random order, each pass cut into `num_minibatches`
    optimizer updates of micro-batches of at most `rows_per_micro_batch` rows."""
    num_rows = batch["input_ids"].shape[0]
    if num_minibatches > num_rows:
        raise ValueError(f"{num_minibatches} minibatches asked of a rollout of only {num_rows} sequences")
    updates = []
    for _ in range(epochs):
        for minibatch in torch.randperm(num_rows).tensor_split(num_minibatches):
            rows = minibatch.tolist()
            chunks = [rows[i : i + rows_per_micro_batch] for i in range(0, len(rows), rows_per_micro_batch)]
            updates.append([select_rows(batch, chunk) for chunk in chunks])
    return updates


def in_row_chunks(batch: dict[str, torch.Tensor], rows: int, fn: Callable[[dict], torch.Tensor]) -> torch.Tensor:
    """`fn` over slices of at most `rows` rows (full width), results concatenated along rows."""
    size = batch["input_ids"].shape[0]
    return torch.cat([fn({k: v[i : i + rows] for k, v in batch.items()}) for i in range(0, size, rows)])


def response_mask(tokens: dict[str, torch.Tensor]) -> torch.Tensor:
    """(R, T-1) true on the scored response tokens of prompt + response rows (the losses' mask)."""
    return tokens["labels"][:, 1:] != IGNORE_INDEX


def per_sequence_mean(grid: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(R, T) values -> (R,) mean over each row's masked entries (0 for an empty row)."""
    return (grid * mask).sum(-1) / mask.sum(-1).clamp(min=1)


@dataclass
class ScoredRollout:
    items: list[PromptItem]  # the prompt of each row
    rollout: Rollout
    scores: torch.Tensor  # (R,) after the missing-EOS penalty
    tokens: dict[str, torch.Tensor]  # input_ids, attention_mask, labels (R, T)
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)  # (R,) each: the source's, by name

    @property
    def mask(self) -> torch.Tensor:
        return response_mask(self.tokens)  # (R, T-1)

    def statistics_tensors(self) -> dict[str, torch.Tensor]:
        """What `rollout_statistics` needs of these rows, as the tensors the engine gathers."""
        return {"scores": self.scores, "bigrams": torch.tensor(ngram_codes(self.rollout.texts, 2), dtype=torch.int64)}


def rollout_statistics(rollout: dict[str, torch.Tensor]) -> dict[str, float]:
    """The step's statistics that do not add up across processes, from the whole step's rollout
    (gathered from every process): `reward_std`, the scores' population std, and
    `response/distinct_2`, the replies' distinct word bigrams over all their bigrams, as
    `alignloop eval` measures the degeneration it warns of (on the step's replies, not the
    held-out ones: a step's 64 replies score higher than 320, so compare steps with steps)."""
    statistics = {"reward_std": float(rollout["scores"].double().std(unbiased=False))}
    bigrams = rollout.get("bigrams")
    if bigrams is not None and bigrams.numel():
        statistics["response/distinct_2"] = bigrams.unique().numel() / bigrams.numel()
    return statistics


@dataclass
class OnlineRL(OnPolicyMethod):
    """Sampling, scoring, reference log-probs, sample tables and the held-out evaluation; the
    over-optimisation alarm and its state are every online method's `end_step` / `state_dict`."""

    sampling: SamplingConfig
    reward_source: Any
    pad_token_id: int
    make_engine: Callable  # causal LM -> rollout engine, so sampling uses the weights being trained
    rows_per_micro_batch: int
    missing_eos_penalty: float = 0.0
    reference_model: torch.nn.Module | None = None
    eval_seed: int = 1234
    eval_samples: int = 1  # responses per held-out prompt
    last_samples: list[dict] = field(default_factory=list)
    # kl_stop and the over-optimisation alarm (evaluation/overoptimisation.py); each method's
    # settings section is a StopRules and takes this field's place.
    settings: StopRules = field(default_factory=StopRules)
    log: Callable[[str], None] = print
    watch: OveroptimisationWatch | None = None
    backtracks_taken: int = 0  # of settings.kl_backtracks
    said_unwatched: bool = False  # the warning that stop_on_overoptimisation has no ensemble to watch, said once

    # ---------------------------------------------------------------- hooks for the methods
    def policy_of(self, model: torch.nn.Module) -> torch.nn.Module:
        """The causal LM inside `model` (PPO wraps it with a value head)."""
        return getattr(model, "module", model)

    def kl_coef_now(self) -> float:
        raise NotImplementedError

    def stop_reason(self, metrics: dict[str, float]) -> str | None:
        """Why training should end at this step, or None. The engine asks with the step's rollout
        figures, before its updates, skips them and ends the run on the last weights whose
        replies were within bounds (`may_stop`). A KL budget: a step whose replies are `kl_stop`
        nats from the reference ends the run, so that a reward model the policy climbs fast
        cannot pull it further in the steps left (a fixed β and step count suit one reward
        model's pace, not every one's)."""
        if self.alarm_stops:
            return "the over-optimisation alarm rang (stop_on_overoptimisation)"
        kl, budget = metrics.get("kl/sequence"), self.settings.kl_stop
        if budget is None or kl is None or kl < budget:
            return None
        return f"its replies were {kl:.2f} nats from the reference, at or past kl_stop = {budget:g}"

    @property
    def alarm_stops(self) -> bool:
        """The over-optimisation alarm has rung and ends the run. The watch remembers the alarm,
        so a run resumed after the alarm stopped it stops again."""
        return self.settings.stop_on_overoptimisation and self.watch is not None and self.watch.rang_at is not None

    def may_stop(self) -> bool:
        return self.settings.kl_stop is not None or self.settings.stop_on_overoptimisation

    def backtrack(self, metrics: dict[str, float]) -> float | None:
        """Half the learning rate while kl_backtracks are left and the KL budget alone stops the
        step. Adam moves the adapters by about lr a step while the KL grows with the square of
        the distance, so the step that crosses the budget often crosses it by far (3.88 -> 5.42
        nats in one demo run) and the run would end with part of its budget unspent; going back
        and on at half the pace spends it in smaller strides."""
        if self.alarm_stops or self.backtracks_taken >= self.settings.kl_backtracks or self.stop_reason(metrics) is None:
            return None
        self.backtracks_taken += 1
        return 0.5

    def watch_overoptimisation(self, metrics: dict[str, float]) -> dict[str, float]:
        """The alarm's figures for this step (none without an ensemble's disagreement); its
        sentence is said the step it first rings. `end_step` calls it (PPO adds its β)."""
        spread, reward = metrics.get("reward/disagreement"), metrics.get("reward")
        if spread is None or reward is None:
            if self.settings.stop_on_overoptimisation and not self.said_unwatched:
                self.log("[bold yellow]warning[/]: stop_on_overoptimisation is set but the reward has no ensemble's "
                         "disagreement to watch (reward_model with reward.ensemble > 1): the alarm cannot ring")
                self.said_unwatched = True
            return {}
        if self.watch is None:
            self.watch = OveroptimisationWatch(self.settings.overoptimisation_bound)
        alarm = self.watch.check(spread, reward)
        if alarm is not None:
            self.log(f"[bold yellow]warning[/]: over-optimisation at step {self.watch.steps}: {alarm}")
        ratio = self.watch.ratio(spread)
        return {**({} if ratio is None else {"overoptimisation/disagreement_ratio": ratio}),
                "overoptimisation/alarm": float(alarm is not None)}

    def rollout_statistics(self, rollout: dict[str, torch.Tensor]) -> dict[str, float]:
        return rollout_statistics(rollout)

    def end_step(self, metrics: dict[str, float]) -> dict[str, float]:
        return self.watch_overoptimisation(metrics)

    def state_dict(self) -> dict[str, Any]:
        """The alarm's state and the backtracks taken, for the run's checkpoints (a resumed run
        keeps its first step's figures and its learning rate)."""
        alarm = {} if self.watch is None else {"overoptimisation": self.watch.state_dict()}
        return {"backtracks_taken": self.backtracks_taken, **alarm}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.backtracks_taken = int(state.get("backtracks_taken", 0))
        if state.get("overoptimisation"):
            bound = self.settings.overoptimisation_bound
            self.watch = OveroptimisationWatch.from_state(bound, state["overoptimisation"])

    # ---------------------------------------------------------------- shared steps
    @property
    def eval_batch_size(self) -> int:
        """Held-out prompts per evaluation batch: one sampling batch, whatever the training batch
        size, so that runs of different methods draw the same samples from the same policy."""
        return max(1, self.sampling.batch_size // self.eval_samples)

    @property
    def temperature(self) -> float:
        return self.sampling.temperature or 1.0  # greedy decoding scores with the plain softmax

    def sample(self, model: torch.nn.Module, items: list[PromptItem], per_prompt: int,
               record_logprobs: bool = False) -> ScoredRollout:
        """`per_prompt` responses to every prompt (consecutive rows), scored by the reward source;
        `record_logprobs` for a caller that will want `sampling_logps`."""
        rows = [item for item in items for _ in range(per_prompt)]
        rollout = self.make_engine(self.policy_of(model)).generate([item.prompt_ids for item in rows],
                                                                   record_logprobs=record_logprobs)
        scores = self.reward_source([item.prompt for item in rows], rollout.texts)
        diagnostics = {name: torch.tensor(values, dtype=torch.float32)
                       for name, values in self.reward_source.diagnostics().items()}
        scores = penalize_unfinished(scores, rollout.finished, self.missing_eos_penalty)
        device = next(model.parameters()).device
        tokens = rollout_batch(rollout, self.pad_token_id)  # the `per_prompt` rows of a prompt share it
        tokens = {k: v.to(device) for k, v in tokens.items()}
        return ScoredRollout(rows, rollout, torch.tensor(scores, dtype=torch.float32, device=device), tokens,
                             diagnostics)

    def reference_logps(self, model: torch.nn.Module, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """(R, T-1) log-probs of the responses under the frozen reference."""
        with reference_network(self.policy_of(model), self.reference_model) as reference:
            return in_row_chunks(tokens, self.rows_per_micro_batch,
                                 lambda chunk: response_token_logps(reference, chunk, self.temperature)[0])

    def policy_logps(self, model: torch.nn.Module, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """(R, T-1) log-probs of the responses under the current policy (no gradient wanted here)."""
        return in_row_chunks(tokens, self.rows_per_micro_batch,
                             lambda chunk: response_token_logps(self.policy_of(model), chunk, self.temperature)[0])

    def sampling_logps(self, model: torch.nn.Module, scored: ScoredRollout) -> torch.Tensor:
        """(R, T-1) the policy's log-probs of its replies at sampling time: the sampler's own
        where they stand for the policy's (float32 training, as on CPUs without fast bf16;
        `recorded_logps`), else computed again. One RLOO step of benchmarks/rl_step_vs_trl.py on
        the 2-core AMD EPYC with AVX2 kernels in float32: 15.15 -> 11.88 s. Under bf16 the
        sampler is a bf16 copy and nothing changes."""
        recorded = recorded_logps(scored.rollout, scored.mask, self.policy_of(model))
        return recorded if recorded is not None else self.policy_logps(model, scored.tokens)

    @staticmethod
    def rollout_metrics(scored: ScoredRollout, kl: torch.Tensor) -> dict[str, float]:
        """Sums over sequences (the engine divides by the global count); kl is (R, T-1) k1. The
        figures come from the replies alone."""
        mask = scored.mask
        finished = torch.tensor(scored.rollout.finished, dtype=torch.float32)
        scores = scored.scores.float()
        return {
            "reward": float(scores.sum()),
            "kl/sequence": float((kl * mask).sum()),
            "completions/mean_length": float(mask.sum()),
            "response/eos_rate": float(finished.sum()),
            "response/wordless_rate": float(sum(map(is_wordless, scored.rollout.texts))),
            **{f"reward/{name}": float(values.sum()) for name, values in scored.diagnostics.items()},
        }

    def sample_rows(self, scored: ScoredRollout, kl: torch.Tensor, every: int = 1, limit: int = 8) -> list[dict]:
        """A few rows for the sample table: prompt, response, reward, KL of the sequence."""
        kl_sums = (kl * scored.mask).sum(-1).tolist()
        rows = []
        for i in range(0, len(scored.items), every)[:limit]:
            rows.append({"prompt": str(scored.items[i].prompt)[:200], "response": scored.rollout.texts[i][:300],
                         "reward": round(float(scored.scores[i]), 4), "kl": round(kl_sums[i], 4)})
        return rows

    @torch.no_grad()
    def evaluate_batch(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[LossOutput, int]:
        """`eval_samples` sampled responses per held-out prompt: reward, KL to the reference, length.

        Sampling uses a fixed seed in a forked RNG: every evaluation draws the same noise, so the
        before/after numbers differ by the policy alone, and training's RNG stream (which a
        resumed run must reproduce) is untouched. The loss is the negated RL objective,
        -(reward - kl_coef * KL).
        """
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.eval_seed)
            scored = self.sample(model, batch["prompts"], per_prompt=self.eval_samples, record_logprobs=True)
        kl = kl_penalty(self.sampling_logps(model, scored), self.reference_logps(model, scored.tokens), "k1")
        metrics = self.rollout_metrics(scored, kl)
        objective = scored.scores.sum() - self.kl_coef_now() * metrics["kl/sequence"]
        return LossOutput(-objective, {k: torch.tensor(v) for k, v in metrics.items()}), len(scored.items)


# ---------------------------------------------------------------------- running a method
@dataclass
class OnlineRun:
    """What every online method's run starts from: the policy (dropout off), its prompts, and
    the fields of `OnlineRL` that do not depend on the method."""

    config: Any  # PPOConfig / GRPOConfig: model, data, reward, sampling, train
    console: Any
    policy: torch.nn.Module
    tokenizer: Any
    train_prompts: list[PromptItem]
    eval_prompts: list[PromptItem]

    def method_fields(self) -> dict[str, Any]:
        config = self.config
        return {
            "sampling": config.sampling,
            "reward_source": build_reward_source(config.reward),
            "pad_token_id": self.tokenizer.pad_token_id,
            "make_engine": rollout_engine_factory(config.sampling, self.tokenizer, config.model.name,
                                                  config.data.max_prompt_length + config.sampling.max_new_tokens,
                                                  config.train.seed),
            "eval_samples": config.data.eval_samples,
            "reference_model": frozen_copy_unless_lora(self.policy),  # KL is measured even when β = 0
            "log": self.console.print,
        }

    def job(self, network: torch.nn.Module, method: OnlineRL, save_final: SaveFinal) -> TrainingJob:
        return TrainingJob(
            network, method, self.train_prompts, collate_prompts, save_final=save_final, eval_examples=self.eval_prompts,
            data_info={"train_sha256": dataset_fingerprint([p.record for p in self.train_prompts]),
                       "train_prompts": len(self.train_prompts), "eval_prompts": len(self.eval_prompts)},
        )


def start_online_run(config, context: RunContext) -> OnlineRun:
    """The policy with dropout off, the context check, and the prompts."""
    policy, tokenizer = load_model_and_tokenizer(config.model)
    disable_dropout(policy)
    check_context_fits(policy, config.data, config.sampling)
    console = context.console
    train_prompts = read_prompts(config.data.train, tokenizer, config.data, console)
    eval_prompts = (read_prompts(config.data.eval, tokenizer, config.data, console, split=config.data.eval_split)
                    if config.data.eval else [])
    console.print(f"[bold]data[/]: {len(train_prompts)} training prompts, {len(eval_prompts)} held out")
    return OnlineRun(config, console, policy, tokenizer, train_prompts, eval_prompts)
