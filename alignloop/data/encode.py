"""Prompts and responses into token ids, with completion-only labels.

Prompts are rendered through the tokenizer's OWN chat template, so a model is trained on exactly
the format it will later be prompted with. A response is trained on together with whatever the
template writes after an assistant turn (`<|im_end|>\\n` for ChatML): that is how the model
learns to stop.

Where the template puts the boundary between prompt and response is the template's business,
so we do not guess it. We render the prompt with the generation prompt (`...<|im_start|>
assistant\\n`) and the full conversation with the response as its last assistant turn, check
that the second starts with the first, and call the rest the response text. Prompt and
response are then tokenized separately, without the tokenizer adding special tokens again
(the template writes them; only a BOS that the tokenizer would add and the template did not
write is prepended). Tokenizing separately means the prompt's ids are exactly what
`encode_prompt` gives to generation, whatever a joint tokenization would have merged across
the boundary.

Without a chat template (or with `use_chat_template=False`) the text is plain: the prompt, then
the response, then EOS. A conversation prompt is then written as an HH-style transcript
(`Human: ...\\n\\nAssistant:`), and its response follows after one space.

Labels are completion-only and unshifted (the Hugging Face convention: the model shifts them):
-100 under the prompt, the token id under the response.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from alignloop.data.errors import DataError
from alignloop.data.schemas import Message, SFTExample, prompt_messages

__all__ = [
    "IGNORE_INDEX",
    "Overlong",
    "EncodedExample",
    "EncodeReport",
    "has_chat_template",
    "render_prompt",
    "encode_prompt",
    "encode_prompt_response",
    "encode_text",
    "encode_sft_example",
    "encode_sft_dataset",
]

IGNORE_INDEX = -100  # the label value torch's cross-entropy (and transformers) skips

Overlong = Literal["truncate", "drop", "error"]

_PLAIN_SPEAKERS = {"system": "System", "user": "Human", "assistant": "Assistant"}


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of prompt + response, and labels (-100 under the prompt)."""

    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class EncodeReport:
    """`kept` examples were encoded (of which `truncated` lost a response tail); `dropped` were not."""

    kept: int
    truncated: int
    dropped: int

    def __str__(self) -> str:
        return f"{self.kept} kept ({self.truncated} with the response truncated), {self.dropped} dropped as over-long"


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _chat_mode(tokenizer: Any, use_chat_template: bool) -> bool:
    return use_chat_template and has_chat_template(tokenizer)


def _as_dicts(messages: Sequence[Message]) -> list[dict[str, str]]:
    return [{"role": message.role, "content": message.content} for message in messages]


def _plain_transcript(messages: Sequence[Message]) -> str:
    turns = [f"{_PLAIN_SPEAKERS[m.role]}: {m.content}" for m in messages]
    return "\n\n".join(turns + ["Assistant:"])


def render_prompt(tokenizer: Any, prompt: str | list[Message], use_chat_template: bool = True) -> str:
    """The prompt as text, ending where the model's answer begins."""
    if _chat_mode(tokenizer, use_chat_template):
        messages = _as_dicts(prompt_messages(prompt))
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return prompt if isinstance(prompt, str) else _plain_transcript(prompt)


def _render_response(tokenizer: Any, prompt: str | list[Message], prompt_text: str, response: str) -> str:
    """The text the template writes for the response turn, end-of-turn tokens included."""
    messages = _as_dicts(prompt_messages(prompt)) + [{"role": "assistant", "content": response}]
    full_text = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full_text.startswith(prompt_text):
        raise DataError(
            "the chat template renders the prompt differently when an assistant turn follows it, "
            "so the response cannot be separated from the prompt; pass use_chat_template=False "
            "or use a tokenizer whose template keeps earlier turns unchanged"
        )
    return full_text[len(prompt_text):]


