"""The training section shared by every method: optimiser, schedule, precision, cadence, output."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from alignloop.config import Section
from alignloop.engine.metrics import check_report_to


class TrainConfig(Section):
    output_dir: str = Field("runs/run", description="run directory: config, metrics, checkpoints, final model")
    seed: int = Field(0, description="seed for data order, initialisation and dropout")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps to run (overrides epochs when set)")
    epochs: float = Field(1.0, gt=0, description="passes over the training data when max_steps is not set")
    batch_size: int = Field(8, ge=1, description="examples per device per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches accumulated into one optimizer step")
    lr: float = Field(2e-5, gt=0, description="peak learning rate of AdamW")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (not applied to biases and norms)")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW beta1, beta2")
    adam_eps: float = Field(1e-8, gt=0, description="AdamW epsilon")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="learning-rate decay after warmup")
    warmup_steps: int | None = Field(None, ge=0, description="linear warmup steps (overrides warmup_ratio)")
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="fraction of the steps used for linear warmup")
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip the global gradient norm to this (null: no clipping)")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="autocast precision: auto (bf16 / fp16 only where this hardware runs it fast, "
        "measured once per machine; see alignloop/hardware.py), no (float32), bf16, fp16 (GPU)"
    )
    log_every: int = Field(1, ge=1, description="log metrics every N optimizer steps")
    eval_every: int | None = Field(None, ge=1, description="evaluate on the eval data every N steps (and at the end)")
    eval_on_start: bool = Field(True, description="evaluate once before the first step, as the baseline (fresh runs)")
    sample_every: int | None = Field(10, ge=1, description="online RL: log a table of sampled responses every N steps (samples.jsonl, TensorBoard)")
    save_every: int | None = Field(None, ge=1, description="write a resumable checkpoint every N steps (and at the end)")
    save_total_limit: int | None = Field(2, ge=1, description="keep only the newest N checkpoints (null: keep all)")
    report_to: Annotated[list[str], AfterValidator(check_report_to)] = Field(
        ["jsonl", "tensorboard"], description="metric sinks: jsonl and any tracker of accelerate's (tensorboard, "
        "wandb, mlflow, comet_ml, aim, clearml, dvclive, swanlab, trackio), installed"
    )
    progress: bool = Field(True, description="show a progress bar with ETA and tokens/s")
    retain_freed_memory: bool = Field(
        True, description="on CPU, keep memory freed between steps in the process instead of mapping it "
        "again each step (glibc malloc; see alignloop/engine/memory.py)"
    )


    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no_is_false(cls, value):
        # YAML 1.1 reads an unquoted `no` as false; that is what the user meant by it.
        return "no" if value is False else value
