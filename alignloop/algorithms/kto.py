"""Kahneman–Tversky optimisation: learn from unpaired thumbs up / thumbs down.

KTO (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization") needs
no pairs: each example is one response judged desirable or undesirable. Like DPO it uses the
implicit reward r = log π(y|x) − log π_ref(y|x), but judges it against a reference point z0
rather than against a second response (eq. 8, `alignloop.losses.kto`):

    desirable:    λ_D (1 − σ(β (r − z0)))        undesirable:  λ_U (1 − σ(β (z0 − r)))

z0 estimates KL(π ‖ π_ref), so a response only counts as a gain when the policy favours it
more than it has drifted from the reference in general. Following the paper, each
micro-batch estimates it from MISMATCHED pairs: prompt i with the response of example
(i + 1) mod B, which says nothing about quality; z0 = max(0, mean(π − π_ref) over those pairs)
(`kto_reference_point`), with no gradient through either model, as in TRL. Choices:

* A micro-batch of one example has no mismatched pair (its "neighbour" is itself, whose log-ratio
  is the implicit reward), so there z0 = 0: the clamp's lower bound, i.e. KTO with no reference
  point. `train.batch_size: 1` therefore makes every step so, and a warning says so.
* With several processes each one builds mismatched pairs inside its own slice, and the training
  step gathers every process's pairs before the mean (as TRL does), so z0 is that of the global
  micro-batch. Evaluation does not gather (processes may hold different numbers of eval
  batches, and a collective there would hang): each eval batch uses its own estimate.
* The pairs depend on which examples share a batch, known only at the step (the engine shuffles
  every epoch), so the reference log-probs of the mismatched pairs are computed at each step:
  with LoRA from the same network with its adapters off, otherwise from a frozen copy of the
  starting model. `reference: precompute` (the default) computes the reference log-probs of
  the examples' OWN responses once before training, saving that forward pass per step; TRL
  instead fixes each example's mismatched partner before training and therefore forbids
  shuffling. `reference: online` recomputes the own-response reference every step too.

Data: binary feedback files (`{"prompt", "response", "label"}`). Preference pairs are split into
one desirable (chosen) and one undesirable (rejected) example, as the paper's experiments do
with paired data sets. Rankings and ratings are refused: made into pairs, a middle-ranked
response would be labelled both good and bad.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal, Sequence

import torch
from accelerate.utils import gather
from pydantic import Field

from alignloop.algorithms.run import RunContext, TrainingJob, run_method
from alignloop.config import Section
from alignloop.data import (
    IGNORE_INDEX,
    BinaryFeedback,
    DataError,
    EncodedBinary,
    EncodedExample,
    PreferenceDataConfig,
    collate_binary,
    dataset_fingerprint,
    encode_preference_records,
    pad_batch,
    read_preference_data,
)
from alignloop.engine import LossOutput, TrainConfig, TrainingMethod, TrainResult
from alignloop.engine.precompute import reference_logps
from alignloop.losses import kto, kto_reference_point
from alignloop.models import ModelConfig, load_model_and_tokenizer, save_trained_model
from alignloop.models.forward import response_logps
from alignloop.models.reference import frozen_copy_unless_lora, reference_network


class KTOSettings(Section):
    beta: float = Field(0.1, gt=0, description="strength of the KL regularisation (inverse temperature)")
    desirable_weight: float = Field(1.0, gt=0, description="λ_D, the weight of each thumbs-up example")
    undesirable_weight: float = Field(1.0, gt=0, description="λ_U, the weight of each thumbs-down example")
    reference: Literal["precompute", "online"] = Field(
        "precompute", description="reference log-probs of the responses computed once before training, or every step"
    )
    reference_batch_size: int = Field(16, ge=1, description="batch size for precomputing reference log-probs")


class KTOConfig(Section):
    model: ModelConfig = Field(description="the policy to train (its starting point is the reference)")
    data: PreferenceDataConfig = Field(description="binary feedback (kind binary); preference pairs are split in two")
    train: TrainConfig = Field(default_factory=TrainConfig, description="optimiser, schedule and run settings")
    kto: KTOSettings = Field(default_factory=KTOSettings, description="the KTO loss and its reference")
    save_merged: bool = Field(False, description="with LoRA, also write the base model with adapters merged")


# ---------------------------------------------------------------------------------- data

def feedback_records(records) -> list[BinaryFeedback]:
    """Binary feedback, plus each preference pair as a thumbs up (chosen) and a thumbs down (rejected)."""
    if records.rankings or records.ratings:
        raise DataError(
            f"KTO learns from binary feedback or preference pairs; the data also holds {len(records.rankings)} "
            f"rankings and {len(records.ratings)} ratings, which have no single good / bad label per response"
        )
    split = [
        BinaryFeedback(prompt=pair.prompt, response=response, label=label)
        for pair in records.pairs
        for response, label in ((pair.chosen, True), (pair.rejected, False))
    ]
    return list(records.binary) + split


def weight_balance_warning(num_desirable: int, num_undesirable: int, desirable_weight: float,
                           undesirable_weight: float) -> str | None:
    """A warning when λ_D n_D / (λ_U n_U) is outside [1, 4/3], the range Ethayarajh et al. 2024
    recommend; None when inside."""
    if num_desirable == 0 or num_undesirable == 0:
        return (f"warning: the training data holds {num_desirable} desirable and {num_undesirable} undesirable "
                "examples; KTO needs both kinds to learn what to prefer")
    ratio = desirable_weight * num_desirable / (undesirable_weight * num_undesirable)
    if 1.0 - 1e-9 <= ratio <= 4 / 3 + 1e-9:
        return None
    low = undesirable_weight * num_undesirable / num_desirable
    return (
        f"warning: λ_D·n_D / (λ_U·n_U) = {desirable_weight:g}·{num_desirable} / ({undesirable_weight:g}·"
        f"{num_undesirable}) = {ratio:.3g}, outside the [1, 4/3] the KTO paper recommends; with "
        f"undesirable_weight={undesirable_weight:g}, a desirable_weight in [{low:.3g}, {4 / 3 * low:.3g}] fits"
    )


def split_prompt_response(example: EncodedExample) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids): the response starts at the first label that is not -100."""
    start = next((i for i, label in enumerate(example.labels) if label != IGNORE_INDEX), len(example.labels))
    return list(example.input_ids[:start]), list(example.input_ids[start:])


