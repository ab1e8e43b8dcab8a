"""Saving and loading a reward model as one folder that the next stage loads by name.

Layout of a saved reward model:

    path/
      reward_model.json         format version, hidden size, rating classes, members (heads:
                                1, or an ensemble's K), normalisation mean / std (lists for
                                an ensemble), backbone kind (full / lora), the base model name
                                it was built from, and the caller's `extra` (data hash, metrics)
      reward_head.safetensors   everything that is not the backbone: head weight and bias,
                                rating thresholds (if any), score_mean / score_std buffers
      backbone/                 `save_trained_model(merged=False)` output with the tokenizer
                                (full weights or a LoRA adapter), its config file renamed:
                                alignloop-backbone-config.json for config.json, or
                                alignloop-adapter-config.json for adapter_config.json;
                                an ensemble whose members are adapters keeps member 0's here
                                and member k's in backbone/member_k/ (peft's layout), each
                                config file renamed the same way

The renaming (format version 2) closes a trap: an ordinary model folder named `backbone/`
invites `AutoModelForSequenceClassification.from_pretrained(".../backbone")`, which transformers
answers with a *random* score head and a warning few read, so random rewards. Without its config
file no transformers or peft loader takes the folder; the reward model for other tools is the
one `rm export` writes (`reward_export`). Version 1 folders (the plain file names) still load.
The json duplicates mean / std so that people and tools can read them without torch; loading
takes the tensors from the safetensors file.

A LoRA backbone holds only the adapter; it names its base as `adapter_base` describes (a
built-in by name, which resolves on any machine; otherwise the folder or hub id it was loaded
from, which a folder does only on the machine that trained it). Elsewhere, pass `base_model=`
(the json records the name the model was built from).

The folder is written to a scratch folder and renamed into place, so a crash never leaves a
half-written reward model, and saving over an older reward model replaces it whole (a stale
adapter next to a new full model would otherwise load as both). A folder that exists and is
not a reward model is refused rather than replaced.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import safetensors.torch
from transformers import PreTrainedTokenizerBase

from alignloop.models.adapter_base import adapter_base_model
from alignloop.models.cache import write_folder_atomically
from alignloop.models.loading import TORCH_DTYPES, ModelLoadError, load_model_and_tokenizer, load_tokenizer
from alignloop.models.lora import is_lora_model, load_saved_adapter, without_redundant_input_casts
from alignloop.models.reward_model import RewardModel
from alignloop.models.saving import save_trained_model

__all__ = [
    "REWARD_FORMAT_VERSION",
    "REWARD_HEAD_FILE",
    "REWARD_METADATA_FILE",
    "REWARD_BACKBONE_SUBFOLDER",
    "save_reward_model",
    "load_reward_model",
    "read_reward_metadata",
]

# 3: the head and the score statistics have one entry per ensemble member ((K, H), (K,)), also for K = 1.
REWARD_FORMAT_VERSION = 3
REWARD_METADATA_FILE = "reward_model.json"
REWARD_HEAD_FILE = "reward_head.safetensors"
REWARD_BACKBONE_SUBFOLDER = "backbone"
# The backbone's config files as saved (format 2) -> the names transformers and peft look for.
_HIDDEN_CONFIG_FILES = {"alignloop-backbone-config.json": "config.json",
                        "alignloop-adapter-config.json": "adapter_config.json"}

_BACKBONE_PREFIX = "backbone."


def _head_tensors(model: RewardModel) -> dict[str, Any]:
    # Everything outside the backbone, by state-dict name: a parameter or buffer added to
    # RewardModel later is saved without touching this module.
    return {
        name: tensor.detach().cpu().contiguous()
        for name, tensor in model.state_dict().items()
        if not name.startswith(_BACKBONE_PREFIX)
    }


def _metadata(model: RewardModel, extra: dict[str, Any] | None) -> dict[str, Any]:
    mean, std = model.normalization if model.members == 1 else model.member_normalization
    return {
        "format": "alignloop-reward-model",
        "format_version": REWARD_FORMAT_VERSION,
        "backbone": "lora" if is_lora_model(model.backbone) else "full",
        "base_model": model.base_model_name,
        "hidden_size": model.hidden_size,
        "num_rating_classes": model.num_rating_classes,
        "pooling": model.pooling,
        "feature_layers": list(model.feature_layers) if model.feature_layers else None,
        "members": model.members,
        "member_adapters": list(model.member_adapters) if model.member_adapters else None,
        "score_mean": mean,
        "score_std": std,
        "extra": extra or {},
    }


def save_reward_model(
    model: RewardModel,
    path: str | Path,
    tokenizer: PreTrainedTokenizerBase | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `model` (and `tokenizer`, needed to score later) to `path`; see the module docstring.

    `extra` is any JSON-serialisable dict stored in reward_model.json (training data hash,
    evaluation metrics, ...).
    """
    path = Path(path)
    # Serialise first: a bad `extra` must fail before anything is written.
    metadata_text = json.dumps(_metadata(model, extra), indent=2, sort_keys=True)
    if path.exists() and any(path.iterdir()) and not (path / REWARD_METADATA_FILE).is_file():
        raise FileExistsError(f"{path} exists and is not a saved reward model; refusing to replace it")

    def write(folder: Path) -> None:
        backbone_dir = save_trained_model(model.backbone, folder / REWARD_BACKBONE_SUBFOLDER, tokenizer=tokenizer)
        for hidden, usual in _HIDDEN_CONFIG_FILES.items():
            for config_file in backbone_dir.rglob(usual):  # member k's adapter is in backbone/member_k/
                config_file.rename(config_file.with_name(hidden))
        safetensors.torch.save_file(_head_tensors(model), str(folder / REWARD_HEAD_FILE))
        (folder / REWARD_METADATA_FILE).write_text(metadata_text + "\n")

    return write_folder_atomically(path, write, replace=True)


