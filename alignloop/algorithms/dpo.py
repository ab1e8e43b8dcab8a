"""Direct preference optimisation: learn from preference pairs without a reward model.

DPO (Rafailov et al. 2023) shows that the KL-regularised RLHF objective has a closed-form
optimum in which the reward is implicit: r(x, y) = β log π(y|x) / π_ref(y|x). Fitting that
implicit reward to the preferences with a Bradley–Terry likelihood trains the policy directly.
The variants (`alignloop.losses.DPO_LOSSES`: sigmoid / robust / IPO / hinge, and SimPO, which
needs no reference) differ only in the penalty applied to the log-ratio margin.

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
from accelerate.utils import set_seed
from pydantic import Field, model_validator

from alignloop.config import Section, config_to_yaml
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
from alignloop.engine import LossOutput, TrainConfig, Trainer, TrainResult, make_accelerator
from alignloop.engine.console import console_for
from alignloop.engine.precompute import reference_logps
from alignloop.losses import DPO_LOSSES, simpo
from alignloop.models import ModelConfig, load_model_and_tokenizer, save_trained_model
from alignloop.models.forward import response_logps
from alignloop.models.reference import frozen_copy_unless_lora, reference_network


class DPOSettings(Section):
    loss: Literal["sigmoid", "robust", "ipo", "hinge", "simpo"] = Field(
        "sigmoid", description="sigmoid (DPO), robust (rDPO), ipo, hinge (SLiC), simpo (reference-free)"
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
        Whether a variant takes label smoothing is its loss function's to say: it is asked once
        here, on one zero pair, rather than at the first step."""
        if self.loss == "simpo":
            if self.label_smoothing:
                raise ValueError("label_smoothing is not a setting of loss 'simpo'; remove it, or use sigmoid or robust")
            return self
        if "simpo_gamma" in self.model_fields_set:
            raise ValueError(f"simpo_gamma is a setting of loss 'simpo' only, not of {self.loss!r}")
        zero = torch.zeros(1)
        try:
            DPO_LOSSES[self.loss](zero, zero, zero, zero, beta=self.beta, label_smoothing=self.label_smoothing)
        except ValueError as error:
            raise ValueError(f"loss {self.loss!r} refuses label_smoothing = {self.label_smoothing:g} ({error})") from None
        return self


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
class DPOMethod:
    settings: DPOSettings
    reference_model: torch.nn.Module | None = None  # online mode without LoRA: a frozen copy

    def count_items(self, batch: dict[str, Any]) -> int:
        return batch["input_ids"].shape[0] // 2

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> LossOutput:
        logps, counts = response_logps(model, batch)  # (2B,), (2B,)
        chosen, rejected = split_rows(logps)
        if self.settings.loss == "simpo":
            chosen_len, rejected_len = split_rows(counts.clamp(min=1).to(logps.dtype))
            losses, metrics = simpo(chosen / chosen_len, rejected / rejected_len,
                                    beta=self.settings.beta, gamma=self.settings.simpo_gamma)
        else:
            ref_chosen, ref_rejected = self._reference(model, batch)
            loss_fn = DPO_LOSSES[self.settings.loss]
            losses, metrics = loss_fn(chosen, rejected, ref_chosen, ref_rejected, beta=self.settings.beta,
                                      label_smoothing=self.settings.label_smoothing)
        return LossOutput(losses.sum(), {name: value.sum() for name, value in metrics.items()})

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
    accelerator = make_accelerator(config.train)
    console = console_for(accelerator)
    set_seed(config.train.seed)
    model, tokenizer = load_model_and_tokenizer(config.model)
    data = read_preference_data(config.data)
    train_pairs, eval_pairs = all_pairs(data.train), all_pairs(data.eval)
    encode = partial(encode_preference_records, tokenizer, max_length=config.data.max_length,
                     max_prompt_length=config.data.max_prompt_length, use_chat_template=config.data.use_chat_template,
                     on_invalid=config.data.on_invalid)
    train_encoded, report = encode(replace_pairs(data.train, train_pairs))
    eval_encoded, _ = encode(replace_pairs(data.eval, eval_pairs))
    console.print(f"[bold]data[/]: {data.report}; encoded: {report}")
    train_items, eval_items = _with_reference(config, model, tokenizer, train_encoded.pairs, eval_encoded.pairs, accelerator)
    reference_model = frozen_copy_unless_lora(model, config.dpo.reference == "online" and config.dpo.loss != "simpo")
    trainer = Trainer(
        config.train, model, DPOMethod(config.dpo, reference_model), train_items,
        partial(collate_with_reference, pad_token_id=tokenizer.pad_token_id), eval_examples=eval_items,
        save_final=partial(save_trained_model, tokenizer=tokenizer, merged=config.save_merged),
        config_yaml=config_to_yaml(config),
        data_info={"train_sha256": dataset_fingerprint(train_pairs), "train_pairs": len(train_items),
                   "eval_pairs": len(eval_items), "encoding": str(report)},
        accelerator=accelerator,
    )
    result = trainer.train(resume=resume)
    console.print(f"[bold green]done[/]: {result.global_step} steps; final model in {result.final_model_dir}")
    return result


def replace_pairs(records, pairs):
    """The same records with pairs replaced and rankings / ratings already folded into them."""
    return replace(records, pairs=pairs, rankings=[], ratings=[], binary=[])


def _with_reference(config, model, tokenizer, train_pairs, eval_pairs, accelerator):
    needs_reference = config.dpo.loss != "simpo" and config.dpo.reference == "precompute"
    if not needs_reference:
        return [PairWithReference(p) for p in train_pairs], [PairWithReference(p) for p in eval_pairs]
    compute = partial(precompute_reference, model, pad_token_id=tokenizer.pad_token_id,
                      batch_size=config.dpo.reference_batch_size, accelerator=accelerator)
    return compute(train_pairs), compute(eval_pairs)
