"""Which base model a saved LoRA adapter belongs to, in words other tools and alignloop both read.

peft records the base as `base_model_name_or_path` in `adapter_config.json`: the folder or hub id
the base was loaded from. For a built-in that is a folder in this machine's alignloop cache,
which means nothing on the hub or on another machine. So an adapter trained on a built-in names
the built-in's upstream hub id there (what the Hub, peft and a model card expect), and
`alignloop_adapter.json` beside it keeps what alignloop needs to load it offline: the built-in's
name, the cache folder it was trained on, and the fact that its weights are the GGUF dequantised,
not the hub's own weights (the two differ by the 4-bit quantisation).

`adapter_base_model(folder)` is the one place alignloop asks an adapter folder for its base.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard

from alignloop.models.builtin import BUILTIN_MODELS, builtin_of_folder

__all__ = ["ADAPTER_METADATA_FILE", "adapter_base_model", "name_builtin_base_upstream"]

ADAPTER_METADATA_FILE = "alignloop_adapter.json"


def adapter_base_model(folder: str | Path) -> str | None:
    """The base model of the adapter in `folder`: the built-in's name for an adapter trained on
    a built-in, otherwise `base_model_name_or_path`; None when the folder names none."""
    folder = Path(folder)
    metadata = _read_json(folder / ADAPTER_METADATA_FILE)
    if isinstance(metadata.get("base_model"), str):
        return metadata["base_model"]
    base = _read_json(folder / "adapter_config.json").get("base_model_name_or_path")
    return str(base) if base else None


def name_builtin_base_upstream(folder: str | Path) -> None:
    """After peft saved an adapter into `folder`: if its base is a built-in's cache folder, name
    the built-in's upstream hub id instead (adapter config and peft's model card alike) and
    record the built-in in ADAPTER_METADATA_FILE. An adapter on any other base stays as saved.

    The files are rewritten after the save rather than the config changed before it, because
    peft's save looks up the base it names (on the hub, for a hub id) to check the vocabulary.
    """
    folder = Path(folder)
    config_file = folder / "adapter_config.json"
    config = _read_json(config_file)
    local = config.get("base_model_name_or_path")
    builtin = builtin_of_folder(local) if local else None
    if builtin is None:
        return
    upstream = BUILTIN_MODELS[builtin].upstream
    config_file.write_text(json.dumps({**config, "base_model_name_or_path": upstream}, indent=2, sort_keys=True) + "\n")
    card_file = folder / "README.md"
    if card_file.is_file():
        card = ModelCard.load(card_file)
        card.data.base_model = upstream
        card.save(card_file)
    record = {
        "base_model": builtin,
        "base_model_path": str(local),
        "upstream": upstream,
        "note": f"trained on alignloop's built-in {builtin!r}: {BUILTIN_MODELS[builtin].description}; "
        f"{upstream} is the model that GGUF was quantised from, not the same weights",
    }
    (folder / ADAPTER_METADATA_FILE).write_text(json.dumps(record, indent=2) + "\n")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