def mismatched_examples(examples: Sequence[EncodedExample], max_length: int) -> list[EncodedExample]:
    """Prompt i with the response of example (i + 1) mod B, labels on the response only; a response
    that does not fit after its new prompt loses its tail (the encoding's length rule)."""
    parts = [split_prompt_response(example) for example in examples]
    mismatched = []
    for index, (prompt, _) in enumerate(parts):
        response = parts[(index + 1) % len(parts)][1][: max(max_length - len(prompt), 0)]
        mismatched.append(EncodedExample(prompt + response, [IGNORE_INDEX] * len(prompt) + response))
    return mismatched


@dataclass(frozen=True)
class FeedbackWithReference:
    feedback: EncodedBinary
    reference_logps: float = 0.0


def collate_kto(items: list[FeedbackWithReference], pad_token_id: int, max_length: int) -> dict[str, Any]:
    """collate_binary's rows (B, T) and label (B,), reference_logps (B,), and — when B > 1 — the
    mismatched pairs as a padded sub-batch `mismatched` (B, T')."""
    batch = collate_binary([item.feedback for item in items], pad_token_id)
    batch["reference_logps"] = torch.tensor([item.reference_logps for item in items], dtype=torch.float32)  # (B,)
    if len(items) > 1:
        examples = [item.feedback.example for item in items]
        batch["mismatched"] = pad_batch(mismatched_examples(examples, max_length), pad_token_id)
    return batch


# ---------------------------------------------------------------------------------- the loss

