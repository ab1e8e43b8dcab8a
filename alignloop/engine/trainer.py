"""The one training loop every method runs on, built on Hugging Face Accelerate.

Accelerate owns devices, process groups (DDP over gloo on CPU, NCCL on GPU) and autocast.
This loop owns what must be identical across methods and exact across interruptions:

* the sample order is a pure function of (seed, epoch), and each process takes its slice of
  every global batch, so the global step alone fixes the data position on resume and a
  2-process run sees the same examples per step as a 1-process run with the same global batch;
* the loss is normalised by the item count of the whole optimizer step (see `method.py`);
* a NaN/inf loss or gradient stops the run before `optimizer.step`, so the weights and the
  last checkpoint stay good;
* checkpoints hold only trainable tensors, optimizer, scheduler, per-rank RNG and the step;
* on-policy methods (PPO, GRPO) collect experience first and then run several updates on it;
  one step is one rollout with its updates (see `method.py`).
"""

from __future__ import annotations

import math
import os
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import set_seed
from transformers import get_scheduler

from alignloop.engine import checkpoint as ckpt
from alignloop.engine.console import console_for
from alignloop.engine.config import TrainConfig
from alignloop.engine.memory import freed_memory_retained
from alignloop.engine.method import Experience, LossOutput, NonFiniteLossError, OnPolicyMethod, TrainingMethod
from alignloop.engine.metrics import MetricsLogger, drop_metrics_after
from alignloop.errors import UserError
from alignloop.engine.progress import TrainingProgress
from alignloop.engine.run_dir import write_run_info
from alignloop.hardware import PrecisionChoice, resolve_mixed_precision

# Test hook: SIGKILL this process right after the given step (and its checkpoint) completes,
# so tests can prove that a killed run resumes exactly. Never set in normal use.
KILL_AT_STEP_ENV = "ALIGNLOOP_FAULT_KILL_AT_STEP"


class ResumeError(RuntimeError, UserError):
    """A resume was asked for with no checkpoint, or a fresh run would overwrite one."""


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    global_step: int
    final_metrics: dict[str, float]
    final_model_dir: Path | None


