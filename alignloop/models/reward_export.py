"""Reward models in the standard format: a transformers `AutoModelForSequenceClassification`
folder, written from an alignloop reward model and read back (or from elsewhere) for scoring.

Writing (`export_sequence_classifier`, `alignloop rm export`): the backbone (LoRA merged in)
becomes the classifier's body and the head's weight its `score` layer (`num_labels=1`). That
layer has no bias in transformers, so plain transformers gives `logits = w·h`, and alignloop's
raw score is `logits + bias`; the bias and the normalisation travel in `config.json` under
`alignloop_reward`:

    raw        = logits + alignloop_reward.bias
    normalised = (raw - alignloop_reward.score_mean) / alignloop_reward.score_std

Both the bias and the mean are constants, so rankings, pairwise preferences and Bradley-Terry
margins read from the logits alone are alignloop's. transformers reads the score at the last
token that is not the pad token; with a chat template that ends each turn with
`<end-of-turn>\\n` (SmolLM2's pad is its end-of-turn token) that is the last real token, where
alignloop reads it. Pad on the right: transformers' classifiers count positions from the
first column.

Reading (`load_sequence_classifier_reward`): any such folder, alignloop's export or a reward
model trained by TRL's RewardTrainer, scores through `SequenceClassifierReward`, which runs the
classifier's body and `score` exactly as `RewardModel` runs its backbone and head (score at the
last attention-mask position, positions from the mask), with the bias and normalisation of
`alignloop_reward` when present (else 0, and mean 0 / std 1).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedTokenizerBase

from alignloop.models.cache import write_folder_atomically
from alignloop.models.loading import TORCH_DTYPES, ModelLoadError, load_tokenizer
from alignloop.models.lora import is_lora_model
from alignloop.models.padding_free import last_hidden_states, positions_from_mask
from alignloop.models.reward_model import RewardModel, score_at_last_token

__all__ = [
    "REWARD_CONFIG_KEY",
    "SequenceClassifierReward",
    "export_sequence_classifier",
    "is_sequence_classifier_folder",
    "load_sequence_classifier_reward",
]

REWARD_CONFIG_KEY = "alignloop_reward"


def _causal_lm(model: RewardModel) -> nn.Module:
    """The backbone as a plain causal LM, a LoRA backbone merged into a copy (the model is left as it was)."""
    if is_lora_model(model.backbone):
        return copy.deepcopy(model.backbone).merge_and_unload()
    return model.backbone


def _classifier_config(causal: nn.Module, model: RewardModel, pad_token_id: int) -> Any:
    config = copy.deepcopy(causal.config)
    config.num_labels = 1
    config.id2label, config.label2id = {0: "reward"}, {"reward": 0}
    config.problem_type = "regression"
    config.pad_token_id = pad_token_id
    config.architectures = [type(causal).__name__.replace("ForCausalLM", "ForSequenceClassification")]
    mean, std = model.normalization
    setattr(config, REWARD_CONFIG_KEY, {
        "bias": float(model.head.bias.detach().float()), "score_mean": mean, "score_std": std,
        "base_model": model.base_model_name, "num_rating_classes": model.num_rating_classes,
        "formula": "raw = logits + bias; normalised = (raw - score_mean) / score_std",
    })
    return config


def export_sequence_classifier(model: RewardModel, tokenizer: PreTrainedTokenizerBase, path: str | Path) -> Path:
    """Write `model` as an AutoModelForSequenceClassification folder at `path` (see the module
    docstring), with `tokenizer` padding on the right; written whole or not at all."""
    if model.pooling != "last":
        # transformers' sequence classifiers read the score at the last token, nothing else.
        raise ModelLoadError(f"a reward model with pooling {model.pooling!r} has no transformers sequence-classifier "
                             f"form (they read the last token); use it through alignloop's own folder")
    if model.feature_layers:
        raise ModelLoadError(f"a reward model reading layers {list(model.feature_layers)} has no transformers "
                             f"sequence-classifier form (they read the last layer); use it through alignloop's own "
                             f"folder")
    if model.members > 1:
        raise ModelLoadError(f"an ensemble of {model.members} reward models has no single sequence-classifier form "
                             f"(one score head); use it through alignloop's own folder")
    causal = _causal_lm(model)
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = _classifier_config(causal, model, pad_token_id)
    classifier = AutoModelForSequenceClassification.from_config(config, dtype=next(causal.parameters()).dtype)
    body = getattr(classifier, classifier.base_model_prefix)
    missing, unexpected = body.load_state_dict(causal.get_decoder().state_dict(), strict=False)
    if missing or unexpected:
        raise ModelLoadError(f"the reward model's backbone does not fit {type(classifier).__name__}: "
                             f"missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        classifier.score.weight.copy_(model.head.weight.detach().to(classifier.score.weight.dtype))
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.padding_side = "right"

    def write(folder: Path) -> None:
        classifier.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))

    return write_folder_atomically(Path(path), write, replace=True)


def is_sequence_classifier_folder(path: str | Path) -> bool:
    """Whether `path` holds a transformers sequence-classification model (by its config.json)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (json.JSONDecodeError, AttributeError):
        return False
    return any(str(name).endswith("ForSequenceClassification") for name in architectures)


