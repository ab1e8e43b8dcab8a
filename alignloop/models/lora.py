"""LoRA adapters (via peft): train a few small matrices instead of the whole model.

LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models") freezes a weight
W and learns a low-rank update, W + (alpha / r) * B @ A, with B initialised to zero so that
training starts exactly at the base model.

That zero start gives RLHF a free frozen reference: the reference policy is the same network
with its adapters switched off (`adapters_disabled`), so PPO / DPO need no second copy of the
model in memory. `merge_lora` folds the update into W for export or fast inference.

The functions here accept a model wrapped for distributed training (DDP, torch.compile) as
well as a bare one, since the engine hands algorithms whatever accelerate prepared.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
from accelerate.utils import extract_model_from_parallel
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from peft.tuners.lora import LoraLayer
from pydantic import Field

from alignloop.config import Section
from alignloop.models.adapter_base import name_builtin_base_upstream

# peft 0.21 calls a transformers method that transformers 5.23 deprecates; the warning is
# theirs to fix and tells a user nothing they can act on.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

__all__ = [
    "LoraSettings",
    "apply_lora",
    "save_adapter",
    "load_saved_adapter",
    "merge_lora",
    "is_lora_model",
    "count_trainable_parameters",
    "adapters_disabled",
    "lora_merged_for_inference",
    "without_redundant_input_casts",
]


class LoraSettings(Section):
    """Where to put LoRA adapters and how big to make them."""

    r: int = Field(8, gt=0, description="rank of each low-rank update (more = more capacity, more memory)")
    alpha: int = Field(16, gt=0, description="scale numerator: the update is multiplied by alpha / r")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter input during training")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="module names to adapt (e.g. [q_proj, v_proj]), or all-linear: every linear layer but the output",
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="which biases to train as well")
    modules_to_save: list[str] | None = Field(
        None, description="modules trained in full and saved with the adapter (e.g. a new score head)"
    )


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    # keep_torch_compile=False: we want the module that owns the adapters, not the compiled shell.
    return extract_model_from_parallel(model, keep_torch_compile=False)


def is_lora_model(model: torch.nn.Module) -> bool:
    """True if `model` (possibly wrapped by DDP / torch.compile) carries peft adapters."""
    return isinstance(_unwrap(model), PeftModel)


def apply_lora(model: torch.nn.Module, settings: LoraSettings) -> PeftModel:
    """Freeze `model` and add trainable LoRA adapters as `settings` describes."""
    if is_lora_model(model):
        raise ValueError("model already has LoRA adapters; apply_lora expects a plain model")
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        bias=settings.bias,
        modules_to_save=settings.modules_to_save,
        task_type=TaskType.CAUSAL_LM,
    )
    return without_redundant_input_casts(get_peft_model(model, config))


def without_redundant_input_casts(model: torch.nn.Module) -> torch.nn.Module:
    """Turn off peft's cast of each adapter's input to the adapter's dtype where it never changes
    a value, and return `model`.

    When the adapter and the base weight share a dtype, the input already has it without
    autocast; under autocast the adapter's product casts it straight back (bf16 -> float32 ->
    bf16 is exact). The casts still copy the activation there and back in both passes: 7 % of
    a LoRA reward-model step of the built-in model on the 2-core CPU (2.71 s -> 2.51 s).
    Adapters of another dtype than their base (a bf16 model with float32 adapters) keep the
    cast, which they need.
    """
    for module in _unwrap(model).modules():
        if isinstance(module, LoraLayer) and isinstance(module.base_layer, torch.nn.Linear):
            adapter_dtypes = {p.dtype for part in (module.lora_A, module.lora_B) for p in part.parameters()}
            module.cast_input_dtype_enabled = adapter_dtypes != {module.base_layer.weight.dtype}
    return model


def _require_lora(model: torch.nn.Module, action: str) -> PeftModel:
    inner = _unwrap(model)
    if not isinstance(inner, PeftModel):
        raise TypeError(f"cannot {action}: the model has no LoRA adapters (see apply_lora)")
    return inner


def save_adapter(model: torch.nn.Module, path: str | Path) -> Path:
    """Save only the adapter weights and config (a few MB); reload with PeftModel.from_pretrained.

    An adapter on a built-in names the built-in's upstream hub id as its base (see adapter_base).
    """
    path = Path(path)
    _require_lora(model, "save an adapter").save_pretrained(str(path))
    name_builtin_base_upstream(path)
    return path


def load_saved_adapter(network: torch.nn.Module, folder: str | Path, *, trainable: bool = False) -> PeftModel:
    """The adapter saved in `folder`, on `network` (PeftModel.from_pretrained).

    In memory the adapter names the folder `network` was loaded from as its base, as a freshly
    applied one does, whatever the saved config says (for a built-in its upstream hub id, see
    adapter_base): so saving it again records the built-in again, and peft's save looks for the
    base config here rather than on the hub.
    """
    adapted = PeftModel.from_pretrained(network, str(folder), is_trainable=trainable)
    for config in adapted.peft_config.values():
        config.base_model_name_or_path = network.name_or_path
    return adapted


def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """Fold the adapters into the base weights and return the plain base model.

    The base model's weights are changed in place, so the PeftModel must not be used afterwards.
    """
    return _require_lora(model, "merge adapters").merge_and_unload()


def count_trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights count once."""
    trainable = total = 0
    for parameter in model.parameters():  # parameters() yields a shared tensor only once
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
    return trainable, total