def trainable_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the parameters that train (LoRA: the adapters, a few MB; full fine-tuning: the model)."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def epoch_order(num_examples: int, seed: int, epoch: int) -> list[int]:
    """The shuffled example order of one epoch: a pure function, so resuming needs no state."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_examples, generator=generator).tolist()


def micro_batch_indices(order: list[int], step_in_epoch: int, batch_size: int, world: int, accum: int, rank: int) -> list[list[int]]:
    """This process's micro-batches for one optimizer step.

    A global step covers `batch_size * world * accum` consecutive positions of the epoch
    order; the last step of an epoch wraps around to the start, so no example is dropped.
    """
    global_batch = batch_size * world * accum
    start = step_in_epoch * global_batch
    batches = []
    for micro in range(accum):
        offset = start + (micro * world + rank) * batch_size
        batches.append([order[(offset + i) % len(order)] for i in range(batch_size)])
    return batches


def batch_token_count(batch: dict[str, Any]) -> int:
    """Real (non-padding) tokens in a batch, for tokens/s; nested sub-batches (a reward model's
    pairs and rankings) are counted too; 0 for batches that hold no text."""
    if "num_tokens" in batch:
        return int(batch["num_tokens"])
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    if "input_ids" in batch:
        return int(batch["input_ids"].numel())
    return sum(batch_token_count(v) for v in batch.values() if isinstance(v, dict))


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    moved = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
        elif isinstance(value, dict):
            value = to_device(value, device)
        moved[key] = value
    return moved


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with no weight decay on biases and norm weights (1-D tensors), as is standard."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters")
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel (CPU and CUDA) is ~5x faster than the per-tensor loop on a 2-core CPU.
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.adam_betas, eps=config.adam_eps, fused=True)


def warmup_steps(config: TrainConfig, total_steps: int) -> int:
    if config.warmup_steps is not None:
        return config.warmup_steps
    return int(math.ceil(config.warmup_ratio * total_steps))


class Trainer:
    """Runs a `TrainingMethod` over a list of examples; see the module docstring."""

    def __init__(
        self,
        config: TrainConfig,
        model: torch.nn.Module,
        method: TrainingMethod,
        train_examples: Sequence[Any],
        collate: Callable[[list[Any]], dict[str, Any]],
        *,
        eval_examples: Sequence[Any] | None = None,
        save_final: Callable[[torch.nn.Module, Path], None] | None = None,
        config_yaml: str = "",
        data_info: dict[str, Any] | None = None,
        accelerator: Accelerator | None = None,
    ):
        if not isinstance(method, TrainingMethod):
            raise TypeError(f"{type(method).__name__} is not a TrainingMethod (alignloop/engine/method.py declares "
                            "what the trainer calls)")
        if not train_examples:
            raise ValueError("no training examples left after reading and filtering the data")
        self.config = config
        self.method = method
        self.train_examples = train_examples
        self.eval_examples = eval_examples or []
        self.collate = collate
        self.save_final = save_final
        self.config_yaml = config_yaml
        self.data_info = data_info or {}
        self.accelerator = accelerator or make_accelerator(config)
        self.run_dir = Path(config.output_dir)
        self.checkpoint_root = self.run_dir / "checkpoints"
        self.optimizer = build_optimizer(model, config)
        self.model, self.optimizer = self.accelerator.prepare(model, self.optimizer)
        # Per-process seed: dropout masks must differ across data-parallel ranks.
        set_seed(config.seed + self.rank)
        self.total_steps = self._total_steps()
        self.on_policy = isinstance(method, OnPolicyMethod)
        updates = method.updates_per_step() if self.on_policy else 1
        # The scheduler is stepped by hand once per optimizer update (accelerate would step it
        # once per process), and saved in our own checkpoints.
        self.scheduler = get_scheduler(
            {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[config.schedule],
            self.optimizer,
            num_warmup_steps=warmup_steps(config, self.total_steps) * updates,
            num_training_steps=self.total_steps * updates,
        )
        self.global_step = 0
        self.tokens_seen = 0
        self.samples: list[dict[str, Any]] = []  # the last rollout's sample rows (on-policy methods)
        # The trainable weights that sampled the last replies found within the method's bounds
        # (a KL budget), and that step: the run ends on them when a later step's replies cross.
        self._within_bounds: tuple[int, dict[str, torch.Tensor]] | None = None

    # ------------------------------------------------------------------ sizes and order
    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def global_batch_size(self) -> int:
        return self.config.batch_size * self.world * self.config.grad_accum

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_examples) / self.global_batch_size)

    def _total_steps(self) -> int:
        if self.config.max_steps is not None:
            return self.config.max_steps
        return max(1, math.ceil(self.config.epochs * self.steps_per_epoch))

    def _micro_batches(self, step: int) -> list[dict[str, Any]]:
        epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
        order = epoch_order(len(self.train_examples), self.config.seed, epoch)
        indices = micro_batch_indices(
            order, step_in_epoch, self.config.batch_size, self.world, self.config.grad_accum, self.rank
        )
        return [self.collate([self.train_examples[i] for i in batch]) for batch in indices]

    # ------------------------------------------------------------------ the loop
    def train(self, resume: bool | str = False) -> TrainResult:
        self._prepare_run_dir(resume)
        logger = MetricsLogger(self.run_dir, self.config.report_to, {}, bool(resume)) if self.is_main else None
        kill_at = int(os.environ.get(KILL_AT_STEP_ENV, "0") or 0)
        last_metrics: dict[str, float] = {}
        progress = TrainingProgress(self.total_steps, self.global_step, enabled=self.config.progress and self.is_main)
        if self.config.eval_on_start and self.eval_examples and self.global_step == 0:
            baseline = self.evaluate()
            if logger is not None:
                logger.log(0, baseline)
        memory_retention = freed_memory_retained(self.config.retain_freed_memory and self.accelerator.device.type == "cpu")
        try:
            with progress, memory_retention:
                while self.global_step < self.total_steps:
                    started = time.perf_counter()
                    metrics = self._train_step(self._micro_batches(self.global_step))
                    self.global_step += 1
                    metrics["train/tokens_per_s"] = metrics.pop("_tokens") / (time.perf_counter() - started)
                    last_metrics = metrics
                    progress.advance(metrics)
                    self._after_step(logger, metrics)
                    if kill_at and self.global_step == kill_at:
                        os.kill(os.getpid(), signal.SIGKILL)
                    if self._stop_early(metrics):
                        break
            final_dir = self._finish(logger, last_metrics)
        finally:
            if logger is not None:
                logger.close()
        return TrainResult(self.run_dir, self.global_step, last_metrics, final_dir)

    def _stop_early(self, metrics: dict[str, float]) -> bool:
        """Whether the method ends the run at this step (online RL's KL budget), said once."""
        reason = self.method.stop_reason(metrics)
        where = f"step {self.global_step} of {self.total_steps}"
        if "train/backtracked_to_step" in metrics:
            console_for(self.accelerator).print(
                f"[bold]backtracked[/] at {where}, without its update: {reason}; on from the weights that sampled step "
                f"{metrics['train/backtracked_to_step']:.0f}'s replies at lr {metrics['train/lr']:.3g}", soft_wrap=True)
            return False
        if "train/updates_skipped" in metrics:
            kept = metrics.get("train/ended_on_step")
            ending = (f"; the run ends on the weights that sampled step {kept:.0f}'s replies, the last within bounds"
                      if kept is not None else "")
            console_for(self.accelerator).print(f"[bold]stopped[/] at {where} without its update: {reason}{ending}",
                                                soft_wrap=True)
            return True
        if reason is not None and self.global_step < self.total_steps:  # a figure only the updates measured
            console_for(self.accelerator).print(f"[bold]stopped early[/] after {where}: {reason}", soft_wrap=True)
            return True
        return False

    def _after_step(self, logger: MetricsLogger | None, metrics: dict[str, float]) -> None:
        step, cfg = self.global_step, self.config
        if logger is not None and self.samples and cfg.sample_every and (
                step == 1 or step % cfg.sample_every == 0 or step == self.total_steps):
            logger.log_samples(step, self.samples)
        if cfg.eval_every and self.eval_examples and step % cfg.eval_every == 0 and step < self.total_steps:
            metrics.update(self.evaluate())
        if logger is not None and (step % cfg.log_every == 0 or step == self.total_steps):
            logger.log(step, metrics)
        if cfg.save_every and step % cfg.save_every == 0 and step < self.total_steps:
            self.save_checkpoint()

    def _finish(self, logger: MetricsLogger | None, last_metrics: dict[str, float]) -> Path | None:
        if self.eval_examples:
            final_eval = self.evaluate()
            last_metrics.update(final_eval)
            if logger is not None:
                logger.log(self.global_step, final_eval)
        if self.config.save_every:
            self.save_checkpoint()
        final_dir = None
        if self.save_final is not None:
            final_dir = self.run_dir / "final"
            if self.is_main:
                self.save_final(self.accelerator.unwrap_model(self.model), final_dir)
            self.accelerator.wait_for_everyone()
        return final_dir

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def _reduce(self, value: float | torch.Tensor) -> torch.Tensor:
        tensor = torch.as_tensor(value, dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.reduce(tensor.clone(), reduction="sum") if self.world > 1 else tensor

    def _train_step(self, micro_batches: list[dict[str, Any]]) -> dict[str, float]:
        if not self.on_policy:
            return self._optimizer_step(micro_batches)
        started = time.perf_counter()
        experience = self._collect(micro_batches)
        collected = time.perf_counter()
        metrics = self._rollout_metrics(experience)
        # The replies measure the weights they were sampled from. A step whose replies reach the
        # method's stop (the KL budget, the over-optimisation alarm) ends the run before its
        # updates, so the final policy is the one they measured, not one update further (with
        # 16 prompts a step, that update carried one demo run from 4.27 nats to 5.06 held-out).
        # Nor one update short of it: those weights measured past the bound too, so the run ends
        # on the last weights whose replies measured within it (a held-out KL above the budget
        # otherwise: 5.24 nats for a float32 demo run stopped at 4.5).
        if self.method.stop_reason(metrics) is not None:
            metrics.update({"_tokens": 0.0, "train/updates_skipped": float(len(experience.updates)),
                            "time/rollout_s": collected - started})
            if self._within_bounds is not None:
                metrics.update(self._end_or_backtrack(metrics))
            return metrics
        if self.method.may_stop():
            self._within_bounds = (self.global_step + 1, trainable_copy(self.model))
        per_update = [self._optimizer_step(update) for update in experience.updates]
        metrics.update({name: sum(m[name] for m in per_update) / len(per_update) for name in per_update[0]})
        metrics["_tokens"] = sum(m["_tokens"] for m in per_update)
        metrics["train/lr"] = per_update[0]["train/lr"]  # the rate this step started with
        for name in ("train/epoch", "train/tokens_seen"):  # positions, not averages
            metrics[name] = per_update[-1][name]
        # Where the step's time went: sampling + scoring + reference, then the updates.
        metrics["time/rollout_s"] = collected - started
        metrics["time/update_s"] = time.perf_counter() - collected
        return metrics

    def _end_or_backtrack(self, metrics: dict[str, float]) -> dict[str, float]:
        """Put back the last weights within bounds, to end on them or, where the method goes
        back instead, to carry on from them at its lower rate. Never when they sampled this
        step's replies themselves (just gone back to: twice read, once within and once past,
        they are as near the bound as it can tell) or no step is left to carry on with."""
        gone_back_to = self._within_bounds[0] < self.global_step
        last = self.global_step + 1 >= self.total_steps
        factor = None if gone_back_to or last else self.method.backtrack(metrics)
        kept = float(self._restore_within_bounds())
        if factor is None:
            return {"train/ended_on_step": kept}
        self._scale_lr(factor)
        return {"train/backtracked_to_step": kept, "train/lr": self.optimizer.param_groups[0]["lr"]}

    def _restore_within_bounds(self) -> int:
        """Put back the weights kept by `_train_step`; returns the step whose replies measured them."""
        step, weights = self._within_bounds
        with torch.no_grad():
            for name, parameter in self.model.named_parameters():
                if name in weights:
                    parameter.copy_(weights[name])
        return step

    def _scale_lr(self, factor: float) -> None:
        """Scale the learning rate from now on: the scheduler's base rates (its later steps
        recompute the rate from them, and its checkpoints keep them) and the current ones."""
        self.scheduler.base_lrs = [rate * factor for rate in self.scheduler.base_lrs]
        for group in self.optimizer.param_groups:
            group["lr"] *= factor

    def _rollout_metrics(self, experience: Experience) -> dict[str, float]:
        """What the step's replies say about the weights that sampled them (every process's)."""
        sequences = float(self._reduce(experience.num_sequences))
        metrics = {name: float(self._reduce(value)) / sequences for name, value in experience.metric_sums.items()}
        metrics.update(self.method.rollout_statistics(gather_rollout(experience.rollout)))
        metrics.update(self.method.end_step(metrics))
        return metrics

    def _collect(self, micro_batches: list[dict[str, Any]]) -> Experience:
        """Rollouts of an on-policy method with the current weights, dropout off, no gradients."""
        micro_batches = [to_device(b, self.accelerator.device) for b in micro_batches]
        self.model.eval()
        try:
            with torch.no_grad(), self.accelerator.autocast():
                experience = self.method.collect(self.model, micro_batches)
        finally:
            self.model.train()
        if len(experience.updates) != self.method.updates_per_step():
            raise RuntimeError(f"{type(self.method).__name__} returned {len(experience.updates)} updates, "
                               f"declared {self.method.updates_per_step()}")
        self.samples = experience.samples
        return experience

    def _optimizer_step(self, micro_batches: list[dict[str, Any]]) -> dict[str, float]:
        """Forward/backward every micro-batch, then one clipped AdamW step (or a clear stop)."""
        local_items = sum(self.method.count_items(b) for b in micro_batches)
        global_items = float(self._reduce(local_items))
        if global_items == 0:
            raise ValueError(f"step {self.global_step + 1}: the batch holds no items to learn from")
        # DDP averages gradients over processes; multiplying by `world` turns that into a sum,
        # so the result is sum(per-item loss) / items of the whole step.
        scale = self.world / global_items
        loss_sum, metric_sums, tokens, bad = 0.0, {}, 0, 0.0
        for index, batch in enumerate(micro_batches):
            batch = to_device(batch, self.accelerator.device)
            # Under DDP a micro-batch runs whole: its gradients are reduced in the last backward,
            # which would find the parameters that only earlier parts used unused.
            parts = self.method.parts(batch) if self.world == 1 else [batch]
            for part_index, part in enumerate(parts):
                last = index == len(micro_batches) - 1 and part_index == len(parts) - 1
                out = self._forward_backward(part, scale, sync=last)
                bad += float(not torch.isfinite(out.loss_sum.detach()).item())
                loss_sum += float(out.loss_sum.detach())
                for name, value in out.metric_sums.items():
                    metric_sums[name] = metric_sums.get(name, 0.0) + float(value)
            tokens += batch_token_count(batch)  # after the loss: RL methods set num_tokens once sampled
        grad_norm = self._clip_gradients()
        bad += float(not math.isfinite(grad_norm))
        if float(self._reduce(bad)) > 0:
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(self._non_finite_message(loss_sum, grad_norm))
        used_lr = self.optimizer.param_groups[0]["lr"]  # the rate this update takes
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.tokens_seen += int(self._reduce(tokens))
        return self._step_metrics(loss_sum, metric_sums, global_items, grad_norm, used_lr, tokens)

    def _forward_backward(self, batch: dict[str, Any], scale: float, sync: bool) -> LossOutput:
        """The loss of one (part of a) micro-batch and its backward; DDP reduces gradients only
        in the backward with `sync` (the step's last)."""
        with self.accelerator.no_sync(self.model) if not sync else nullcontext():
            # The whole loss runs under autocast, not only the model's forward: methods may
            # apply layers themselves (the output layer on response positions only).
            with self.accelerator.autocast():
                out = self.method.loss(self.model, batch)
            self.accelerator.backward(out.loss_sum * scale)
        return out

    def _clip_gradients(self) -> float:
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm is not None else float("inf")
        params = [p for p in self.model.parameters() if p.requires_grad]
        return float(self.accelerator.clip_grad_norm_(params, max_norm))

    def _step_metrics(self, loss_sum, metric_sums, global_items, grad_norm, lr, tokens) -> dict[str, float]:
        metrics = {"train/loss": float(self._reduce(loss_sum)) / global_items}
        for name, value in metric_sums.items():
            metrics[name] = float(self._reduce(value)) / global_items
        metrics["train/grad_norm"] = grad_norm
        metrics["train/lr"] = lr
        metrics["train/epoch"] = self.global_step / self.steps_per_epoch if self.steps_per_epoch else 0.0
        metrics["train/tokens_seen"] = float(self.tokens_seen)
        metrics["_tokens"] = float(self._reduce(tokens))
        return metrics

    def _non_finite_message(self, loss_sum: float, grad_norm: float) -> str:
        last = ckpt.latest_checkpoint(self.checkpoint_root)
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"
        return (
            f"step {self.global_step + 1}: non-finite {'loss' if not math.isfinite(loss_sum) else 'gradient'} "
            f"(loss sum {loss_sum}, gradient norm {grad_norm}); stopped before updating the weights; {kept}. "
            "Lower train.lr, enable train.max_grad_norm, or check the data of this step."
        )

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss (and method metrics) over the eval examples, each process taking a slice."""
        model = self.accelerator.unwrap_model(self.model)
        model.eval()
        loss_sum, items, metric_sums = 0.0, 0, {}
        mine = list(range(self.rank, len(self.eval_examples), self.world))
        size = self.method.eval_batch_size or self.config.batch_size
        for start in range(0, len(mine), size):
            batch = self.collate([self.eval_examples[i] for i in mine[start : start + size]])
            batch = to_device(batch, self.accelerator.device)
            with self.accelerator.autocast():
                out, count = self.method.evaluate_batch(model, batch)  # online RL: sample, score, measure the KL
            items += count
            loss_sum += float(out.loss_sum)
            for name, value in out.metric_sums.items():
                metric_sums[name] = metric_sums.get(name, 0.0) + float(value)
        model.train()
        total = max(float(self._reduce(items)), 1.0)
        metrics = {"eval/loss": float(self._reduce(loss_sum)) / total}
        for name, value in metric_sums.items():
            metrics["eval/" + name] = float(self._reduce(value)) / total  # e.g. eval/rewards/accuracies
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        final = ckpt.checkpoint_dir(self.checkpoint_root, self.global_step)
        staging = ckpt.staging_dir(self.checkpoint_root, self.global_step)
        if self.is_main:
            staging.mkdir(parents=True, exist_ok=True)
        self.accelerator.wait_for_everyone()
        ckpt.write_rank_state(staging, self.rank)
        if self.is_main:
            extra = self.method.state_dict() if self.on_policy else {}  # e.g. the adaptive KL coefficient
            state = ckpt.TrainerState(self.global_step, self.total_steps, self.tokens_seen, extra)
            ckpt.write_shared_state(staging, self.accelerator.unwrap_model(self.model), self.optimizer, self.scheduler, state)
        self.accelerator.wait_for_everyone()
        if self.is_main:
            ckpt.publish(staging, final, self.config.save_total_limit)
        self.accelerator.wait_for_everyone()
        return final

    def _prepare_run_dir(self, resume: bool | str) -> None:
        existing = ckpt.latest_checkpoint(self.checkpoint_root)
        if not resume:
            if existing is not None:
                raise ResumeError(
                    f"{self.run_dir} already holds checkpoints ({existing.name}); pass --resume to continue "
                    "that run, or set train.output_dir to a new folder"
                )
            if self.is_main:
                precision = resolve_mixed_precision(self.config.mixed_precision, self.accelerator.device.type)
                if precision.precision != self.accelerator.mixed_precision:  # an Accelerator of the caller's
                    precision = PrecisionChoice(self.accelerator.mixed_precision, "set by the Accelerator passed in")
                write_run_info(self.run_dir, self.config_yaml, self.data_info, self.world, precision)
            self.accelerator.wait_for_everyone()
            return
        path = Path(resume) if isinstance(resume, str) else existing
        if path is None or not (path / ckpt.TRAINER_STATE).is_file():
            raise ResumeError(f"nothing to resume: no complete checkpoint under {self.checkpoint_root}")
        state = ckpt.read_checkpoint(path, self.accelerator.unwrap_model(self.model), self.optimizer, self.scheduler, self.rank)
        if state.total_steps != self.total_steps:
            raise ResumeError(
                f"{path} belongs to a run of {state.total_steps} steps, this config gives {self.total_steps}; "
                "resume with the same train.max_steps / epochs / batch sizes"
            )
        self.global_step, self.tokens_seen = state.global_step, state.tokens_seen
        if self.on_policy:
            self.method.load_state_dict(state.extra)
        if self.is_main:
            drop_metrics_after(self.run_dir / "metrics.jsonl", self.global_step)
            drop_metrics_after(self.run_dir / "samples.jsonl", self.global_step)
        self.accelerator.wait_for_everyone()


def gather_rollout(rollout: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every process's 1-D rollout tensors, concatenated in rank order, so that a statistic
    that does not add up (a standard deviation) is computed once over the whole step, as
    alpaca_farm's `record_step_stats` does. Processes may hold different lengths (tokens), so
    the tensors travel as objects."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rollout
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, {name: values.detach().cpu() for name, values in rollout.items()})
    return {name: torch.cat([part[name] for part in parts]) for name in rollout}


def make_accelerator(config: TrainConfig) -> Accelerator:
    """An Accelerator for this config (CPU unless CUDA is present), in the precision that
    `mixed_precision` resolves to on this hardware; prints that choice and why, in one line."""
    use_cpu = not torch.cuda.is_available()
    if config.mixed_precision == "fp16" and use_cpu:
        raise ValueError("train.mixed_precision: 'fp16' needs a GPU; use 'bf16' or 'auto' on CPU")
    choice = resolve_mixed_precision(config.mixed_precision, "cpu" if use_cpu else "cuda")
    # Accelerate keeps its settings in a process-wide singleton that refuses a second precision.
    # One process may train several models in turn (the RLHF loop, a notebook, the tests), so
    # the per-run part is cleared; the process group (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    accelerator = Accelerator(mixed_precision=choice.precision, cpu=use_cpu)
    console_for(accelerator).print(f"[bold]precision[/]: {choice.reason}", soft_wrap=True)
    return accelerator
