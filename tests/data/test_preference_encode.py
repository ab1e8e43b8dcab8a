"""Encoding preference records with SmolLM2's tokenizer, the length rule, and pairs made from
rankings and ratings."""

from __future__ import annotations

import pytest

from alignloop.data import (
    BinaryFeedback,
    DataError,
    EncodedExample,
    Message,
    PreferencePair,
    PreferenceRecords,
    Ranking,
    Rating,
    SFTExample,
    encode_preference_records,
    encode_prompt,
    encode_sft_example,
    rankings_to_pairs,
    ratings_to_pairs,
)

CONVERSATION = [
    Message(role="user", content="Hi"),
    Message(role="assistant", content="Hello!"),
    Message(role="user", content="Name a colour."),
]


def trained_text(tokenizer, example: EncodedExample) -> str:
    return tokenizer.decode([label for label in example.labels if label != -100])


def prompt_part(example: EncodedExample) -> list[int]:
    return [token for token, label in zip(example.input_ids, example.labels) if label == -100]


def encode(tokenizer, **kinds_and_options):
    kinds = {kind: kinds_and_options.pop(kind) for kind in ("pairs", "rankings", "ratings", "binary")
             if kind in kinds_and_options}
    kinds_and_options.setdefault("max_length", 512)
    return encode_preference_records(tokenizer, PreferenceRecords(**kinds), **kinds_and_options)


def test_pair_labels_are_the_response_and_end_of_turn_as_in_sft(smol_tokenizer):
    record = PreferencePair(prompt=CONVERSATION, chosen="Blue.", rejected="Loud.", margin=2.0)
    encoded, report = encode(smol_tokenizer, pairs=[record])
    (pair,) = encoded.pairs
    assert trained_text(smol_tokenizer, pair.chosen) == "Blue.<|im_end|>\n"
    assert trained_text(smol_tokenizer, pair.rejected) == "Loud.<|im_end|>\n"
    assert prompt_part(pair.chosen) == prompt_part(pair.rejected) == encode_prompt(smol_tokenizer, CONVERSATION)
    assert pair.margin == 2.0
    sft = encode_sft_example(smol_tokenizer, SFTExample(prompt=CONVERSATION, response="Blue."), max_length=512)
    assert pair.chosen == sft
    assert report.kept == {"pairs": 1, "rankings": 0, "ratings": 0, "binary": 0}
    assert (report.truncated, report.prompt_truncated, report.skipped) == (0, 0, {})


def test_every_kind_encodes_its_responses(smol_tokenizer):
    encoded, _ = encode(
        smol_tokenizer,
        rankings=[Ranking(prompt="Q", responses=["one", "two", "three"]),
                  Ranking(prompt="Q", responses=["x", "y"], ranks=[1, 1])],
        ratings=[Rating(prompt="Q", response="ok", score=4, scale_min=1, scale_max=5, axis="helpful")],
        binary=[BinaryFeedback(prompt="Q", response="nope", label=False)],
        use_chat_template=False,
    )
    first, tied = encoded.rankings
    assert [trained_text(smol_tokenizer, r) for r in first.responses] == [
        "one<|im_end|>", "two<|im_end|>", "three<|im_end|>"
    ]
    assert (first.ranks, tied.ranks) == ([1, 2, 3], [1, 1])
    (rated,) = encoded.ratings
    assert (rated.score, rated.scale_min, rated.scale_max, rated.axis) == (4, 1, 5, "helpful")
    assert smol_tokenizer.decode(rated.example.input_ids) == "Qok<|im_end|>"  # plain: prompt, response, EOS
    (thumb,) = encoded.binary
    assert thumb.label is False and trained_text(smol_tokenizer, thumb.example) == "nope<|im_end|>"


def test_overlong_response_tail_is_cut(smol_tokenizer):
    prompt_length = len(encode_prompt(smol_tokenizer, "Q"))
    record = PreferencePair(prompt="Q", chosen="one two three four five", rejected="No.")
    encoded, report = encode(smol_tokenizer, pairs=[record], max_length=prompt_length + 2)
    (pair,) = encoded.pairs
    assert trained_text(smol_tokenizer, pair.chosen) == "one two"
    assert trained_text(smol_tokenizer, pair.rejected) == "No."  # "No." + <|im_end|> + "\n" cut to 2 tokens
    assert len(pair.chosen) == len(pair.rejected) == prompt_length + 2
    assert report.truncated == 1


