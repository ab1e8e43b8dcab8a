"""Data: record schemas, file readers with located errors, HH-RLHF conversion, tokenization
with chat templates and completion-only labels, padding / packing collators, and fingerprints.

The path of a record through this package:

    read_records(path, PreferencePair)        # schemas.py + record_files.py: validate, file:line errors
      -> encode_prompt_response(tokenizer, …) # encode.py: the tokenizer's own chat template
      -> pad_batch / pack_examples            # collate.py: tensors for the model
    dataset_fingerprint(records)              # fingerprint.py: stored in every run directory

Preference data (reward models, DPO) takes the same path, one kind per file:

    read_preference_data(PreferenceDataConfig) # preference_config.py: kinds, skips counted by reason
      -> encode_preference_records(tokenizer, …)  # preference.py: same encoding as SFT, one length rule
      -> collate_pairs / collate_rankings / …  # collate.py: all responses of a batch in one tensor

The web app imports this package and must never import torch, so the torch-based collators
are loaded on first use (`alignloop.data.pad_batch` works; nothing else imports torch).
"""

from importlib import import_module
from typing import Any

from alignloop.data.config import DataConfig, SourceSplits, read_train_and_eval
from alignloop.data.encode import (
    IGNORE_INDEX,
    EncodedExample,
    EncodeReport,
    Overlong,
    encode_prompt,
    encode_prompt_response,
    encode_sft_dataset,
    encode_sft_example,
    has_chat_template,
    render_prompt,
)
from alignloop.data.errors import DataError
from alignloop.data.fingerprint import canonical_json, dataset_fingerprint
from alignloop.data.hh_rlhf import ConversionReport, HHSkip, convert_hh_file, hh_pair_to_preference, parse_hh_dialogue
from alignloop.data.preference import (
    EncodedBinary,
    EncodedPair,
    EncodedPreferenceData,
    EncodedRanking,
    EncodedRating,
    EncodeSkipReport,
    encode_preference_records,
    rankings_to_pairs,
    ratings_to_pairs,
)
from alignloop.data.preference_config import (
    PREFERENCE_KINDS,
    PreferenceData,
    PreferenceDataConfig,
    PreferenceReadReport,
    PreferenceRecords,
    check_pair,
    check_ranking,
    detect_file_kind,
    preference_fingerprint,
    read_preference_data,
    read_preference_file,
    record_kind,
)
from alignloop.data.record_files import (
    FORMATS,
    InvalidRecord,
    OnInvalid,
    ReadReport,
    Split,
    detect_format,
    iter_rows,
    looks_like_hub_id,
    read_records,
    read_records_report,
    write_jsonl,
)
from alignloop.data.schemas import (
    RECORD_SCHEMAS,
    BinaryFeedback,
    Message,
    PreferencePair,
    Prompt,
    PromptOnly,
    Ranking,
    Rating,
    Record,
    SFTExample,
    describe_validation_error,
    prompt_messages,
)
from alignloop.data.splits import split_by_fraction, split_every_nth

_TORCH_NAMES = {
    "PackedSequence", "pad_batch", "pack_examples", "collate_packed", "count_loss_tokens",
    "collate_pairs", "collate_rankings", "collate_ratings", "collate_binary",
}


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        return getattr(import_module("alignloop.data.collate"), name)
    raise AttributeError(f"module 'alignloop.data' has no attribute {name!r}")


__all__ = [
    # schemas
    "Message", "Prompt", "Record", "SFTExample", "PreferencePair", "Ranking", "Rating",
    "BinaryFeedback", "PromptOnly", "RECORD_SCHEMAS", "prompt_messages", "describe_validation_error",
    # files
    "DataError", "FORMATS", "OnInvalid", "InvalidRecord", "ReadReport", "Split", "detect_format", "iter_rows", "looks_like_hub_id",
    "read_records", "read_records_report", "write_jsonl",
    # HH-RLHF and splits
    "HHSkip", "ConversionReport", "parse_hh_dialogue", "hh_pair_to_preference", "convert_hh_file",
    "split_every_nth", "split_by_fraction",
    # encoding
    "IGNORE_INDEX", "Overlong", "EncodedExample", "EncodeReport", "has_chat_template", "render_prompt",
    "encode_prompt", "encode_prompt_response", "encode_sft_example", "encode_sft_dataset",
    # preference data: reading, checks, encoding, conversions
    "PREFERENCE_KINDS", "PreferenceDataConfig", "PreferenceRecords", "PreferenceReadReport", "PreferenceData",
    "record_kind", "detect_file_kind", "check_pair", "check_ranking", "read_preference_file",
    "read_preference_data", "preference_fingerprint", "EncodedPair", "EncodedRanking", "EncodedRating",
    "EncodedBinary", "EncodedPreferenceData", "EncodeSkipReport", "encode_preference_records",
    "rankings_to_pairs", "ratings_to_pairs",
    # collation
    "PackedSequence", "pad_batch", "pack_examples", "collate_packed", "count_loss_tokens",
    "collate_pairs", "collate_rankings", "collate_ratings", "collate_binary",
    # fingerprint and config
    "canonical_json", "dataset_fingerprint", "DataConfig", "SourceSplits", "read_train_and_eval",
]
