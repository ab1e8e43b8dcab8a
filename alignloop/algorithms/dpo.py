"""Direct preference optimisation: learn from preference pairs without a reward model.

DPO (Rafailov et al. 2023) shows that the KL-regularised RLHF objective has a closed-form
optimum in which the reward is implicit: r(x, y) = β log π(y|x) / π_ref(y|x). Fitting that
implicit reward to the preferences with a Bradley–Terry likelihood trains the policy directly.
The variants (`alignloop.losses.DPO_LOSSES`: sigmoid / robust / IPO / hinge, and SimPO, which
needs no reference) differ in the penalty applied to the margin; the method offers each variant
every input it has and the variant's signature takes what it needs (`losses/variants.py`).

The reference log-probs never change, so by default they are computed once before training
(`reference: precompute`) and stored with each pair: no second model in memory and no
reference forward pass per step. `reference: online` recomputes them every step — with LoRA
from the same network with its adapters switched off, otherwise from a frozen copy.

Chosen and rejected responses run through the model as one batch of 2B rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from alignloop.algorithms.run import RunContext, TrainingJob, run_method
from alignloop.config import Section
from alignloop.data import (
    EncodedPair,
    PreferenceDataConfig,
    collate_pairs,
    dataset_fingerprint,
    encode_preference_records,
    rankings_to_pairs,
    ratings_to_pairs,
    read_preference_data,
)
from alignloop.engine import LossOutput, TrainConfig, TrainingMethod, TrainResult
from alignloop.engine.precompute import reference_logps
from alignloop.losses import DPO_LOSSES
from alignloop.losses.variants import call_variant, refuse_settings_not_taken, takes
from alignloop.models import ModelConfig, load_model_and_tokenizer, save_trained_model
from alignloop.models.forward import response_logps
from alignloop.models.reference import frozen_copy_unless_lora, reference_network


# The settings of a DPO recipe that a variant may take, and the loss parameter each becomes.
SETTING_PARAMETERS = {"label_smoothing": "label_smoothing", "simpo_gamma": "gamma"}


def variant_inputs(chosen, rejected, chosen_length, rejected_length, reference_chosen, reference_rejected) -> dict:
    """Everything a DPO-family variant may take, by parameter name (B,) each: summed log-probs of
    the policy and the reference, and the length-normalised log-probs (SimPO's)."""
    return {"policy_chosen_logps": chosen, "policy_rejected_logps": rejected,
            "reference_chosen_logps": reference_chosen, "reference_rejected_logps": reference_rejected,
            "chosen_avg_logps": chosen / chosen_length, "rejected_avg_logps": rejected / rejected_length}


class DPOSettings(Section):
    loss: Literal[tuple(DPO_LOSSES)] = Field(  # type: ignore[valid-type]
        "sigmoid", description="the variant, a key of alignloop.losses.DPO_LOSSES: " + ", ".join(DPO_LOSSES)
    )
    beta: float = Field(0.1, gt=0, description="strength of the KL regularisation (inverse temperature)")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="assumed label-noise rate (sigmoid = cDPO, robust)")
    simpo_gamma: float = Field(0.5, ge=0, description="SimPO target reward margin γ")
    reference: Literal["precompute", "online"] = Field(
        "precompute", description="reference log-probs computed once before training, or every step"
    )
    reference_batch_size: int = Field(16, ge=1, description="batch size for precomputing reference log-probs")

    @model_validator(mode="after")
    def _refuse_settings_the_variant_does_not_take(self) -> DPOSettings:
        """A setting the chosen variant ignores would train something other than the recipe says.
        Whether a variant takes a setting is its loss function's to say: its signature names the
        settings it takes, and it is called once here, on one zero pair, to refuse values it
        does not (label smoothing for IPO), rather than at the first step."""
        chosen = {key: (parameter, getattr(self, key)) for key, parameter in SETTING_PARAMETERS.items()
                  if key in self.model_fields_set}
        refuse_settings_not_taken(DPO_LOSSES, self.loss, "loss", chosen)
        zero = torch.zeros(1)
        try:
            call_variant(DPO_LOSSES[self.loss], **variant_inputs(zero, zero, zero, zero, zero, zero), **self.loss_settings())
        except ValueError as error:
            refused = ", ".join(f"{key} = {value:g}" for key, (_, value) in chosen.items()) or "its settings"
            raise ValueError(f"loss {self.loss!r} refuses {refused} ({error})") from None
        return self

    def loss_settings(self) -> dict[str, float]:
        """The settings offered to the variant, by the name of the parameter each becomes."""
        return {parameter: getattr(self, key) for key, parameter in SETTING_PARAMETERS.items()} | {"beta": self.beta}

    def uses_reference(self) -> bool:
        return takes(DPO_LOSSES[self.loss], "reference_chosen_logps")


class DPOConfig(Section):
    model: ModelConfig = Field(description="the policy to train (its starting point is the reference)")
    data: PreferenceDataConfig = Field(description="preference pairs (rankings and ratings are turned into pairs)")
    train: TrainConfig = Field(default_factory=TrainConfig, description="optimiser, schedule and run settings")
    dpo: DPOSettings = Field(default_factory=DPOSettings, description="the DPO-family loss and its reference")
    save_merged: bool = Field(False, description="with LoRA, also write the base model with adapters merged")