def _tokenize(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _missing_bos(tokenizer: Any, text: str) -> list[int]:
    """[bos] when the tokenizer would normally add a BOS and the rendered text does not start with one."""
    bos_id = tokenizer.bos_token_id
    if bos_id is None or text.startswith(tokenizer.bos_token):
        return []
    adds_bos = tokenizer("a")["input_ids"][:1] == [bos_id] and _tokenize(tokenizer, "a")[:1] != [bos_id]
    return [bos_id] if adds_bos else []


def encode_prompt(tokenizer: Any, prompt: str | list[Message], use_chat_template: bool = True) -> list[int]:
    """Token ids of the rendered prompt: what generation starts from."""
    text = render_prompt(tokenizer, prompt, use_chat_template)
    return _missing_bos(tokenizer, text) + _tokenize(tokenizer, text)


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of plain text to train on whole (no template): BOS if the tokenizer adds one, then EOS."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return _missing_bos(tokenizer, text) + _tokenize(tokenizer, text) + eos


def encode_prompt_response(
    tokenizer: Any, prompt: str | list[Message], response: str, use_chat_template: bool = True
) -> tuple[list[int], list[int]]:
    """(prompt_ids, response_ids); the response ids end with the template's end-of-turn tokens or EOS.

    The shared core of every encoder that trains on a response (SFT, preference pairs, ...).
    """
    prompt_text = render_prompt(tokenizer, prompt, use_chat_template)
    prompt_ids = _missing_bos(tokenizer, prompt_text) + _tokenize(tokenizer, prompt_text)
    if _chat_mode(tokenizer, use_chat_template):
        return prompt_ids, _tokenize(tokenizer, _render_response(tokenizer, prompt, prompt_text, response))
    separator = "" if isinstance(prompt, str) else " "
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return prompt_ids, _tokenize(tokenizer, separator + response) + eos


def fit_to_length(
    prompt_ids: list[int],
    response_ids: list[int],
    *,
    max_length: int,
    overlong: Overlong,
    min_response_tokens: int,
    index: int | None,
) -> tuple[EncodedExample | None, bool]:
    """(example or None if dropped, whether the response was truncated)."""
    length = len(prompt_ids) + len(response_ids)
    truncated = False
    if length > max_length:
        if overlong == "error":
            where = f"example {index}" if index is not None else "example"
            raise DataError(f"{where}: {length} tokens, longer than max_length={max_length} (overlong='error')")
        room = max_length - len(prompt_ids)
        # A response cut to nothing would train on no tokens at all: drop it rather than waste a slot.
        if overlong == "drop" or room < min_response_tokens:
            return None, False
        response_ids, truncated = response_ids[:room], True
    labels = [IGNORE_INDEX] * len(prompt_ids) + list(response_ids)
    return EncodedExample(input_ids=prompt_ids + list(response_ids), labels=labels), truncated


def encode_sft_example(
    tokenizer: Any,
    example: SFTExample,
    *,
    max_length: int,
    overlong: Overlong = "truncate",
    use_chat_template: bool = True,
    min_response_tokens: int = 1,
    index: int | None = None,
) -> EncodedExample | None:
    """One demonstration as ids + completion-only labels; None when `overlong` drops it.

    "truncate" cuts the response tail and keeps the whole prompt (dropping the example when fewer
    than `min_response_tokens` response tokens would remain); "drop" skips any overlong example;
    "error" raises a `DataError` naming `index` and the length.
    """
    encoded, _ = _encode_sft(tokenizer, example, max_length, overlong, use_chat_template, min_response_tokens, index)
    return encoded


def _encode_sft(
    tokenizer: Any,
    example: SFTExample,
    max_length: int,
    overlong: Overlong,
    use_chat_template: bool,
    min_response_tokens: int,
    index: int | None,
) -> tuple[EncodedExample | None, bool]:
    if overlong not in ("truncate", "drop", "error"):
        raise ValueError(f"overlong must be 'truncate', 'drop' or 'error', got {overlong!r}")
    if example.text is not None:
        prompt_ids, response_ids = [], encode_text(tokenizer, example.text)
    else:
        prompt, response = example.prompt_and_response()
        prompt_ids, response_ids = encode_prompt_response(tokenizer, prompt, response, use_chat_template)
    return fit_to_length(
        prompt_ids, response_ids, max_length=max_length, overlong=overlong,
        min_response_tokens=min_response_tokens, index=index,
    )


def encode_sft_dataset(
    tokenizer: Any,
    examples: Sequence[SFTExample],
    *,
    max_length: int,
    overlong: Overlong = "truncate",
    use_chat_template: bool = True,
    min_response_tokens: int = 1,
) -> tuple[list[EncodedExample], EncodeReport]:
    """Encode every demonstration (see `encode_sft_example`) and count what `overlong` did."""
    encoded: list[EncodedExample] = []
    truncated = dropped = 0
    for index, example in enumerate(examples):
        result, was_truncated = _encode_sft(
            tokenizer, example, max_length, overlong, use_chat_template, min_response_tokens, index
        )
        if result is None:
            dropped += 1
            continue
        encoded.append(result)
        truncated += was_truncated
    return encoded, EncodeReport(kept=len(encoded), truncated=truncated, dropped=dropped)
