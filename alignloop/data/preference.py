"""Preference records (pairs, rankings, ratings, binary feedback) into token ids, and pairs made
from rankings and ratings.

Every response is encoded exactly as an SFT response (`encode_prompt_response`): the prompt
through the tokenizer's chat template, labels -100 under the prompt, and the response trained
on together with the template's end-of-turn tokens. A reward model or DPO then scores the same
tokens a policy would be trained to write, and all responses of one record share the same
prompt ids (so row i and row B + i of a pair batch differ only after the prompt).

One length rule for every kind, applied per response:

1. `max_prompt_length`, if set, keeps only the LAST that many prompt tokens: in a long
   conversation the most recent turns decide what a good answer is, the opening turns (and the
   system message) matter least. A leading BOS is kept in front when the tokenizer marks every
   sequence with one (it adds its BOS to plain text); SmolLM2 and other ChatML templates do
   not, so their cut prompt simply starts mid-conversation.
2. If prompt + response is longer than `max_length`, the response tail is cut (as SFT's
   "truncate"). Cutting the prompt instead would change what the responses answer.
3. If the prompt leaves fewer than `min_response_tokens` tokens for a response, the record is
   skipped as `prompt_too_long` (or, with on_invalid="error", a `DataError` names it). The rule
   depends on the prompt alone, so all responses of a record are kept or skipped together.

Truncated responses are still compared: cutting both responses of a pair at the same length
keeps the comparison on what the model sees, and the count of truncated records is reported so
that a too-small `max_length` shows up.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from alignloop.data.encode import EncodedExample, fit_to_length, encode_prompt_response
from alignloop.data.errors import DataError
from alignloop.data.preference_config import PREFERENCE_KINDS, PreferenceRecords
from alignloop.data.record_files import OnInvalid
from alignloop.data.schemas import Message, PreferencePair, Ranking, Rating, prompt_messages

__all__ = [
    "EncodedPair",
    "EncodedRanking",
    "EncodedRating",
    "EncodedBinary",
    "EncodedPreferenceData",
    "EncodeSkipReport",
    "encode_preference_records",
    "rankings_to_pairs",
    "ratings_to_pairs",
]


@dataclass(frozen=True)
class EncodedPair:
    chosen: EncodedExample
    rejected: EncodedExample
    margin: float | None
    weight: float = 1.0  # the judgement's share in reward-model training


@dataclass(frozen=True)
class EncodedRanking:
    """Responses best first; `ranks` 1 = best, equal ranks tie (1..K when the record gave none)."""

    responses: list[EncodedExample]
    ranks: list[int]
    weight: float = 1.0


@dataclass(frozen=True)
class EncodedRating:
    example: EncodedExample
    score: float
    scale_min: float
    scale_max: float
    axis: str | None


@dataclass(frozen=True)
class EncodedBinary:
    example: EncodedExample
    label: bool


@dataclass(frozen=True)
class EncodedPreferenceData:
    pairs: list[EncodedPair] = field(default_factory=list)
    rankings: list[EncodedRanking] = field(default_factory=list)
    ratings: list[EncodedRating] = field(default_factory=list)
    binary: list[EncodedBinary] = field(default_factory=list)


@dataclass(frozen=True)
class EncodeSkipReport:
    """Records kept per kind; of those, how many had a response tail cut (`truncated`) or the
    prompt's start cut by max_prompt_length (`prompt_truncated`); records skipped per reason."""

    kept: dict[str, int]
    truncated: int
    prompt_truncated: int
    skipped: dict[str, int]

    def __str__(self) -> str:
        kept = ", ".join(f"{count} {kind}" for kind, count in self.kept.items())
        skipped = ", ".join(f"{reason}: {count}" for reason, count in self.skipped.items()) or "none"
        return (
            f"kept {kept}; {self.truncated} with a response truncated, {self.prompt_truncated} with the "
            f"prompt's start cut; skipped: {skipped}"
        )