def test_prompt_too_long_is_skipped_or_named(smol_tokenizer):
    long_prompt = "word " * 40
    prompt_length = len(encode_prompt(smol_tokenizer, long_prompt))
    max_length = len(encode_prompt(smol_tokenizer, "Q")) + 5
    records = dict(
        pairs=[PreferencePair(prompt="Q", chosen="a", rejected="b"),
               PreferencePair(prompt=long_prompt, chosen="a", rejected="b")],
        rankings=[Ranking(prompt=long_prompt, responses=["a", "b", "c"])],
    )
    encoded, report = encode(smol_tokenizer, max_length=max_length, **records)
    assert (len(encoded.pairs), len(encoded.rankings)) == (1, 0)
    assert report.skipped == {"prompt_too_long": 2}
    assert str(report) == (
        "kept 1 pairs, 0 rankings, 0 ratings, 0 binary; 0 with a response truncated, 0 with the prompt's start "
        "cut; skipped: prompt_too_long: 2"
    )
    with pytest.raises(DataError, match=rf"pairs record 1: prompt_too_long: the prompt has {prompt_length} tokens, "
                                        rf"leaving {max_length - prompt_length} of max_length={max_length}"):
        encode(smol_tokenizer, max_length=max_length, on_invalid="error", **records)
    # Exactly one token of room is enough (min_response_tokens=1).
    encoded, report = encode(smol_tokenizer, pairs=records["pairs"][1:], max_length=prompt_length + 1)
    assert [len(prompt_part(encoded.pairs[0].chosen)), report.truncated] == [prompt_length, 1]


def test_max_prompt_length_keeps_the_last_prompt_tokens(smol_tokenizer):
    full = encode_prompt(smol_tokenizer, CONVERSATION)
    record = PreferencePair(prompt=CONVERSATION, chosen="Blue.", rejected="Loud.")
    encoded, report = encode(smol_tokenizer, pairs=[record], max_prompt_length=8)
    (pair,) = encoded.pairs
    assert prompt_part(pair.chosen) == prompt_part(pair.rejected) == full[-8:]
    # The recent turn survives; SmolLM2 puts no BOS on sequences, so none is kept in front.
    assert smol_tokenizer.decode(full[-8:]) == " colour.<|im_end|>\n<|im_start|>assistant\n"
    assert trained_text(smol_tokenizer, pair.chosen) == "Blue.<|im_end|>\n"
    assert (report.prompt_truncated, report.truncated) == (1, 0)
    short, report = encode(smol_tokenizer, pairs=[record], max_prompt_length=len(full))
    assert prompt_part(short.pairs[0].chosen) == full and report.prompt_truncated == 0


class CharTokenizer:
    """One id per character, a BOS (1) put on every sequence and EOS (2); no chat template."""

    bos_token, bos_token_id, eos_token_id, chat_template = "^", 1, 2, None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([1] if add_special_tokens else []) + [ord(c) for c in text]}


def test_a_sequence_bos_stays_in_front_of_a_cut_prompt():
    record = PreferencePair(prompt="abcdef", chosen="x", rejected="y")
    encoded, _ = encode(CharTokenizer(), pairs=[record], max_prompt_length=3)
    assert encoded.pairs[0].chosen.input_ids == [1, ord("e"), ord("f"), ord("x"), 2]
    assert encoded.pairs[0].chosen.labels == [-100, -100, -100, ord("x"), 2]


# --- pairs from rankings and ratings --------------------------------------------------------


def test_rankings_to_pairs():
    ranked = Ranking(prompt="p", responses=["a", "b", "c"], ranks=[1, 1, 3])
    ordered = Ranking(prompt="q", responses=["x", "y", "z"])
    pairs = rankings_to_pairs([ranked, ordered])
    assert [(p.prompt, p.chosen, p.rejected, p.margin) for p in pairs] == [
        ("p", "a", "c", None), ("p", "b", "c", None),  # a and b tie: no pair between them
        ("q", "x", "y", None), ("q", "x", "z", None), ("q", "y", "z", None),
    ]


def stars(prompt, response, score, axis=None, low=1, high=5):
    return Rating(prompt=prompt, response=response, score=score, scale_min=low, scale_max=high, axis=axis)


def test_ratings_to_pairs_same_prompt_axis_and_scale_with_a_normalised_margin():
    ratings = [
        stars("p", "great", 5),
        stars("p", "poor", 3),
        stars([Message(role="user", content="p")], "good", 4.5),  # the same prompt as "p"
        stars("p", "other axis", 1, axis="harmless"),
        stars("p", "other scale", 1, low=0, high=10),
        stars("q", "alone", 1),
        stars("p", " great", 2),  # the same text as "great": never paired with it
    ]
    pairs = ratings_to_pairs(ratings, min_gap=1.0)
    assert [(p.chosen, p.rejected, p.margin) for p in pairs] == [
        ("great", "poor", 0.5),      # gap 2 on a 4-wide scale
        # great vs good: gap 0.5 < 1; great vs " great": same text
        ("good", "poor", 0.375),     # 4.5 vs 3
        ("poor", " great", 0.25),    # 3 vs 2
        ("good", " great", 0.625),   # 4.5 vs 2
    ]
    unit = [stars("u", "hi", 0.3, low=0, high=1), stars("u", "lo", 0.1, low=0, high=1)]
    assert [p.chosen for p in ratings_to_pairs(unit, min_gap=0.2)] == ["hi"]
    with pytest.raises(ValueError, match="min_gap must be positive"):
        ratings_to_pairs(ratings, min_gap=0)
