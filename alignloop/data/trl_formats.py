"""TRL's dataset formats, read as alignloop's records.

TRL names its dataset types by their columns, each in a *standard* (strings) and a
*conversational* (lists of `{"role", "content"}` messages) format. A raw row is rewritten here
into the fields of the alignloop record it means, before the record's schema validates it:

| TRL type                      | TRL columns                        | alignloop record                       |
|-------------------------------|------------------------------------|----------------------------------------|
| language modelling            | `text` / `messages`                | `SFTExample` (`text` / `messages`)     |
| prompt-only                   | `prompt`                           | `PromptOnly`                           |
| prompt-completion             | `prompt` + `completion`            | `SFTExample` (`prompt` + `response`)   |
| preference                    | `prompt` + `chosen` + `rejected`   | `PreferencePair`                       |
| implicit-prompt preference    | `chosen` + `rejected`              | `PreferencePair` (prompt extracted)    |
| unpaired preference (KTO)     | `prompt` + `completion` + `label`  | `BinaryFeedback`                       |
| stepwise supervision (PRM)    | `prompt` + `completions` + `labels`| `BinaryFeedback` (all steps correct?)  |

Conversational completions (`completion`, `chosen`, `rejected`) must be ONE assistant message:
alignloop trains on one response per prompt, and a completion of several turns (tool calls and
their results) has no response text to train on. An implicit prompt is the longest common
prefix of `chosen` and `rejected`, as TRL's `extract_prompt` takes it: the leading messages both
share (which must end with the user's turn), or for strings the shared leading characters, less
a space that ends them. A stepwise-supervision row becomes one binary judgement of the steps
joined by newlines (TRL's default step separator), good only if every step is labelled correct:
the per-step labels are lost, since alignloop has no process reward model.

Conversational data is rendered with the tokenizer's chat template, as TRL does. Plain strings
are rendered through the chat template too (a string prompt is one user message) unless the
recipe sets `use_chat_template: false`; TRL feeds standard strings to the model as they are, so
for data whose strings already hold a transcript (`"Human: ... Assistant:"`) set it to false.

Rows already in alignloop's own fields (`response`, string `chosen`, ...) pass through
unchanged. A row that cannot be rewritten raises `TRLFormatError`, which names the field and
carries a short `reason` under which `on_invalid: skip` counts it.

Writing goes the other way (`to_trl_row`): `trl-conversational`, the default of exports and
`data convert-hh`, writes every prompt as messages and every response as one assistant message,
so that TRL applies the chat template to it exactly as alignloop does; `trl-standard` writes
strings (`prompt` + `completion`, `prompt` + `chosen` + `rejected`), which TRL feeds to the
model without a template. Rankings and ratings have no TRL type and keep alignloop's fields
(with the prompt as messages in the conversational style).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from alignloop.data.errors import DataError
from alignloop.data.schemas import BinaryFeedback, Record, SFTExample, prompt_messages

__all__ = ["TRLFormatError", "RowStyle", "ROW_STYLES", "is_messages", "extract_prompt", "to_record_fields",
           "to_trl_row", "as_read_back"]

RowStyle = Literal["trl-conversational", "trl-standard"]
ROW_STYLES: tuple[str, ...] = ("trl-conversational", "trl-standard")

# TRL's default separator between the steps of a stepwise-supervision completion.
STEP_SEPARATOR = "\n"


class TRLFormatError(DataError):
    """A TRL-format row that cannot become an alignloop record; `reason` is its skip-count name."""

    def __init__(self, field: str, message: str, reason: str = "invalid_conversation"):
        super().__init__(f"field {field!r}: {message}")
        self.reason = reason


def is_messages(value: Any) -> bool:
    """Whether `value` is a conversation: a non-empty list whose first item is a message dict."""
    return isinstance(value, list) and bool(value) and isinstance(value[0], Mapping) and "role" in value[0]


def _one_assistant_text(field: str, value: Any) -> Any:
    """The text of a conversational completion of one assistant message; other values unchanged."""
    if not is_messages(value):
        return value
    roles = [message.get("role") for message in value]
    if roles != ["assistant"]:
        raise TRLFormatError(field, f"expected one assistant message as the completion, got roles {roles}")
    return value[0].get("content")


def _common_prefix_length(a: Any, b: Any) -> int:
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


def extract_prompt(chosen: Any, rejected: Any) -> tuple[Any, Any, Any]:
    """(prompt, chosen, rejected) of an implicit-prompt pair: the shared prefix is the prompt.

    Conversations share whole leading messages; strings share leading characters, and a space
    that ends the shared part goes with the responses (TRL's rule, so both read one pair alike).
    """
    length = _common_prefix_length(chosen, rejected)
    if isinstance(chosen, str) and length and length < min(len(chosen), len(rejected)) and chosen[length - 1] == " ":
        length -= 1
    return chosen[:length], chosen[length:], rejected[length:]


def _explicit_pair(fields: dict[str, Any]) -> dict[str, Any]:
    """`prompt` + `chosen` + `rejected` from a preference row, the prompt extracted if implicit."""
    chosen, rejected, prompt = fields.get("chosen"), fields.get("rejected"), fields.get("prompt")
    conversational = is_messages(chosen) and is_messages(rejected)
    if not conversational and not (prompt is None and isinstance(chosen, str) and isinstance(rejected, str)):
        # alignloop's own fields (or a row the schema will name the problem of): unchanged,
        # except a conversational completion on one side only.
        return {**fields, **{key: _one_assistant_text(key, fields[key]) for key in ("chosen", "rejected")
                             if is_messages(fields.get(key))}}
    # TRL's maybe_extract_prompt: a string prompt beside whole conversations is a label, not the prompt.
    if conversational and not is_messages(prompt):
        prompt, chosen, rejected = extract_prompt(chosen, rejected)
        if not prompt:
            raise TRLFormatError("chosen", "expected 'chosen' and 'rejected' to share the prompt's messages, "
                                           "but their first messages differ", "missing_field")
    elif not conversational:
        prompt, chosen, rejected = extract_prompt(chosen, rejected)
        if not prompt.strip():
            raise TRLFormatError("prompt", "missing, and 'chosen' and 'rejected' share no leading text to take "
                                           "as the prompt", "missing_field")
    return {**fields, "prompt": prompt, "chosen": _one_assistant_text("chosen", chosen),
            "rejected": _one_assistant_text("rejected", rejected)}


def _sft(fields: dict[str, Any]) -> dict[str, Any]:
    if "completion" not in fields or fields.get("response") is not None:
        return fields
    rewritten = {key: value for key, value in fields.items() if key != "completion"}
    return {**rewritten, "response": _one_assistant_text("completion", fields["completion"])}


def _binary(fields: dict[str, Any]) -> dict[str, Any]:
    if fields.get("completions") is not None and fields.get("response") is None:
        steps, labels = fields["completions"], fields.get("labels")
        if not isinstance(steps, list) or not all(isinstance(step, str) for step in steps):
            raise TRLFormatError("completions", "expected a list of step strings", "wrong_type")
        if not isinstance(labels, list) or len(labels) != len(steps) or not all(isinstance(x, bool) for x in labels):
            raise TRLFormatError("labels", f"expected {len(steps)} booleans (one per step)", "wrong_type")
        return {**fields, "response": STEP_SEPARATOR.join(steps), "label": all(labels)}
    if "completion" in fields and fields.get("response") is None:
        return {**fields, "response": _one_assistant_text("completion", fields["completion"])}
    return fields


_REWRITES = {"SFTExample": _sft, "PreferencePair": _explicit_pair, "BinaryFeedback": _binary}


def to_record_fields(fields: dict[str, Any], record_type: str) -> dict[str, Any]:
    """A raw row's fields rewritten from TRL's columns into those of `record_type` (a class name).

    Rows of other record types, and rows already in alignloop's fields, come back unchanged.
    """
    rewrite = _REWRITES.get(record_type)
    return rewrite(fields) if rewrite is not None else fields


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def to_trl_row(record: Record, style: RowStyle = "trl-conversational") -> dict[str, Any]:
    """`record` as a row of TRL's dataset type for it, in `style` (see the module docstring).

    Reading the row back (`to_record_fields` + the schema) gives an equal record. `trl-standard`
    has no way to write a conversation: a record with one is a `DataError`.
    """
    if style not in ROW_STYLES:
        raise ValueError(f"style must be one of {', '.join(ROW_STYLES)}, got {style!r}")
    row = record.model_dump(mode="json", exclude_none=True)
    completion_type = isinstance(record, (SFTExample, BinaryFeedback)) and "response" in row
    if style == "trl-standard":
        if isinstance(row.get("prompt"), list) or "messages" in row:
            raise DataError(f"a {type(record).__name__} with a conversation has no trl-standard (string) form; "
                            "write it as trl-conversational")
        if completion_type:
            row["completion"] = row.pop("response")
        return row
    if "prompt" in row:
        row["prompt"] = [message.model_dump() for message in prompt_messages(record.prompt)]
    for key in ("chosen", "rejected"):
        if key in row:
            row[key] = _assistant(row[key])
    if completion_type:
        row["completion"] = _assistant(row.pop("response"))
    return row


def as_read_back(record: Record, style: RowStyle) -> Record:
    """The record a reader gets from `to_trl_row(record, style)`: in the conversational style a
    string prompt comes back as one user message (the same prompt to a chat template)."""
    fields = to_record_fields(to_trl_row(record, style), type(record).__name__)
    return type(record).model_validate(fields)