@dataclass(frozen=True)
class _Limits:
    max_length: int
    max_prompt_length: int | None
    min_response_tokens: int
    use_chat_template: bool
    sequence_bos: int | None  # the BOS id that a cut prompt keeps in front, if any


class _PromptTooLong(Exception):
    def __init__(self, prompt_tokens: int):
        self.prompt_tokens = prompt_tokens


def _sequence_bos(tokenizer: Any) -> int | None:
    """The BOS id if the tokenizer puts one on every sequence; ChatML's `<|im_start|>` BOS it does not."""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos_id is not None and tokenizer("a")["input_ids"][:1] == [bos_id]:
        return bos_id
    return None


def _cut_prompt(prompt_ids: list[int], limits: _Limits) -> tuple[list[int], bool]:
    """The last max_prompt_length prompt ids (a leading sequence BOS kept), and whether any were cut."""
    keep = limits.max_prompt_length
    if keep is None or len(prompt_ids) <= keep:
        return prompt_ids, False
    if limits.sequence_bos is not None and prompt_ids[0] == limits.sequence_bos and keep > 1:
        return prompt_ids[:1] + prompt_ids[len(prompt_ids) - keep + 1:], True
    return prompt_ids[-keep:], True


def _encode_responses(
    tokenizer: Any, prompt: str | list[Message], responses: Sequence[str], limits: _Limits
) -> tuple[list[EncodedExample], bool, bool]:
    """(examples, any response truncated, prompt cut); raises `_PromptTooLong`."""
    examples: list[EncodedExample] = []
    truncated = prompt_cut = False
    for response in responses:
        prompt_ids, response_ids = encode_prompt_response(tokenizer, prompt, response, limits.use_chat_template)
        prompt_ids, prompt_cut = _cut_prompt(prompt_ids, limits)
        example, was_truncated = fit_to_length(
            prompt_ids, response_ids, max_length=limits.max_length, overlong="truncate",
            min_response_tokens=limits.min_response_tokens, index=None,
        )
        if example is None:
            raise _PromptTooLong(len(prompt_ids))
        examples.append(example)
        truncated |= was_truncated
    return examples, truncated, prompt_cut


def _weight(record: Any) -> float:
    return 1.0 if record.weight is None else float(record.weight)


# Per kind: the responses a record holds, and how its encoded responses become the result.
_RESPONSES: dict[str, Callable[[Any], list[str]]] = {
    "pairs": lambda pair: [pair.chosen, pair.rejected],
    "rankings": lambda ranking: list(ranking.responses),
    "ratings": lambda rating: [rating.response],
    "binary": lambda feedback: [feedback.response],
}
_BUILD: dict[str, Callable[[Any, list[EncodedExample]], Any]] = {
    "pairs": lambda pair, ex: EncodedPair(ex[0], ex[1], pair.margin, _weight(pair)),
    "rankings": lambda ranking, ex: EncodedRanking(ex, list(ranking.ranks or range(1, len(ex) + 1)), _weight(ranking)),
    "ratings": lambda rating, ex: EncodedRating(ex[0], rating.score, rating.scale_min, rating.scale_max, rating.axis),
    "binary": lambda feedback, ex: EncodedBinary(ex[0], feedback.label),
}


def _prompt_too_long_error(kind: str, index: int, prompt_tokens: int, limits: _Limits) -> DataError:
    room = limits.max_length - prompt_tokens
    return DataError(
        f"{kind} record {index}: prompt_too_long: the prompt has {prompt_tokens} tokens, leaving {room} of "
        f"max_length={limits.max_length} for the response (at least {limits.min_response_tokens} needed); "
        "raise max_length, set max_prompt_length, or use on_invalid='skip'"
    )


