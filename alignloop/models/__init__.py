"""Models: load a causal LM and tokenizer from a built-in name, a local folder or a hub id;
prepare the offline built-in models; build tiny random models for tests; LoRA via peft; save a
trained model (full or adapter, optionally merged) for the next stage; reward models (a causal-LM
backbone with a scalar head), their saved folders and a scorer for (prompt, response) texts.

    from alignloop.models import load_model_and_tokenizer
    model, tokenizer = load_model_and_tokenizer("smollm2-135m-instruct")
"""

from alignloop.models.adapter_base import ADAPTER_METADATA_FILE, adapter_base_model
from alignloop.models.builtin import (
    BUILTIN_MODELS,
    BuiltinModel,
    BuiltinStatus,
    MissingBuiltinPackageError,
    UnknownBuiltinError,
    builtin_model_dir,
    builtin_names,
    builtin_status,
    is_builtin,
    load_builtin_tokenizer,
    prepare_builtin,
)
from alignloop.models.cache import alignloop_home
from alignloop.models.loading import (
    DEFAULT_MODEL,
    TORCH_DTYPES,
    ModelConfig,
    ModelLoadError,
    load_model_and_tokenizer,
    load_tokenizer,
    resolve_model_source,
)
from alignloop.models.lora import (
    LoraSettings,
    adapters_disabled,
    lora_merged_for_inference,
    apply_lora,
    count_trainable_parameters,
    is_lora_model,
    load_saved_adapter,
    merge_lora,
    save_adapter,
)
from alignloop.models.reward_export import (
    SequenceClassifierReward,
    export_sequence_classifier,
    is_sequence_classifier_folder,
    load_sequence_classifier_reward,
)
from alignloop.models.reward_io import load_reward_model, read_reward_metadata, save_reward_model
from alignloop.models.reward_model import RewardModel, build_reward_model, init_reward_head
from alignloop.models.reward_scoring import RewardScorer, score_texts
from alignloop.models.saving import MERGED_SUBFOLDER, save_trained_model
from alignloop.models.tiny import build_tiny_causal_lm, save_tiny_model
from alignloop.models.tokenizer import ensure_pad_token
from alignloop.models.value_head import (
    PolicyWithValueHead,
    disable_dropout,
    load_value_head,
    save_policy_with_value_head,
)

__all__ = [
    "ADAPTER_METADATA_FILE",
    "adapter_base_model",
    "BUILTIN_MODELS",
    "BuiltinModel",
    "BuiltinStatus",
    "DEFAULT_MODEL",
    "LoraSettings",
    "MERGED_SUBFOLDER",
    "MissingBuiltinPackageError",
    "ModelConfig",
    "ModelLoadError",
    "PolicyWithValueHead",
    "RewardModel",
    "RewardScorer",
    "SequenceClassifierReward",
    "export_sequence_classifier",
    "is_sequence_classifier_folder",
    "load_sequence_classifier_reward",
    "TORCH_DTYPES",
    "UnknownBuiltinError",
    "adapters_disabled",
    "lora_merged_for_inference",
    "alignloop_home",
    "apply_lora",
    "build_reward_model",
    "build_tiny_causal_lm",
    "builtin_model_dir",
    "builtin_names",
    "builtin_status",
    "count_trainable_parameters",
    "disable_dropout",
    "ensure_pad_token",
    "init_reward_head",
    "is_builtin",
    "is_lora_model",
    "load_builtin_tokenizer",
    "load_model_and_tokenizer",
    "load_reward_model",
    "load_tokenizer",
    "load_value_head",
    "merge_lora",
    "prepare_builtin",
    "read_reward_metadata",
    "resolve_model_source",
    "save_adapter",
    "load_saved_adapter",
    "save_policy_with_value_head",
    "save_reward_model",
    "save_tiny_model",
    "save_trained_model",
    "score_texts",
]