@dataclass
class KTOMethod(TrainingMethod):
    settings: KTOSettings
    reference_model: torch.nn.Module | None = None  # full fine-tuning: a frozen copy of the start

    def count_items(self, batch: dict[str, Any]) -> int:
        return batch["input_ids"].shape[0]

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> LossOutput:
        policy_logps, _ = response_logps(model, batch)  # (B,)
        if self.settings.reference == "precompute":
            reference_logps = batch["reference_logps"]  # (B,)
        else:
            reference_logps = self._reference_logps(model, batch)  # (B,)
        loss_sum, metrics = kto(
            policy_logps, reference_logps, batch["label"], self.reference_point(model, batch),
            beta=self.settings.beta, desirable_weight=self.settings.desirable_weight,
            undesirable_weight=self.settings.undesirable_weight,
        )
        return LossOutput(loss_sum, metrics)

    @torch.no_grad()
    def reference_point(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """z0 () from the batch's mismatched pairs; 0 for a batch of one (see the module docstring)."""
        mismatched = batch.get("mismatched")
        if mismatched is None:
            return torch.zeros((), device=batch["input_ids"].device)
        policy_kl_logps, _ = response_logps(model, mismatched)  # (B,)
        reference_kl_logps = self._reference_logps(model, mismatched)  # (B,)
        if model.training:  # a training step: every process runs the same micro-batches
            policy_kl_logps, reference_kl_logps = gather(policy_kl_logps), gather(reference_kl_logps)
        return kto_reference_point(policy_kl_logps, reference_kl_logps)

    @torch.no_grad()
    def _reference_logps(self, model: torch.nn.Module, rows: dict[str, Any]) -> torch.Tensor:
        with reference_network(model, self.reference_model) as reference:
            return response_logps(reference, rows)[0]


@torch.no_grad()
def precompute_reference(model, examples: list[EncodedBinary], pad_token_id: int, batch_size: int,
                         accelerator) -> list[FeedbackWithReference]:
    """Every example with the reference log-probs of its own response."""
    logps = reference_logps(model, [e.example for e in examples], pad_token_id, batch_size, accelerator)
    return [FeedbackWithReference(example, value) for example, value in zip(examples, logps)]


# ---------------------------------------------------------------------------------- the run

def run_kto(config: KTOConfig, resume: bool | str = False) -> TrainResult:
    return run_method(config, partial(prepare_kto, config), resume)


def prepare_kto(config: KTOConfig, context: RunContext) -> TrainingJob:
    data = read_preference_data(config.data)  # before the model: bad data fails in a second
    train_records, eval_records = feedback_records(data.train), feedback_records(data.eval)
    model, tokenizer = load_model_and_tokenizer(config.model)
    encode = partial(encode_preference_records, tokenizer, max_length=config.data.max_length,
                     max_prompt_length=config.data.max_prompt_length, use_chat_template=config.data.use_chat_template,
                     on_invalid=config.data.on_invalid)
    train_encoded, report = encode(only_binary(data.train, train_records))
    eval_encoded, _ = encode(only_binary(data.eval, eval_records))
    context.console.print(f"[bold]data[/]: {data.report}; encoded: {report}")
    desirable = sum(item.label for item in train_encoded.binary)
    undesirable = len(train_encoded.binary) - desirable
    for line in _warnings(config, desirable, undesirable):
        context.console.print(f"[yellow]{line}[/]")
    # The mismatched pairs' reference is needed every step: without LoRA, keep the starting weights.
    reference_model = frozen_copy_unless_lora(model)
    train_items, eval_items = _with_reference(config, model, tokenizer, train_encoded.binary, eval_encoded.binary,
                                              context.accelerator)
    return TrainingJob(
        model, KTOMethod(config.kto, reference_model), train_items,
        partial(collate_kto, pad_token_id=tokenizer.pad_token_id, max_length=config.data.max_length),
        save_final=partial(save_trained_model, tokenizer=tokenizer, merged=config.save_merged),
        eval_examples=eval_items,
        data_info={"train_sha256": dataset_fingerprint(train_records), "train_examples": len(train_items),
                   "train_desirable": desirable, "train_undesirable": undesirable,
                   "eval_examples": len(eval_items), "encoding": str(report)},
    )


def only_binary(records, feedback: list[BinaryFeedback]):
    """The same records holding only binary feedback (pairs already split into it)."""
    return replace(records, pairs=[], rankings=[], ratings=[], binary=feedback)


def _warnings(config: KTOConfig, desirable: int, undesirable: int) -> list[str]:
    lines = [weight_balance_warning(desirable, undesirable, config.kto.desirable_weight, config.kto.undesirable_weight)]
    if config.train.batch_size == 1:
        lines.append("warning: train.batch_size 1 leaves no mismatched pair to estimate the KL reference point "
                     "from, so z0 = 0 at every step; use a batch size of 2 or more")
    return [line for line in lines if line]


def _with_reference(config, model, tokenizer, train_examples, eval_examples, accelerator):
    if config.kto.reference != "precompute":
        return [FeedbackWithReference(e) for e in train_examples], [FeedbackWithReference(e) for e in eval_examples]
    compute = partial(precompute_reference, model, pad_token_id=tokenizer.pad_token_id,
                      batch_size=config.kto.reference_batch_size, accelerator=accelerator)
    return compute(train_examples), compute(eval_examples)