@contextlib.contextmanager
def adapters_disabled(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Inside the block the model computes as its base model (the frozen reference policy).

    A model without adapters is already its own base, so for it this does nothing.
    """
    inner = _unwrap(model)
    if not isinstance(inner, PeftModel):
        yield model
        return
    with inner.disable_adapter():
        yield model


@contextlib.contextmanager
def lora_merged_for_inference(model: torch.nn.Module, dtype: torch.dtype | None = None) -> Iterator[torch.nn.Module]:
    """Inside the block every plain LoRA linear layer computes with one merged weight W + ΔW.

    Unmerged, each adapted linear costs three matrix products and a scaling per call; at decode
    batch sizes those calls, not the arithmetic, are the time (the built-in model with LoRA r=16
    on 2 CPU cores, 16 prompts × 48 tokens: 8.2 s unmerged, 6.3 s merged). The merge is out of
    place: W itself is set
    aside and put back untouched, since merging into W and subtracting again would round W a
    little differently each rollout, and a resumed run would then not reproduce an uninterrupted
    one. The cost is one merged copy of the adapted weights while the block runs. No gradients:
    the merged weights are plain tensors. Adapters that are switched off, already merged, or of
    a variant such as DoRA (not a plain sum) stay as they are. With `dtype`, the merged weights
    are rounded to it once the sum is taken (sampling in bf16: `alignloop.models.inference`).
    """
    swapped: list[tuple[LoraLayer, torch.nn.Parameter]] = []
    try:
        with torch.no_grad():
            for module in _unwrap(model).modules():
                if not isinstance(module, LoraLayer) or not isinstance(module.base_layer, torch.nn.Linear):
                    continue
                if module.disable_adapters or module.merged:
                    continue
                adapters = [a for a in module.active_adapters if a in module.lora_A]
                if not adapters or any(a in getattr(module, "lora_variant", {}) for a in adapters):
                    continue
                base = module.base_layer
                merged = module.get_delta_weight(adapters[0]).to(base.weight.dtype)  # a fresh tensor
                for adapter in adapters[1:]:
                    merged += module.get_delta_weight(adapter).to(merged.dtype)
                merged = merged.add_(base.weight).to(dtype or base.weight.dtype)
                swapped.append((module, base.weight))
                base.weight = torch.nn.Parameter(merged, requires_grad=False)
                module.merged_adapters = list(adapters)  # peft's forward then calls the base layer alone
        yield model
    finally:
        for module, weight in swapped:
            module.base_layer.weight = weight
            module.merged_adapters = []
