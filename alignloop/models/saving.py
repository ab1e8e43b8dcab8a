"""Writing a trained model so that the next stage of the loop can load it by folder name.

A run's final folder always holds the tokenizer next to the weights, so that
`load_model_and_tokenizer(folder)` gives back exactly what was trained, chat template included.

- Full fine-tuning: the folder is an ordinary Hugging Face model folder.
- LoRA: the folder holds only the adapter (a few MB; `adapter_config.json` names the base
  model's folder or hub id, a built-in's upstream hub id: see adapter_base), which transformers loads on top of that base. With `merged=True`
  a `merged/` subfolder also holds the base model with the adapter folded in: a standalone
  model for export, inference servers, or a later round that trains it in full. It is a
  subfolder, not the same folder, because a folder holding both a full model and an adapter
  would be loaded as the merged model *plus* the adapter again.

Merging works on a copy, so the model in memory keeps its adapters (the trainer or a later
evaluation may still use it).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from alignloop.models.lora import is_lora_model, merge_lora, save_adapter

__all__ = ["MERGED_SUBFOLDER", "save_trained_model"]

MERGED_SUBFOLDER = "merged"


def save_trained_model(
    model: torch.nn.Module,
    path: str | Path,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    merged: bool = False,
) -> Path:
    """Save `model` (plain or LoRA) and `tokenizer` into `path`; see the module docstring.

    `merged` only matters for a LoRA model: it adds `path/merged/` with the adapter folded in.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if is_lora_model(model):
        save_adapter(model, path)
        if merged:
            merged_dir = path / MERGED_SUBFOLDER
            merge_lora(copy.deepcopy(model)).save_pretrained(str(merged_dir))
            _save_tokenizer(tokenizer, merged_dir)
    else:
        model.save_pretrained(str(path))
    _save_tokenizer(tokenizer, path)
    return path


def _save_tokenizer(tokenizer: PreTrainedTokenizerBase | None, path: Path) -> None:
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path))