def encode_preference_records(
    tokenizer: Any,
    records: PreferenceRecords,
    *,
    max_length: int,
    max_prompt_length: int | None = None,
    use_chat_template: bool = True,
    on_invalid: OnInvalid = "skip",
    min_response_tokens: int = 1,
) -> tuple[EncodedPreferenceData, EncodeSkipReport]:
    """Encode every record of every kind under the length rule of the module docstring."""
    if on_invalid not in ("error", "skip"):
        raise ValueError(f"on_invalid must be 'error' or 'skip', got {on_invalid!r}")
    limits = _Limits(max_length, max_prompt_length, min_response_tokens, use_chat_template, _sequence_bos(tokenizer))
    encoded: dict[str, list[Any]] = {kind: [] for kind in PREFERENCE_KINDS}
    skipped: Counter[str] = Counter()
    truncated = prompt_truncated = 0
    for kind in PREFERENCE_KINDS:
        for index, record in enumerate(getattr(records, kind)):
            try:
                examples, was_truncated, prompt_cut = _encode_responses(
                    tokenizer, record.prompt, _RESPONSES[kind](record), limits
                )
            except _PromptTooLong as too_long:
                if on_invalid == "error":
                    raise _prompt_too_long_error(kind, index, too_long.prompt_tokens, limits) from None
                skipped["prompt_too_long"] += 1
                continue
            encoded[kind].append(_BUILD[kind](record, examples))
            truncated += was_truncated
            prompt_truncated += prompt_cut
    report = EncodeSkipReport(
        kept={kind: len(items) for kind, items in encoded.items()}, truncated=truncated,
        prompt_truncated=prompt_truncated, skipped=dict(sorted(skipped.items())),
    )
    return EncodedPreferenceData(**encoded), report


def rankings_to_pairs(rankings: Sequence[Ranking]) -> list[PreferencePair]:
    """Every two responses of a ranking with different ranks, as a pair with the better one chosen.

    K responses without ties give K(K-1)/2 pairs; tied responses give none (a tie says neither
    is preferred). Responses without `ranks` are in order, best first. Each pair keeps the
    ranking's `weight`.
    """
    pairs: list[PreferencePair] = []
    for ranking in rankings:
        ranks = ranking.ranks or list(range(1, len(ranking.responses) + 1))
        for better in range(len(ranking.responses)):
            for worse in range(better + 1, len(ranking.responses)):
                # Ranks are non-decreasing (the schema checks it), so `better` is never worse.
                if ranks[better] < ranks[worse]:
                    pairs.append(PreferencePair(
                        prompt=ranking.prompt, chosen=ranking.responses[better], rejected=ranking.responses[worse],
                        weight=ranking.weight,
                    ))
    return pairs


def _rating_group(rating: Rating) -> tuple[Any, ...]:
    # Plain text and a one-message conversation are the same prompt; scores on different scales
    # (or axes) are not comparable, so they never meet.
    prompt = tuple((message.role, message.content) for message in prompt_messages(rating.prompt))
    return prompt, rating.axis, rating.scale_min, rating.scale_max


def ratings_to_pairs(ratings: Sequence[Rating], min_gap: float = 1.0) -> list[PreferencePair]:
    """Pairs of responses to the same prompt (same axis, same scale) whose scores differ by >= min_gap.

    The higher-scored response is chosen; `margin` is the score gap as a fraction of the scale
    (scale_max - scale_min), so it means the same on 1-5 stars and 0-10 points. Two ratings of
    the same response text give no pair. Prompts come in the order they first appear.
    """
    if min_gap <= 0:
        raise ValueError(f"min_gap must be positive (equal scores are not a preference), got {min_gap}")
    groups: dict[tuple[Any, ...], list[Rating]] = defaultdict(list)
    for rating in ratings:
        groups[_rating_group(rating)].append(rating)
    pairs: list[PreferencePair] = []
    for group in groups.values():
        for first_index, first in enumerate(group):
            for second in group[first_index + 1:]:
                gap = abs(first.score - second.score)
                # A little slack: in floats 0.3 - 0.1 is 0.19999..., which must still count as 0.2.
                if gap < min_gap - 1e-9 or first.response.strip() == second.response.strip():
                    continue
                better, worse = (first, second) if first.score > second.score else (second, first)
                pairs.append(PreferencePair(
                    prompt=first.prompt, chosen=better.response, rejected=worse.response,
                    margin=gap / (first.scale_max - first.scale_min),
                ))
    return pairs
