"""Supervised fine-tuning: teach the model to write the ideal response to each prompt.

The loss is the negative log-likelihood of the *response* tokens only (completion-only): the
prompt is context, not something to imitate, so its labels are masked (-100) when the data is
encoded. The sum over response tokens is returned and the engine divides by the number of
response tokens in the whole optimizer step, so every response token weighs the same whatever
the batch, accumulation or process count.

With packing, several short examples share one row; their position ids restart at zero and
transformers builds a block-diagonal causal mask from them, so examples do not attend to each
other.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from pydantic import Field

from alignloop.algorithms.run import RunContext, TrainingJob, run_method
from alignloop.config import Section
from alignloop.data import (
    DataConfig,
    SFTExample,
    collate_packed,
    dataset_fingerprint,
    encode_sft_dataset,
    pack_examples,
    pad_batch,
    read_train_and_eval,
)
from alignloop.engine import LossOutput, TrainConfig, TrainingMethod, TrainResult
from alignloop.models import ModelConfig, load_model_and_tokenizer, save_trained_model
from alignloop.models.forward import response_logits
from alignloop.ops import IGNORE_INDEX, selective_log_softmax, shifted_targets

class SFTConfig(Section):
    model: ModelConfig = Field(description="the causal LM to fine-tune (built-in name, local folder or hub id)")
    data: DataConfig = Field(description="SFT examples: prompt + response, or chat messages")
    train: TrainConfig = Field(default_factory=TrainConfig, description="optimiser, schedule and run settings")
    save_merged: bool = Field(False, description="with LoRA, also write the base model with adapters merged")


@dataclass(frozen=True)
class CompletionOnlyNLL(TrainingMethod):
    """Summed next-token negative log-likelihood over the unmasked (response) labels."""

    def count_items(self, batch: dict[str, Any]) -> int:
        return int((shifted_targets(batch["labels"]) != IGNORE_INDEX).sum())

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> LossOutput:
        logits, targets = response_logits(model, batch)  # (N, V), (N,)
        return LossOutput(-selective_log_softmax(logits, targets).sum())  # float32, in cache-sized slabs


def make_collate(tokenizer, packing: bool):
    pad_id = tokenizer.pad_token_id
    if packing:
        return partial(collate_packed, pad_token_id=pad_id)
    return partial(pad_batch, pad_token_id=pad_id, padding_side="right")


def run_sft(config: SFTConfig, resume: bool | str = False) -> TrainResult:
    """Load the model and data, encode, and train; returns where everything was written."""
    return run_method(config, partial(prepare_sft, config), resume)


def prepare_sft(config: SFTConfig, context: RunContext) -> TrainingJob:
    model, tokenizer = load_model_and_tokenizer(config.model)
    train_records, eval_records = read_train_and_eval(config.data, SFTExample)
    encode = partial(
        encode_sft_dataset,
        tokenizer,
        max_length=config.data.max_length,
        overlong=config.data.overlong,
        use_chat_template=config.data.use_chat_template,
    )
    train_examples, report = encode(train_records)
    eval_examples, _ = encode(eval_records)
    console = context.console
    console.print(f"[bold]data[/]: {len(train_records)} training and {len(eval_records)} eval examples; training: {report}")
    if config.data.packing:
        train_examples = pack_examples(train_examples, config.data.max_length)
        eval_examples = pack_examples(eval_examples, config.data.max_length)
        console.print(f"[bold]packing[/]: {len(train_examples)} packed rows of up to {config.data.max_length} tokens")
    return TrainingJob(
        model, CompletionOnlyNLL(), train_examples, make_collate(tokenizer, config.data.packing),
        save_final=partial(save_trained_model, tokenizer=tokenizer, merged=config.save_merged),
        eval_examples=eval_examples,
        data_info={"train_sha256": dataset_fingerprint(train_records), "train_examples": len(train_records),
                   "eval_examples": len(eval_records), "encoding": str(report)},
    )
