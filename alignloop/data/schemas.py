"""The record types alignloop trains on, validated one record at a time.

Each kind of human judgement has one frozen pydantic model: a demonstration (`SFTExample`), a
pairwise preference (`PreferencePair`), a best-first ranking of K responses (`Ranking`), a score
on a declared scale (`Rating`), a thumbs up / down (`BinaryFeedback`) and a bare prompt for
rollouts (`PromptOnly`). Pydantic sits here because this is the I/O edge: records arrive from
files written by people and other tools, and we want a precise, located complaint for each bad
field rather than a crash deep inside a trainer.

A prompt is either plain text or a conversation (a list of `Message`s ending with the user's
turn); plain text is the same as a one-message conversation from the user.

These models check the shape of ONE record. Judgements about a dataset as a whole (drop pairs
whose chosen and rejected texts are equal, deduplicate prompts, ...) are policy choices that the
trainers configure, so they do not live here.

Extra keys are ignored on input, so files exported by other tools (with ids, timestamps, ...)
can be read without being rewritten. Error messages are written for people:
`describe_validation_error` turns pydantic's report into lines such as
`field 'chosen': expected a non-empty string, got null`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    FiniteFloat,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from alignloop.data.storable import unstorable_reason

__all__ = [
    "Message",
    "Prompt",
    "Record",
    "SFTExample",
    "PreferencePair",
    "Ranking",
    "Rating",
    "BinaryFeedback",
    "PromptOnly",
    "RECORD_SCHEMAS",
    "prompt_messages",
    "describe_validation_error",
]

Role = Literal["system", "user", "assistant"]


def _require_non_empty_text(value: Any) -> Any:
    # Checked before pydantic's own str validation so that null, numbers and "" all get the
    # same plain-language complaint.
    if not isinstance(value, str) or not value.strip():
        raise PydanticCustomError("non_empty_text", "expected a non-empty string")
    return _require_storable(value)


def _require_storable(value: Any) -> Any:
    if isinstance(value, str) and (reason := unstorable_reason(value)):
        raise PydanticCustomError("unstorable_text", "cannot be stored: it {reason}", {"reason": reason})
    return value


def _reject_bool(value: Any) -> Any:
    # Python's bool is an int, and pydantic's lax mode would read `true` as the number 1.0: in a
    # score or margin column that is always a mistake in the file.
    if isinstance(value, bool):
        raise PydanticCustomError("number_type", "expected a number")
    return value


NonEmptyText = Annotated[str, BeforeValidator(_require_non_empty_text)]
Number = Annotated[FiniteFloat, BeforeValidator(_reject_bool)]
Integer = Annotated[int, BeforeValidator(_reject_bool)]
Weight = Annotated[Number, Field(ge=0)]  # a judgement's share in training: 0 ignores it, 1 counts it once


class Message(BaseModel):
    """One turn of a conversation."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    role: Role
    content: Annotated[str, AfterValidator(_require_storable)]


def _check_ends_with_user(messages: list[Message]) -> list[Message]:
    if not messages:
        raise PydanticCustomError("conversation", "expected a non-empty list of messages")
    if messages[-1].role != "user":
        raise PydanticCustomError(
            "conversation", "expected a conversation ending with a user message, got one ending with {role}",
            {"role": repr(messages[-1].role)},
        )
    return messages


def _prompt_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "conversation"
    return None


# The tags name the two branches of the prompt union; pydantic puts them in error locations,
# and `describe_validation_error` removes them again so users see `prompt[0].role`.
_PROMPT_TAGS = frozenset({"text", "conversation"})

Prompt = Annotated[
    Annotated[NonEmptyText, Tag("text")]
    | Annotated[list[Message], AfterValidator(_check_ends_with_user), Tag("conversation")],
    Discriminator(
        _prompt_kind,
        custom_error_type="prompt_type",
        custom_error_message="expected a non-empty string or a list of messages",
    ),
]


def prompt_messages(prompt: str | list[Message]) -> list[Message]:
    """The prompt as a conversation: plain text is one user message."""
    if isinstance(prompt, str):
        return [Message(role="user", content=prompt)]
    return list(prompt)


def _field_error(field: str, message: str, got: Any) -> PydanticCustomError:
    """An error found by a whole-record check, attributed to the field a user has to fix."""
    return PydanticCustomError("record", message, {"field": field, "got": got})


