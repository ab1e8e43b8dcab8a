"""Anthropic HH-RLHF dialogues into `PreferencePair`s.

HH-RLHF stores each comparison as two whole transcripts, `chosen` and `rejected`, written as
`\\n\\nHuman: ...\\n\\nAssistant: ...`. The two share every turn but the last Assistant turn. We
parse both into messages, check that they really do share the conversation up to the final
assistant turn, and keep that shared conversation (ending with the user's turn) as a structured
prompt, so that each model renders it through its own chat template instead of training on the
`Human:` / `Assistant:` transcript format.

The released files have quirks: transcripts that do not parse, pairs whose final responses are
equal or empty, and pairs that diverge before the last turn (so there is no single shared
prompt). `hh_pair_to_preference` raises `HHSkip` carrying a short reason for each, and
`convert_hh_file` counts the skips instead of stopping.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from alignloop.data.errors import DataError
from alignloop.data.record_files import write_jsonl
from alignloop.data.schemas import Message, PreferencePair
from alignloop.data.trl_formats import ROW_STYLES, RowStyle

__all__ = ["HHSkip", "ConversionReport", "parse_hh_dialogue", "hh_pair_to_preference", "convert_hh_file"]

# A speaker tag only counts at the start of a paragraph: "Human:" inside a turn is quoted text.
_SPEAKER_TAG = re.compile(r"\n\n(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}


class HHSkip(DataError):
    """A pair that cannot become a `PreferencePair`; `reason` is a short key for counting."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class ConversionReport:
    """How many pairs were written, and how many skipped for each reason."""

    written: int
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def read(self) -> int:
        return self.written + sum(self.skipped.values())


def parse_hh_dialogue(text: str) -> list[Message]:
    """`\\n\\nHuman: a\\n\\nAssistant: b` -> [user a, assistant b]; `HHSkip("unparseable_dialogue")` if not."""
    pieces = _SPEAKER_TAG.split(text)
    # re.split with one group gives [before, tag, content, tag, content, ...].
    if len(pieces) < 3 or pieces[0].strip():
        raise HHSkip("unparseable_dialogue", "expected a transcript starting with '\\n\\nHuman:'")
    return [
        Message(role=_ROLES[tag], content=content.strip())
        for tag, content in zip(pieces[1::2], pieces[2::2])
    ]


def _final_response(messages: list[Message], which: str) -> str:
    if messages[-1].role != "assistant":
        raise HHSkip("no_final_assistant_turn", f"the {which} transcript does not end with an Assistant turn")
    if not messages[-1].content:
        raise HHSkip("empty_response", f"the {which} transcript ends with an empty Assistant turn")
    return messages[-1].content


def hh_pair_to_preference(chosen_text: str, rejected_text: str) -> PreferencePair:
    """One HH-RLHF comparison as a `PreferencePair` whose prompt is the shared conversation."""
    chosen_messages = parse_hh_dialogue(chosen_text)
    rejected_messages = parse_hh_dialogue(rejected_text)
    chosen = _final_response(chosen_messages, "chosen")
    rejected = _final_response(rejected_messages, "rejected")
    prompt = chosen_messages[:-1]
    if prompt != rejected_messages[:-1]:
        raise HHSkip("diverges_before_last_turn", "chosen and rejected differ before their final Assistant turn")
    if not prompt or prompt[-1].role != "user":
        raise HHSkip("no_user_turn_before_response", "the final Assistant turn does not follow a Human turn")
    if chosen == rejected:
        raise HHSkip("identical_responses", "chosen and rejected final responses are the same text")
    return PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected)


def _read_hh_lines(in_path: Path):
    """Yield (chosen, rejected) texts, or an `HHSkip` for a line that is not a readable pair."""
    opener = gzip.open if in_path.suffix == ".gz" else open
    with opener(in_path, "rt", encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                yield row["chosen"], row["rejected"]
            except (json.JSONDecodeError, KeyError, TypeError):
                yield HHSkip("unreadable_line", "not a JSON object with 'chosen' and 'rejected'")


def _with_string_prompt(pair: PreferencePair) -> PreferencePair:
    """The pair with its one-user-turn prompt as plain text (for trl-standard rows)."""
    if len(pair.prompt) != 1:
        raise HHSkip("conversation", "a dialogue with earlier turns has no string prompt (trl-standard)")
    return pair.model_copy(update={"prompt": pair.prompt[0].content})


def convert_hh_file(
    in_path: str | Path, out_path: str | Path, style: RowStyle = "trl-conversational"
) -> ConversionReport:
    """Convert an HH-RLHF .jsonl(.gz) file to a JSONL file of `PreferencePair`s, counting skips.

    The rows are TRL's preference rows in `style` (trl_formats.py). `trl-standard` cannot write a
    conversation: a dialogue with earlier turns is skipped there and counted as `conversation`;
    one of a single human turn gets that turn's text as its prompt.
    """
    in_path = Path(in_path)
    if not in_path.is_file():
        raise DataError(f"{in_path}: no such file")
    if style not in ROW_STYLES:
        raise DataError(f"unknown style {style!r}; known: {', '.join(ROW_STYLES)}")
    skipped: Counter[str] = Counter()
    pairs: list[PreferencePair] = []
    for item in _read_hh_lines(in_path):
        try:
            if isinstance(item, HHSkip):
                raise item
            pair = hh_pair_to_preference(*item)
            if style == "trl-standard":
                pair = _with_string_prompt(pair)
            pairs.append(pair)
        except HHSkip as skip:
            skipped[skip.reason] += 1
    written = write_jsonl(out_path, pairs, style)
    return ConversionReport(written=written, skipped=dict(sorted(skipped.items())))
