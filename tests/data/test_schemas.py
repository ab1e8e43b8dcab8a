"""Record schemas: every valid form, and a located, plain-language complaint for each invalid one."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from alignloop.data import (
    RECORD_SCHEMAS,
    BinaryFeedback,
    Message,
    PreferencePair,
    PromptOnly,
    Ranking,
    Rating,
    SFTExample,
    describe_validation_error,
    prompt_messages,
)

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Name a colour."},
]


def problems(schema, data) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        schema.model_validate(data)
    return describe_validation_error(caught.value)


# --- prompts and messages -------------------------------------------------------------------


def test_prompt_may_be_text_or_a_conversation_ending_with_the_user():
    text = PromptOnly.model_validate({"prompt": "Name a colour."})
    conversation = PromptOnly.model_validate({"prompt": CONVERSATION})
    assert text.prompt == "Name a colour."
    assert conversation.prompt[0] == Message(role="system", content="Be brief.")
    assert [m.role for m in conversation.prompt] == ["system", "user", "assistant", "user"]


def test_prompt_messages_turns_text_into_one_user_message():
    assert prompt_messages("Hi") == [Message(role="user", content="Hi")]
    assert len(prompt_messages(PromptOnly.model_validate({"prompt": CONVERSATION}).prompt)) == 4


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        (None, "field 'prompt': expected a non-empty string or a list of messages, got null"),
        (7, "field 'prompt': expected a non-empty string or a list of messages, got 7"),
        ("   ", "field 'prompt': expected a non-empty string, got \"   \""),
        ([], "field 'prompt': expected a non-empty list of messages, got []"),
        (
            CONVERSATION[:3],
            "field 'prompt': expected a conversation ending with a user message, got one ending with 'assistant'",
        ),
        (
            [{"role": "bot", "content": "x"}],
            "field 'prompt[0].role': expected 'system', 'user' or 'assistant', got \"bot\"",
        ),
        ([{"role": "user"}], "field 'prompt[0].content': missing required field"),
    ],
)
def test_invalid_prompts_are_described(prompt, expected):
    assert problems(PromptOnly, {"prompt": prompt}) == [expected]


def test_records_are_frozen_and_ignore_extra_keys():
    pair = PreferencePair.model_validate({"prompt": "p", "chosen": "a", "rejected": "b", "id": 17, "ts": "x"})
    assert not hasattr(pair, "id")
    with pytest.raises(ValidationError):
        pair.chosen = "changed"


# --- SFTExample -----------------------------------------------------------------------------


def test_sft_prompt_response_form():
    example = SFTExample.model_validate({"prompt": "Hi", "response": "Hello"})
    assert example.prompt_and_response() == ("Hi", "Hello")


def test_sft_messages_form_takes_the_last_assistant_turn_as_response():
    example = SFTExample.model_validate({"messages": CONVERSATION + [{"role": "assistant", "content": "Blue."}]})
    prompt, response = example.prompt_and_response()
    assert response == "Blue."
    assert [m.content for m in prompt] == ["Be brief.", "Hi", "Hello!", "Name a colour."]


def test_sft_messages_form_as_a_table_row_with_null_pair_columns():
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    row = {"prompt": None, "response": None, "messages": turns}
    assert SFTExample.model_validate(row).prompt_and_response() == ([Message(role="user", content="Hi")], "Yo")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, "expected 'prompt' + 'response', 'messages' or 'text'"),
        (
            {"prompt": "a", "response": "b", "messages": CONVERSATION},
            "expected one of 'prompt' + 'response', 'messages' or 'text', not both 'prompt' + 'response' and 'messages'",
        ),
        ({"prompt": "a"}, "field 'response': missing required field"),
        ({"prompt": "a", "response": None}, "field 'response': expected a non-empty string, got null"),
        ({"prompt": None, "response": "b"},
         "field 'prompt': expected a non-empty string or a list of messages, got null"),
        ({"response": "b"}, "field 'prompt': missing required field"),
        ({"prompt": "a", "response": ""}, "field 'response': expected a non-empty string, got \"\""),
        (
            {"messages": CONVERSATION},
            "field 'messages': expected a conversation ending with an assistant turn, got one ending with user",
        ),
        (
            {"messages": CONVERSATION + [{"role": "assistant", "content": "  "}]},
            "field 'messages': expected a non-empty last assistant turn, got \"  \"",
        ),
        (
            {"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]},
            "field 'messages': expected a user turn just before the last assistant turn",
        ),
    ],
)
def test_invalid_sft_examples(data, expected):
    assert problems(SFTExample, data) == [expected]


# --- PreferencePair -------------------------------------------------------------------------


def test_preference_pair_with_and_without_margin():
    pair = PreferencePair.model_validate({"prompt": CONVERSATION, "chosen": "Blue.", "rejected": "No.", "margin": 2})
    assert pair.margin == 2.0
    assert PreferencePair.model_validate({"prompt": "p", "chosen": "a", "rejected": "b"}).margin is None


def test_preference_pair_reports_every_bad_field():
    assert problems(PreferencePair, {"prompt": "p", "chosen": None, "rejected": "  ", "margin": True}) == [
        "field 'chosen': expected a non-empty string, got null",
        "field 'rejected': expected a non-empty string, got \"  \"",
        "field 'margin': expected a number, got true",
    ]
    assert problems(PreferencePair, {"prompt": "p", "chosen": "a"}) == ["field 'rejected': missing required field"]
    assert problems(PreferencePair, {"prompt": "p", "chosen": "a", "rejected": "b", "margin": float("inf")}) == [
        "field 'margin': expected a finite number, got Infinity"
    ]


def test_equal_chosen_and_rejected_is_a_dataset_policy_not_a_schema_error():
    assert PreferencePair.model_validate({"prompt": "p", "chosen": "same", "rejected": "same"}).chosen == "same"


# --- Ranking --------------------------------------------------------------------------------


def test_ranking_with_ties():
    ranking = Ranking.model_validate({"prompt": "p", "responses": ["a", "b", "c"], "ranks": [1, 1, 3]})
    assert ranking.ranks == [1, 1, 3]
    assert Ranking.model_validate({"prompt": "p", "responses": ["a", "b"]}).ranks is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"responses": ["a"]}, "field 'responses': expected a list of at least 2 responses, got 1"),
        ({"responses": ["a", ""]}, "field 'responses[1]': expected a non-empty string, got \"\""),
        ({"responses": "a"}, "field 'responses': expected a valid list, got \"a\""),
        ({"responses": ["a", "b"], "ranks": [1]}, "field 'ranks': expected 2 ranks (one per response), got [1]"),
        ({"responses": ["a", "b"], "ranks": [2, 1]},
         "field 'ranks': expected non-decreasing ranks (responses are listed best first), got [2, 1]"),
        ({"responses": ["a", "b"], "ranks": [0, 1]},
         "field 'ranks': expected ranks of at least 1 (1 = best), got [0, 1]"),
        ({"responses": ["a", "b"], "weight": -0.5}, "field 'weight': expected greater than or equal to 0, got -0.5"),
    ],
)
def test_invalid_rankings(data, expected):
    assert problems(Ranking, {"prompt": "p", **data}) == [expected]


# --- Rating ---------------------------------------------------------------------------------


def test_rating_on_its_declared_scale():
    rating = Rating.model_validate(
        {"prompt": "p", "response": "r", "score": "4.5", "scale_min": 1, "scale_max": 7, "axis": "harmless"}
    )
    assert (rating.score, rating.scale_min, rating.scale_max, rating.axis) == (4.5, 1.0, 7.0, "harmless")


@pytest.mark.parametrize(
    ("scale", "score", "expected"),
    [
        ((1, 5), 7, "field 'score': expected a number between 1 and 5, got 7.0"),
        ((1, 5), 0.5, "field 'score': expected a number between 1 and 5, got 0.5"),
        ((5, 1), 3, "field 'scale_max': expected a number above scale_min (5), got 1.0"),
        ((1, 5), "high", "field 'score': expected a valid number, unable to parse string as a number, got \"high\""),
    ],
)
def test_invalid_ratings(scale, score, expected):
    data = {"prompt": "p", "response": "r", "score": score, "scale_min": scale[0], "scale_max": scale[1]}
    assert problems(Rating, data) == [expected]


def test_rating_needs_its_scale():
    assert problems(Rating, {"prompt": "p", "response": "r", "score": 3}) == [
        "field 'scale_min': missing required field",
        "field 'scale_max': missing required field",
    ]


# --- BinaryFeedback, PromptOnly, the schema table -------------------------------------------


def test_binary_feedback():
    assert BinaryFeedback.model_validate({"prompt": "p", "response": "r", "label": True}).label is True
    assert BinaryFeedback.model_validate({"prompt": "p", "response": "r", "label": "false"}).label is False
    assert problems(BinaryFeedback, {"prompt": "p", "response": "r", "label": "maybe"}) == [
        "field 'label': expected a valid boolean, unable to interpret input, got \"maybe\""
    ]
    assert problems(BinaryFeedback, {"prompt": "p", "response": None, "label": True}) == [
        "field 'response': expected a non-empty string, got null"
    ]


def test_record_that_is_not_an_object():
    assert problems(PromptOnly, ["p"]) == ["expected a valid dictionary or instance of PromptOnly"]


def test_schema_table_names_every_record_type():
    assert RECORD_SCHEMAS == {
        "sft": SFTExample, "preference": PreferencePair, "ranking": Ranking,
        "rating": Rating, "binary": BinaryFeedback, "prompt": PromptOnly,
    }