def _require_file(path: Path, name: str) -> Path:
    target = path / name
    if not target.exists():
        raise ModelLoadError(
            f"{path} is not a saved reward model: {name} is missing (expected {REWARD_METADATA_FILE}, "
            f"{REWARD_HEAD_FILE} and {REWARD_BACKBONE_SUBFOLDER}/, as save_reward_model writes)"
        )
    return target


def read_reward_metadata(path: str | Path) -> dict[str, Any]:
    """The contents of a saved reward model's reward_model.json (no torch work)."""
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"reward model {str(path)!r}: no such folder")
    metadata = json.loads(_require_file(path, REWARD_METADATA_FILE).read_text())
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > REWARD_FORMAT_VERSION:
        raise ModelLoadError(
            f"{path / REWARD_METADATA_FILE}: format_version {version!r} is not one this alignloop reads "
            f"(up to {REWARD_FORMAT_VERSION}); upgrade alignloop"
        )
    return metadata


@contextlib.contextmanager
def _loadable_view(backbone_dir: Path) -> Iterator[Path]:
    """The backbone folder as transformers and peft expect it: a scratch folder of links with
    the config files under their usual names (format 2), or the folder itself (format 1)."""
    if not any((backbone_dir / hidden).is_file() for hidden in _HIDDEN_CONFIG_FILES):
        yield backbone_dir
        return
    with tempfile.TemporaryDirectory(prefix="alignloop-backbone-") as scratch:
        _link_view(backbone_dir, Path(scratch))
        yield Path(scratch)


def _link_view(folder: Path, view: Path) -> None:
    """Links in `view` to everything in `folder`, config files under their usual names; a
    subfolder holding a hidden config file (an ensemble member's adapter) gets a view of its own."""
    for item in folder.iterdir():
        target = view / _HIDDEN_CONFIG_FILES.get(item.name, item.name)
        if item.is_dir() and any((item / hidden).is_file() for hidden in _HIDDEN_CONFIG_FILES):
            target.mkdir()
            _link_view(item, target)
        else:
            target.symlink_to(item.resolve())


