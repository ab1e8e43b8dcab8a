"""One way to get a causal language model and its tokenizer from a name.

A model name is resolved in this order, first match wins:

1. a built-in name (`alignloop models` lists them): prepared once into the alignloop cache,
   then loaded from there like any local folder (see `builtin.py`);
2. an existing local folder holding a Hugging Face model (`save_pretrained` output);
3. otherwise a Hugging Face hub id such as `HuggingFaceTB/SmolLM2-360M-Instruct`, for users
   who are online.

Built-ins come first so that a recipe naming one means the same thing in every directory.
When the hub is switched off (`HF_HUB_OFFLINE=1` / `TRANSFORMERS_OFFLINE=1`) a hub id is only
looked up in the local hub cache, so a wrong name fails at once instead of waiting on the
network; every failure is a `ModelLoadError` that lists the built-in names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import huggingface_hub
import huggingface_hub.constants
import torch
from pydantic import Field
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from alignloop.config import Section
from alignloop.errors import UserError
from alignloop.models.adapter_base import ADAPTER_METADATA_FILE, adapter_base_model
from alignloop.models.attention import rotary_in_autocast_dtype, transformers_attention
from alignloop.models.builtin import builtin_names, is_builtin, load_builtin_tokenizer, prepare_builtin
from alignloop.models.lora import LoraSettings, apply_lora, load_saved_adapter, without_redundant_input_casts
from alignloop.models.tokenizer import ensure_pad_token

__all__ = [
    "DEFAULT_MODEL",
    "TORCH_DTYPES",
    "ModelConfig",
    "ModelLoadError",
    "resolve_model_source",
    "load_model_and_tokenizer",
    "load_tokenizer",
]

DEFAULT_MODEL = "smollm2-135m-instruct"

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# What a hub id can look like: "name" or "owner/name" (letters, digits, '-', '_', '.').
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


class ModelLoadError(ValueError, UserError):
    """A model name that is not a built-in, not a model folder, and not loadable from the hub."""


class ModelConfig(Section):
    """Which model to load, in what precision, and whether to train it through LoRA."""

    name: str = Field(DEFAULT_MODEL, description="built-in model name, local Hugging Face folder, or hub id")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="precision of the weights as loaded (bfloat16 is ~6x faster on AMX CPUs)"
    )
    attn_implementation: str = Field(
        "auto",
        description="attention kernel: auto (sdpa; matmul attention when training on short sequences on CPU, "
        "where it is faster, and rotary embeddings in the dtype of CPU autocast) or any transformers name: "
        "sdpa, eager, flash_attention_2, ...",
    )
    lora: LoraSettings | None = Field(None, description="train LoRA adapters instead of all weights (null = full)")
    adapter: str | None = Field(
        None, description="a saved LoRA adapter folder to load on the model and keep training (replaces `lora`)"
    )
    padding_free: bool = Field(
        True, description="run padded training batches as one row of their real tokens (needs attn_implementation auto)"
    )
    share_prefixes: bool = Field(
        True, description="rows that repeat one prompt (a pair's replies, a ranking's responses) compute it once "
        "(needs padding_free)",
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: less memory, ~30% slower"
    )


def _hub_offline() -> bool:
    # huggingface_hub reads these variables once at import; re-read them so that setting one
    # later (a test, a notebook cell) still keeps us off the network.
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    from_env = any(os.environ.get(n, "").strip().upper() in {"1", "ON", "YES", "TRUE"} for n in names)
    return from_env or bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def _builtins_hint() -> str:
    return f"built-in models are: {', '.join(builtin_names())}"


def resolve_model_source(name: str, log: Callable[[str], None] | None = None) -> str:
    """The local folder or hub id that `from_pretrained` should read for model `name`.

    A built-in is prepared first if needed (announced through `log`, default stderr). Useful
    also for model classes other than causal LMs (reward / value heads).
    """
    if is_builtin(name):
        return str(prepare_builtin(name, log=log))
    folder = Path(name).expanduser()
    if folder.is_dir():
        return str(folder)
    if not _HUB_ID.match(name) or ".." in name:
        raise ModelLoadError(f"model {name!r}: no such folder, and not a built-in name; {_builtins_hint()}")
    if _hub_offline():
        return _hub_cache_folder(name)
    return name


def _hub_cache_folder(name: str) -> str:
    # Offline, a hub id can only mean a copy already in the hub cache. Asking for it here,
    # rather than leaving it to from_pretrained, matters: transformers' check for a peft
    # adapter ignores local_files_only and would retry the network for ~25 s before failing.
    try:
        return huggingface_hub.snapshot_download(name, local_files_only=True)
    except OSError:
        raise ModelLoadError(
            f"model {name!r} is neither a built-in model nor a local folder, and the hub is switched off "
            f"(HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE) with no copy of it in the hub cache; {_builtins_hint()}"
        ) from None


def _from_pretrained(loader: Callable[..., Any], name: str, source: str, **kwargs: Any) -> Any:
    """Call `loader(source, ...)`, turning its many failure types into one clear ModelLoadError."""
    local = Path(source).is_dir()
    try:
        return loader(source, local_files_only=local, **kwargs)
    except (OSError, ValueError, KeyError) as error:
        if local:
            message = f"model {name!r}: the folder {source} does not hold a loadable Hugging Face model and tokenizer"
        else:
            message = (
                f"model {name!r} is neither a built-in model, nor a local folder, "
                "nor reachable on the Hugging Face hub"
            )
        raise ModelLoadError(f"{message} ({type(error).__name__}: {error}); {_builtins_hint()}") from error


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """The tokenizer for a built-in name, local folder or hub id, with a pad token ensured.

    For a built-in this does not convert the model (only the tokenizer is extracted).
    """
    if is_builtin(name_or_path):
        return load_builtin_tokenizer(name_or_path)
    source = resolve_model_source(name_or_path)
    tokenizer = _from_pretrained(AutoTokenizer.from_pretrained, name_or_path, source)
    return ensure_pad_token(tokenizer)


def _as_config(model: ModelConfig | str, fields: dict[str, Any]) -> ModelConfig:
    if isinstance(model, str):
        return ModelConfig(name=model, **fields)
    if fields:  # validate the combination, which model_copy(update=...) would not
        return ModelConfig.model_validate({**model.model_dump(), **fields})
    return model


def load_model_and_tokenizer(
    model: ModelConfig | str,
    *,
    log: Callable[[str], None] | None = None,
    **fields: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer as `model` (a ModelConfig or just a name) describes.

    Keyword `fields` override ModelConfig fields, e.g. `load_model_and_tokenizer(name, dtype="bfloat16")`.
    With `lora` set the model comes back as a peft model whose adapters alone are trainable.
    """
    config = _as_config(model, fields)
    source = resolve_model_source(config.name, log=log)
    builtin_adapter = source if (Path(source) / ADAPTER_METADATA_FILE).is_file() else None
    if builtin_adapter is not None:
        # transformers would fetch the upstream hub id that the adapter names; the built-in it
        # was trained on is here (see adapter_base).
        source = resolve_model_source(str(adapter_base_model(builtin_adapter)), log=log)
    network = _from_pretrained(
        AutoModelForCausalLM.from_pretrained,
        config.name,
        source,
        dtype=TORCH_DTYPES[config.dtype],
        attn_implementation=transformers_attention(config.attn_implementation),
    )
    if builtin_adapter is not None:
        network.load_adapter(builtin_adapter)  # what transformers does with an adapter folder
    network.alignloop_padding_free = config.padding_free  # read by supports_padding_free
    network.alignloop_share_prefixes = config.share_prefixes  # read by shares_prefixes
    if config.attn_implementation == "auto":
        rotary_in_autocast_dtype(network)
    tokenizer = load_tokenizer(config.name)
    if network.generation_config.pad_token_id is None:
        # Otherwise generate() warns on every call and picks eos itself.
        network.generation_config.pad_token_id = tokenizer.pad_token_id
    if config.gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen inputs (LoRA) without extra hooks.
        network.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if config.adapter is not None:
        # The base stays the frozen reference (adapters off); the adapter continues to learn —
        # how the RLHF loop carries a policy from one round to the next.
        network = load_trainable_adapter(network, config.adapter)
    elif config.lora is not None:
        network = apply_lora(network, config.lora)
    return network, tokenizer


def load_trainable_adapter(network: PreTrainedModel, adapter: str) -> torch.nn.Module:
    folder = Path(adapter).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise ModelLoadError(f"model.adapter {adapter!r}: no adapter_config.json there (expected a saved LoRA adapter folder)")
    adapted = load_saved_adapter(network, folder, trainable=True)
    return without_redundant_input_casts(adapted)
