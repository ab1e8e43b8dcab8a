"""How every method's run starts and ends, written once: accelerator, seed, the method's own
set-up (model, data, method), the trainer, and the closing line.

A method file's `run_<method>` hands `run_method` a function that prepares its `TrainingJob`
from the run's accelerator and console; everything else is the same for SFT, reward models,
DPO, KTO, PPO and GRPO. The final model's card is written here, above the engine, because the
card belongs to the report layer (alignloop/report/model_card.py) and reads the run's files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from rich.console import Console

from alignloop.config import config_to_yaml
from alignloop.engine import Trainer, TrainingMethod, TrainResult, make_accelerator
from alignloop.engine.console import console_for
from alignloop.report.model_card import write_model_card

SaveFinal = Callable[[torch.nn.Module, Path], None]


@dataclass(frozen=True)
class RunContext:
    """What a method's set-up receives: the run's accelerator and the console it prints to."""

    accelerator: Accelerator
    console: Console


@dataclass
class TrainingJob:
    """What a method's set-up hands back: the network, the method, its data and how to save."""

    model: torch.nn.Module
    method: TrainingMethod
    train_examples: Sequence[Any]
    collate: Callable[[list[Any]], dict[str, Any]]
    save_final: SaveFinal
    eval_examples: Sequence[Any] = ()
    data_info: dict[str, Any] = field(default_factory=dict)  # written to run_info.json
    saved_what: str = "final model"  # the closing line: "done: N steps; <saved_what> in <folder>"


def run_method(config: Any, prepare: Callable[[RunContext], TrainingJob], resume: bool | str = False) -> TrainResult:
    """Train what `prepare` sets up, under `config.train`; returns where everything was written."""
    accelerator = make_accelerator(config.train)
    context = RunContext(accelerator, console_for(accelerator))
    set_seed(config.train.seed)  # identical initialisation (LoRA, heads) on every process
    job = prepare(context)
    trainer = Trainer(
        config.train, job.model, job.method, job.train_examples, job.collate,
        eval_examples=job.eval_examples, save_final=with_model_card(job.save_final),
        config_yaml=config_to_yaml(config), data_info=job.data_info, accelerator=accelerator,
    )
    result = trainer.train(resume=resume)
    context.console.print(f"[bold green]done[/]: {result.global_step} steps; {job.saved_what} in {result.final_model_dir}")
    return result


def with_model_card(save_final: SaveFinal) -> SaveFinal:
    """`save_final`, then the model card of the saved folder (its run folder is the parent)."""

    def save(model: torch.nn.Module, final_dir: Path) -> None:
        save_final(model, final_dir)
        write_model_card(final_dir.parent, final_dir)

    return save