def _load_lora_backbone(
    path: Path, backbone_dir: Path, dtype: str, base_model: str | None, trainable: bool, built_from: str | None,
    member_adapters: list[str] | None = None,
) -> Any:
    base = base_model or adapter_base_model(backbone_dir)
    try:
        base_network, _ = load_model_and_tokenizer(str(base), dtype=dtype)
    except ModelLoadError as error:
        raise ModelLoadError(
            f"reward model {str(path)!r} has a LoRA backbone whose base model {base!r} cannot be loaded here; "
            f"pass base_model= to load_reward_model (the reward model was built from {built_from!r}). {error}"
        ) from error
    backbone = load_saved_adapter(base_network, backbone_dir, trainable=trainable)
    for name in (member_adapters or [])[1:]:  # member 0 is the adapter at the folder's top
        member_dir = backbone_dir / name
        if not (member_dir / "adapter_config.json").is_file():
            raise ModelLoadError(f"reward model {str(path)!r}: the ensemble's member adapter {name!r} is missing "
                                 f"({REWARD_BACKBONE_SUBFOLDER}/{name}/ should hold it)")
        backbone.load_adapter(str(member_dir), adapter_name=name, is_trainable=trainable)
    return without_redundant_input_casts(backbone)


def load_reward_model(
    path: str | Path,
    *,
    dtype: str = "float32",
    base_model: str | None = None,
    trainable: bool = False,
) -> tuple[RewardModel, PreTrainedTokenizerBase]:
    """A reward model saved by `save_reward_model`, in eval mode, and its tokenizer.

    `dtype` is the backbone's precision (the head is always float32). `base_model` replaces
    the base model that a LoRA adapter names (see the module docstring). With
    `trainable=False` every parameter is frozen (scoring, a frozen reward for RL); with True
    the parameters that were trained train again (adapters + head, or everything).
    """
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(TORCH_DTYPES)}, got {dtype!r}")
    path = Path(path)
    metadata = read_reward_metadata(path)
    head_file = _require_file(path, REWARD_HEAD_FILE)
    with _loadable_view(_require_file(path, REWARD_BACKBONE_SUBFOLDER)) as backbone_dir:
        if (backbone_dir / "adapter_config.json").is_file():
            backbone = _load_lora_backbone(path, backbone_dir, dtype, base_model, trainable, metadata.get("base_model"),
                                           metadata.get("member_adapters"))
            tokenizer = load_tokenizer(str(backbone_dir))
        else:
            backbone, tokenizer = load_model_and_tokenizer(str(backbone_dir), dtype=dtype)
    model = RewardModel(
        backbone, num_rating_classes=metadata.get("num_rating_classes"), base_model_name=metadata.get("base_model"),
        pooling=metadata.get("pooling", "last"),  # folders saved before pooling existed read at the last token
        members=metadata.get("members", 1),
        feature_layers=metadata.get("feature_layers"),  # None in folders saved before it existed: the last layer
        member_adapters=metadata.get("member_adapters"),  # None: the members are heads on shared features
    )
    _load_head(model, head_file, metadata)
    if not trainable:
        model.requires_grad_(False)
    return model.eval(), tokenizer


def _load_head(model: RewardModel, head_file: Path, metadata: dict[str, Any]) -> None:
    if metadata.get("hidden_size") != model.hidden_size:
        raise ModelLoadError(
            f"{head_file.parent}: the head was saved for hidden size {metadata.get('hidden_size')}, "
            f"but the backbone has {model.hidden_size}"
        )
    device = next(model.parameters()).device
    tensors = safetensors.torch.load_file(str(head_file), device=str(device))
    for name in ("score_mean", "score_std"):  # saved as scalars before ensembles: one member's
        if name in tensors and tensors[name].dim() == 0:
            tensors[name] = tensors[name].reshape(1)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    not_backbone = [name for name in missing if not name.startswith(_BACKBONE_PREFIX)]
    if not_backbone or unexpected:
        raise ModelLoadError(
            f"{head_file} does not match the reward model described by {REWARD_METADATA_FILE}: "
            f"missing {not_backbone}, unexpected {unexpected}"
        )