@dataclass(frozen=True)
class PairWithReference:
    pair: EncodedPair
    reference_chosen_logps: float = 0.0
    reference_rejected_logps: float = 0.0


def collate_with_reference(items: list[PairWithReference], pad_token_id: int) -> dict[str, Any]:
    batch = collate_pairs([item.pair for item in items], pad_token_id)
    batch["reference_chosen_logps"] = torch.tensor([i.reference_chosen_logps for i in items], dtype=torch.float32)
    batch["reference_rejected_logps"] = torch.tensor([i.reference_rejected_logps for i in items], dtype=torch.float32)
    return batch


def split_rows(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(2B,) -> chosen (B,), rejected (B,): collate_pairs stacks chosen rows first."""
    half = values.shape[0] // 2
    return values[:half], values[half:]


@dataclass
class DPOMethod(TrainingMethod):
    settings: DPOSettings
    reference_model: torch.nn.Module | None = None  # online mode without LoRA: a frozen copy

    def count_items(self, batch: dict[str, Any]) -> int:
        return batch["input_ids"].shape[0] // 2

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> LossOutput:
        logps, counts = response_logps(model, batch)  # (2B,), (2B,)
        chosen, rejected = split_rows(logps)
        chosen_length, rejected_length = split_rows(counts.clamp(min=1).to(logps.dtype))
        reference = self._reference(model, batch) if self.settings.uses_reference() else (None, None)
        loss_sum, metrics = call_variant(DPO_LOSSES[self.settings.loss],
                                         **variant_inputs(chosen, rejected, chosen_length, rejected_length, *reference),
                                         **self.settings.loss_settings())
        return LossOutput(loss_sum, metrics)

    def _reference(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.settings.reference == "precompute":
            return batch["reference_chosen_logps"], batch["reference_rejected_logps"]
        with torch.no_grad(), reference_network(model, self.reference_model) as reference:
            logps, _ = response_logps(reference, batch)
        return split_rows(logps)


def precompute_reference(model, pairs: list[EncodedPair], pad_token_id: int, batch_size: int, accelerator) -> list[PairWithReference]:
    """Every pair with the reference log-probs of its chosen and rejected response."""
    sequences = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    logps = reference_logps(model, sequences, pad_token_id, batch_size, accelerator)
    n = len(pairs)
    return [PairWithReference(pair, logps[i], logps[n + i]) for i, pair in enumerate(pairs)]


def all_pairs(records) -> list:
    """Pairs, plus pairs implied by rankings and by ratings of the same prompt."""
    return list(records.pairs) + rankings_to_pairs(records.rankings) + ratings_to_pairs(records.ratings)


def run_dpo(config: DPOConfig, resume: bool | str = False) -> TrainResult:
    return run_method(config, partial(prepare_dpo, config), resume)


def prepare_dpo(config: DPOConfig, context: RunContext) -> TrainingJob:
    model, tokenizer = load_model_and_tokenizer(config.model)
    data = read_preference_data(config.data)
    train_pairs, eval_pairs = all_pairs(data.train), all_pairs(data.eval)
    encode = partial(encode_preference_records, tokenizer, max_length=config.data.max_length,
                     max_prompt_length=config.data.max_prompt_length, use_chat_template=config.data.use_chat_template,
                     on_invalid=config.data.on_invalid)
    train_encoded, report = encode(replace_pairs(data.train, train_pairs))
    eval_encoded, _ = encode(replace_pairs(data.eval, eval_pairs))
    context.console.print(f"[bold]data[/]: {data.report}; encoded: {report}")
    weighted = sum(pair.weight != 1.0 for pair in train_encoded.pairs)
    if weighted:  # a model-aggregated export's confidence; the DPO losses have no per-pair weight yet
        context.console.print(f"[yellow]note[/]: {weighted} training pairs carry a weight other than 1; DPO trains "
                              "every pair once (only reward-model training reads weights)")
    train_items, eval_items = _with_reference(config, model, tokenizer, train_encoded.pairs, eval_encoded.pairs,
                                              context.accelerator)
    reference_model = frozen_copy_unless_lora(model, config.dpo.reference == "online" and config.dpo.uses_reference())
    return TrainingJob(
        model, DPOMethod(config.dpo, reference_model), train_items,
        partial(collate_with_reference, pad_token_id=tokenizer.pad_token_id),
        save_final=partial(save_trained_model, tokenizer=tokenizer, merged=config.save_merged),
        eval_examples=eval_items,
        data_info={"train_sha256": dataset_fingerprint(train_pairs), "train_pairs": len(train_items),
                   "eval_pairs": len(eval_items), "encoding": str(report)},
    )


def replace_pairs(records, pairs):
    """The same records with pairs replaced and rankings / ratings already folded into them."""
    return replace(records, pairs=pairs, rankings=[], ratings=[], binary=[])


def _with_reference(config, model, tokenizer, train_pairs, eval_pairs, accelerator):
    needs_reference = config.dpo.uses_reference() and config.dpo.reference == "precompute"
    if not needs_reference:
        return [PairWithReference(p) for p in train_pairs], [PairWithReference(p) for p in eval_pairs]
    compute = partial(precompute_reference, model, pad_token_id=tokenizer.pad_token_id,
                      batch_size=config.dpo.reference_batch_size, accelerator=accelerator)
    return compute(train_pairs), compute(eval_pairs)
