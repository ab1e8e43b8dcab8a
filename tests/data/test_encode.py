"""Chat-template rendering, completion-only labels and overlong handling, with SmolLM2's tokenizer."""

from __future__ import annotations

import pytest

from alignloop.data import (
    DataError,
    Message,
    SFTExample,
    encode_prompt,
    encode_prompt_response,
    encode_sft_dataset,
    encode_sft_example,
    render_prompt,
)

SMOL_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
CONVERSATION = [
    Message(role="system", content="Be brief."),
    Message(role="user", content="Hi"),
    Message(role="assistant", content="Hello!"),
    Message(role="user", content="Name a colour."),
]


def trained_text(tokenizer, encoded) -> str:
    """The text under the labels the loss sees (everything not masked with -100)."""
    return tokenizer.decode([label for label in encoded.labels if label != -100])


def test_text_prompt_becomes_one_user_message_in_the_template(smol_tokenizer):
    assert render_prompt(smol_tokenizer, "What is 2+2?") == (
        SMOL_SYSTEM + "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_conversation_prompt_uses_its_own_system_message(smol_tokenizer):
    assert render_prompt(smol_tokenizer, CONVERSATION) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_plain_rendering_without_the_template(smol_tokenizer):
    assert render_prompt(smol_tokenizer, "What is 2+2?", use_chat_template=False) == "What is 2+2?"
    assert render_prompt(smol_tokenizer, CONVERSATION, use_chat_template=False) == (
        "System: Be brief.\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a colour.\n\nAssistant:"
    )


def test_completion_only_labels_cover_the_response_and_the_end_of_turn(smol_tokenizer):
    encoded = encode_sft_example(smol_tokenizer, SFTExample(prompt="What is 2+2?", response="4."), max_length=512)
    prompt_ids = encode_prompt(smol_tokenizer, "What is 2+2?")
    # 21 ids for the default system turn, 12 for the user turn, 4 for "<|im_start|>assistant\n".
    assert len(prompt_ids) == 37
    assert encoded.input_ids[:37] == prompt_ids
    assert encoded.labels[:37] == [-100] * 37
    # "4." + <|im_end|> + the newline the template writes after every turn: the model learns to stop.
    assert encoded.input_ids[37:] == encoded.labels[37:] == [36, 30, 2, 198]
    assert trained_text(smol_tokenizer, encoded) == "4.<|im_end|>\n"
    assert smol_tokenizer.decode(encoded.input_ids) == render_prompt(smol_tokenizer, "What is 2+2?") + "4.<|im_end|>\n"
    # The template writes <|im_start|> itself; nothing is added in front of it.
    assert encoded.input_ids[0] == smol_tokenizer.convert_tokens_to_ids("<|im_start|>")


def test_messages_form_trains_on_the_last_assistant_turn_only(smol_tokenizer):
    turns = [m.model_dump() for m in CONVERSATION] + [{"role": "assistant", "content": "Blue."}]
    encoded = encode_sft_example(smol_tokenizer, SFTExample(messages=turns), max_length=512)
    assert trained_text(smol_tokenizer, encoded) == "Blue.<|im_end|>\n"
    assert "Hello!" in smol_tokenizer.decode(encoded.input_ids)


def test_plain_encoding_ends_the_response_with_eos(smol_tokenizer):
    encoded = encode_sft_example(
        smol_tokenizer, SFTExample(prompt="Q: 2+2? A:", response=" 4"), max_length=512, use_chat_template=False
    )
    assert smol_tokenizer.decode(encoded.input_ids) == "Q: 2+2? A: 4<|im_end|>"
    assert trained_text(smol_tokenizer, encoded) == " 4<|im_end|>"
    prompt_ids, response_ids = encode_prompt_response(smol_tokenizer, CONVERSATION, "Blue.", use_chat_template=False)
    assert smol_tokenizer.decode(response_ids) == " Blue.<|im_end|>"


def test_encode_prompt_response_is_the_prompt_then_the_response(smol_tokenizer):
    prompt_ids, response_ids = encode_prompt_response(smol_tokenizer, CONVERSATION, "Blue.")
    assert prompt_ids == encode_prompt(smol_tokenizer, CONVERSATION)
    assert smol_tokenizer.decode(response_ids) == "Blue.<|im_end|>\n"


def bos_adding_tokenizer(template_writes_bos: bool):
    """A word-level tokenizer that, like Llama's, adds <s> unless told not to."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, "hi": 3, "there": 4, "[user]": 5, "[bot]": 6}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tokenizer.chat_template = (
        ("{{ bos_token }}" if template_writes_bos else "")
        + "{% for m in messages %}{{ '[user] ' if m['role'] == 'user' else '[bot] ' }}{{ m['content'] }} "
        + "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
        + "{% if add_generation_prompt %}[bot] {% endif %}"
    )
    return tokenizer


@pytest.mark.parametrize("template_writes_bos", [False, True])
def test_bos_appears_exactly_once(template_writes_bos):
    tokenizer = bos_adding_tokenizer(template_writes_bos)
    assert encode_prompt_response(tokenizer, "hi", "there") == ([0, 5, 3, 6], [4, 1])
    assert encode_prompt_response(tokenizer, "hi", "there", use_chat_template=False) == ([0, 3], [4, 1])


def test_template_that_rewrites_the_prompt_is_refused():
    tokenizer = bos_adding_tokenizer(False)
    # A template that renders earlier turns differently once an assistant turn follows.
    tokenizer.chat_template = (
        "{% if messages[-1]['role'] == 'assistant' %}[bot] {% endif %}{{ messages[0]['content'] }}"
    )
    with pytest.raises(DataError, match="cannot be separated from the prompt"):
        encode_prompt_response(tokenizer, "hi", "there")


# --- overlong examples ----------------------------------------------------------------------

SHORT = SFTExample(prompt="What is 2+2?", response="4.")  # 37 prompt + 4 response ids = 41
LONG_RESPONSE = SFTExample(prompt="What is 2+2?", response="4. " + "Let me explain at length. " * 10)
LONG_PROMPT = SFTExample(prompt="Please read this. " * 10, response="Ok.")


def test_truncate_keeps_the_prompt_and_cuts_the_response_tail(smol_tokenizer):
    encoded, report = encode_sft_dataset(smol_tokenizer, [SHORT, LONG_RESPONSE, LONG_PROMPT], max_length=41)
    assert (report.kept, report.truncated, report.dropped) == (2, 1, 1)
    assert [len(e.input_ids) for e in encoded] == [41, 41]
    assert encoded[1].input_ids[:37] == encode_prompt(smol_tokenizer, "What is 2+2?")
    assert trained_text(smol_tokenizer, encoded[1]) == "4. Let me"  # 41 - 37 = 4 ids: "4", ".", " Let", " me"


def test_truncation_needs_room_for_a_response_token(smol_tokenizer):
    assert encode_sft_example(smol_tokenizer, LONG_RESPONSE, max_length=38) is not None
    assert encode_sft_example(smol_tokenizer, LONG_RESPONSE, max_length=37) is None
    assert encode_sft_example(smol_tokenizer, LONG_RESPONSE, max_length=39, min_response_tokens=3) is None


def test_drop_skips_every_overlong_example(smol_tokenizer):
    encoded, report = encode_sft_dataset(
        smol_tokenizer, [SHORT, LONG_RESPONSE, LONG_PROMPT], max_length=41, overlong="drop"
    )
    assert (report.kept, report.truncated, report.dropped) == (1, 0, 2)
    assert trained_text(smol_tokenizer, encoded[0]) == "4.<|im_end|>\n"


def test_error_names_the_example_and_its_length(smol_tokenizer):
    length = len(encode_sft_example(smol_tokenizer, LONG_RESPONSE, max_length=10_000).input_ids)
    with pytest.raises(DataError, match=rf"^example 1: {length} tokens, longer than max_length=41"):
        encode_sft_dataset(smol_tokenizer, [SHORT, LONG_RESPONSE], max_length=41, overlong="error")
    with pytest.raises(ValueError, match="overlong must be"):
        encode_sft_example(smol_tokenizer, SHORT, max_length=41, overlong="cut")
