"""The `data:` section of a training recipe, and reading the train / eval records it names.

When no eval file is given, `eval_fraction` holds out records spread evenly over the train file
(see `splits.split_by_fraction`): deterministic without a seed, so a resumed or repeated run
evaluates on the same records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from alignloop.config import Section
from alignloop.data.record_files import Split, read_records
from alignloop.data.schemas import Record
from alignloop.data.splits import split_by_fraction

__all__ = ["SourceSplits", "DataConfig", "read_train_and_eval"]


class SourceSplits(Section):
    """The splits a data section reads from sources that have them (DatasetDict folders, hub datasets)."""

    split: str = Field("train", description="split of a DatasetDict folder or hub dataset that train names")
    eval_split: str = Field("test", description="split of a DatasetDict folder or hub dataset that eval names")
    name: str | None = Field(None, description="configuration name of a hub dataset (load_dataset's name)")

    def train_split(self) -> Split:
        return Split(self.split, self.name)

    def held_out_split(self) -> Split:
        return Split(self.eval_split, self.name)


class DataConfig(SourceSplits):
    """Where the training data lives and how it becomes token sequences (SFT-style data)."""

    train: Path = Field(description="training records: .jsonl(.gz), .json, .csv or .parquet file, datasets "
                                    "folder (save_to_disk), or a hub dataset id (online)")
    eval: Path | None = Field(None, description="evaluation records in the same formats; none: see eval_fraction")
    format: Literal["auto", "jsonl", "json", "csv", "parquet", "datasets", "hub"] = Field(
        "auto", description="file format; auto decides by suffix, a folder means a datasets folder, an id the hub"
    )
    max_length: int = Field(512, gt=0, description="longest sequence in tokens (prompt + response)")
    overlong: Literal["truncate", "drop", "error"] = Field(
        "truncate", description="longer examples: cut the response tail, drop them, or stop with an error"
    )
    packing: bool = Field(False, description="concatenate whole examples into rows of max_length instead of padding")
    use_chat_template: bool = Field(True, description="render prompts with the tokenizer's chat template, if any")
    eval_fraction: float = Field(
        0.0, ge=0.0, le=0.5, description="with no eval file, hold out this fraction of train (evenly spread, no seed)"
    )

    @model_validator(mode="after")
    def _one_source_of_eval_data(self) -> DataConfig:
        if self.eval is not None and self.eval_fraction > 0:
            raise ValueError("set either eval (a file) or eval_fraction (held out from train), not both")
        return self


def read_train_and_eval(config: DataConfig, schema: type[Record] | str) -> tuple[list[Record], list[Record]]:
    """(train records, eval records) as the config says: an eval file, a held-out fraction, or none."""
    train = read_records(config.train, schema, format=config.format, split=config.train_split())
    if config.eval is not None:
        return train, read_records(config.eval, schema, format=config.format, split=config.held_out_split())
    if config.eval_fraction > 0:
        return split_by_fraction(train, config.eval_fraction)
    return train, []