class Record(BaseModel):
    """Base of every record type: immutable, and tolerant of extra keys in the input."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class SFTExample(Record):
    """A demonstration: `prompt` + `response`, `messages` whose last turn is the response, or `text`.

    The `messages` form keeps multi-turn demonstrations whole: every turn but the last assistant
    one is the prompt, and only the last assistant turn is trained on. `text` (TRL's standard
    language-modelling format) has no prompt: every token of it is trained on, as it stands,
    without a chat template.
    """

    prompt: Prompt | None = None
    response: NonEmptyText | None = None
    messages: list[Message] | None = None
    text: NonEmptyText | None = None

    @model_validator(mode="before")
    @classmethod
    def _exactly_one_form(cls, data: Any) -> Any:
        # Decided on the raw input, where an explicit null can still be told from an absent key.
        # Null counts as "not this form" because table formats (Parquet, datasets) give every
        # row every column, so a messages-form row arrives with prompt and response null.
        if not isinstance(data, dict):
            return data
        paired = data.get("prompt") is not None or data.get("response") is not None
        forms = [name for name, given in (("'prompt' + 'response'", paired),
                                          ("'messages'", data.get("messages") is not None),
                                          ("'text'", data.get("text") is not None)) if given]
        if len(forms) > 1:
            raise PydanticCustomError("sft_form", "expected one of 'prompt' + 'response', 'messages' or 'text', "
                                                  "not both {forms}", {"forms": " and ".join(forms)})
        if not forms:
            raise PydanticCustomError("sft_form", "expected 'prompt' + 'response', 'messages' or 'text'")
        expected = {"prompt": "a non-empty string or a list of messages", "response": "a non-empty string"}
        for name in expected if paired else ():
            if name not in data:
                raise _field_error(name, "missing required field", None)
            if data[name] is None:
                raise _field_error(name, f"expected {expected[name]}, got null", None)
        return data

    @model_validator(mode="after")
    def _last_turn_is_the_response(self) -> SFTExample:
        if self.messages is not None:
            _check_demonstration(self.messages)
        return self

    def prompt_and_response(self) -> tuple[str | list[Message], str]:
        """The example in the prompt + response form (for `text`: an empty prompt and the text)."""
        if self.text is not None:
            return "", self.text
        if self.messages is None:
            return self.prompt, self.response
        return list(self.messages[:-1]), self.messages[-1].content


def _check_demonstration(messages: list[Message]) -> None:
    if not messages or messages[-1].role != "assistant":
        got = messages[-1].role if messages else "nothing"
        raise _field_error(
            "messages", f"expected a conversation ending with an assistant turn, got one ending with {got}", None
        )
    if not messages[-1].content.strip():
        raise _field_error("messages", "expected a non-empty last assistant turn", messages[-1].content)
    if len(messages) < 2 or messages[-2].role != "user":
        raise _field_error("messages", "expected a user turn just before the last assistant turn", None)


class PreferencePair(Record):
    """`chosen` was preferred over `rejected` for `prompt`; `margin` optionally says by how much,
    `weight` how much the judgement counts in reward-model training (none: 1)."""

    prompt: Prompt
    chosen: NonEmptyText
    rejected: NonEmptyText
    margin: Number | None = None
    weight: Weight | None = None


class Ranking(Record):
    """K >= 2 responses ordered best first; equal `ranks` (1 = best) mark ties; `weight` as for pairs."""

    prompt: Prompt
    responses: list[NonEmptyText]
    ranks: list[Integer] | None = None
    weight: Weight | None = None

    @field_validator("responses")
    @classmethod
    def _at_least_two(cls, responses: list[str]) -> list[str]:
        if len(responses) < 2:
            raise PydanticCustomError(
                "ranking", "expected a list of at least 2 responses, got {count}", {"count": len(responses)}
            )
        return responses

    @model_validator(mode="after")
    def _ranks_fit_responses(self) -> Ranking:
        ranks = self.ranks
        if ranks is None:
            return self
        if len(ranks) != len(self.responses):
            raise _field_error("ranks", f"expected {len(self.responses)} ranks (one per response)", ranks)
        if min(ranks) < 1:
            raise _field_error("ranks", "expected ranks of at least 1 (1 = best)", ranks)
        # Responses are stored best first, so ranks can only stay equal (a tie) or grow.
        if any(later < earlier for earlier, later in zip(ranks, ranks[1:])):
            raise _field_error("ranks", "expected non-decreasing ranks (responses are listed best first)", ranks)
        return self


class Rating(Record):
    """A score for one response on the scale [`scale_min`, `scale_max`], optionally on one `axis`."""

    prompt: Prompt
    response: NonEmptyText
    score: Number
    scale_min: Number
    scale_max: Number
    axis: str | None = None

    @model_validator(mode="after")
    def _score_on_scale(self) -> Rating:
        if self.scale_max <= self.scale_min:
            raise _field_error("scale_max", f"expected a number above scale_min ({self.scale_min:g})", self.scale_max)
        if not self.scale_min <= self.score <= self.scale_max:
            raise _field_error(
                "score", f"expected a number between {self.scale_min:g} and {self.scale_max:g}", self.score
            )
        return self


class BinaryFeedback(Record):
    """A thumbs up (`label` true) or thumbs down (false) for one response."""

    prompt: Prompt
    response: NonEmptyText
    label: bool


class PromptOnly(Record):
    """A prompt with nothing attached: input to rollouts and evaluation."""

    prompt: Prompt


# The names recipes and the CLI use for each record type.
RECORD_SCHEMAS: dict[str, type[Record]] = {
    "sft": SFTExample,
    "preference": PreferencePair,
    "ranking": Ranking,
    "rating": Rating,
    "binary": BinaryFeedback,
    "prompt": PromptOnly,
}


def _render_value(value: Any, limit: int = 60) -> str:
    """A value as it appears in a JSON file (null, "", 3), shortened for an error line."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _field_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if part in _PROMPT_TAGS:
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _describe_one(error: dict[str, Any]) -> str:
    ctx = error.get("ctx") or {}
    field = _field_path(tuple(error["loc"])) or ctx.get("field")
    if error["type"] == "missing":
        return f"field {field!r}: missing required field"
    message = error["msg"]
    if message.startswith("Input should be "):
        message = "expected " + message[len("Input should be "):]
    got = ctx["got"] if "field" in ctx else error.get("input")
    # Some messages already say what was found ("got 1"), more usefully than the raw value.
    says_what_it_got = " got " in message or (got is None and "field" in ctx)
    shown = "" if says_what_it_got else f", got {_render_value(got)}"
    return f"field {field!r}: {message}{shown}" if field else f"{message}"


def describe_validation_error(error: ValidationError) -> list[str]:
    """One plain-language line per problem: `field 'chosen': expected a non-empty string, got null`."""
    return [_describe_one(e) for e in error.errors()]
