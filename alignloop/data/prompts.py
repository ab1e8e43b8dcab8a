"""Prompts for the online methods and the policy evaluation: read, tokenized, length-checked.

A prompt file holds records with a `prompt` field (a string or chat messages), in any format
`read_records` reads. Each prompt is tokenized once, with the tokenizer's chat template unless
told otherwise; a prompt over `max_prompt_length` tokens keeps its last tokens, is dropped, or
stops the run (`overlong_prompts`). Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from alignloop.data.config import SourceSplits
from alignloop.data.encode import encode_prompt
from alignloop.data.errors import DataError
from alignloop.data.record_files import Split, read_records
from alignloop.data.schemas import PromptOnly


class PromptDataConfig(SourceSplits):
    train: str = Field(description="prompts: JSONL / JSON / CSV / Parquet / datasets folder / hub id with a `prompt` field")
    eval: str | None = Field(None, description="held-out prompts, evaluated every train.eval_every steps")
    eval_samples: int = Field(1, ge=1, description="responses sampled per held-out prompt (more: a less noisy eval reward)")
    max_prompt_length: int = Field(256, ge=1, description="prompt tokens kept (see overlong_prompts)")
    overlong_prompts: Literal["truncate", "drop", "error"] = Field(
        "truncate", description="prompts over max_prompt_length: keep their last tokens, drop them, or stop"
    )
    use_chat_template: bool = Field(True, description="render prompts with the tokenizer's chat template")


@dataclass(frozen=True)
class PromptItem:
    record: PromptOnly  # the prompt as written (str or chat messages), for the reward source
    prompt_ids: list[int]

    @property
    def prompt(self) -> Any:
        return self.record.prompt


def collate_prompts(items: list[PromptItem]) -> dict[str, Any]:
    return {"prompts": items}


def read_prompts(
    path: str, tokenizer, config: PromptDataConfig, console=None, split: str | None = None
) -> list[PromptItem]:
    """The prompts of `path` (its `split`: config.split unless given), tokenized; overlong ones
    handled as `config.overlong_prompts` says."""
    items, overlong = [], []
    which = Split(split or config.split, config.name)  # split: the eval prompts' (config.eval_split)
    for line, record in enumerate(read_records(path, PromptOnly, split=which), start=1):
        ids = encode_prompt(tokenizer, record.prompt, config.use_chat_template)
        if len(ids) > config.max_prompt_length:
            overlong.append((line, len(ids)))
            if config.overlong_prompts == "drop":
                continue
            ids = ids[-config.max_prompt_length :]
        items.append(PromptItem(record, ids))
    if overlong and config.overlong_prompts == "error":
        shown = ", ".join(f"record {line} ({n} tokens)" for line, n in overlong[:5])
        raise DataError(f"{path}: {len(overlong)} prompt(s) longer than data.max_prompt_length="
                        f"{config.max_prompt_length} tokens: {shown}; raise the limit, or set "
                        "data.overlong_prompts to truncate or drop")
    if overlong and console is not None:
        done = "dropped" if config.overlong_prompts == "drop" else "cut to their last tokens"
        console.print(f"[yellow]note[/]: {path}: {len(overlong)} prompt(s) over {config.max_prompt_length} tokens {done}")
    if not items:
        raise DataError(f"{path}: no prompts left (all {len(overlong)} were longer than data.max_prompt_length)")
    return items