class SequenceClassifierReward(nn.Module):
    """A transformers sequence classifier (num_labels 1) behind `RewardModel`'s scoring interface:
    `forward(input_ids, attention_mask) -> (B,)` raw scores, `normalized`, `normalization`."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        if classifier.config.num_labels != 1:
            raise ModelLoadError(f"a reward model needs one output (num_labels 1), this classifier has "
                                 f"{classifier.config.num_labels}")
        self.classifier = classifier
        stored = getattr(classifier.config, REWARD_CONFIG_KEY, None) or {}
        self.bias = float(stored.get("bias", 0.0))
        self.register_buffer("score_mean", torch.tensor(float(stored.get("score_mean", 0.0))))
        self.register_buffer("score_std", torch.tensor(float(stored.get("score_std", 1.0))))
        self.base_model_name = stored.get("base_model")

    @property
    def hidden_size(self) -> int:
        return self.classifier.score.in_features

    pooling = "last"  # a sequence classifier reads its score at the last token
    members = 1  # one head

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix_groups: torch.Tensor | None = None,
        response_mask: torch.Tensor | None = None, *, members: bool = False,
    ) -> torch.Tensor:
        """(B,) raw scores, or (B, 1) with `members=True` (RewardModel's interface)."""
        body = getattr(self.classifier, self.classifier.base_model_prefix)
        hidden = last_hidden_states(body, input_ids, attention_mask, positions_from_mask(attention_mask))
        scores = score_at_last_token(hidden, attention_mask, self.classifier.score.weight, None) + self.bias
        return scores.unsqueeze(-1) if members else scores

    def normalized(self, scores: torch.Tensor) -> torch.Tensor:
        return (scores - self.score_mean) / self.score_std

    @property
    def normalization(self) -> tuple[float, float]:
        return float(self.score_mean), float(self.score_std)


def load_sequence_classifier_reward(
    path: str | Path, *, dtype: str = "float32"
) -> tuple[SequenceClassifierReward, PreTrainedTokenizerBase]:
    """A sequence-classification reward model folder as a frozen scorer, in eval mode, and its tokenizer."""
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(TORCH_DTYPES)}, got {dtype!r}")
    config = AutoConfig.from_pretrained(str(path))
    classifier = AutoModelForSequenceClassification.from_pretrained(str(path), config=config,
                                                                    dtype=TORCH_DTYPES[dtype])
    reward = SequenceClassifierReward(classifier).requires_grad_(False).eval()
    return reward, load_tokenizer(str(path))
