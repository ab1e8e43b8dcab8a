"""TRL's dataset types, standard and conversational, read as alignloop records (trl_formats.py)."""

import json

import pytest

from alignloop.data import (
    BinaryFeedback,
    DataError,
    Message,
    PreferencePair,
    PromptOnly,
    SFTExample,
    Split,
    detect_file_kind,
    read_records,
    read_records_report,
)
from alignloop.data.encode import IGNORE_INDEX, encode_sft_example
from alignloop.data.trl_formats import extract_prompt


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


USER_HI = [Message(role="user", content="Hi")]


# --- each TRL type, standard and conversational ----------------------------------------------
@pytest.mark.parametrize("row, expected", [
    # prompt-completion
    ({"prompt": "Hi", "completion": "Hello!"}, SFTExample(prompt="Hi", response="Hello!")),
    ({"prompt": [user("Hi")], "completion": [assistant("Hello!")]}, SFTExample(prompt=USER_HI, response="Hello!")),
    # language modelling
    ({"text": "The sky is blue."}, SFTExample(text="The sky is blue.")),
    ({"messages": [user("Hi"), assistant("Hello!")]},
     SFTExample(messages=[*USER_HI, Message(role="assistant", content="Hello!")])),
    # alignloop's own fields pass through
    ({"prompt": "Hi", "response": "Hello!"}, SFTExample(prompt="Hi", response="Hello!")),
])
def test_sft_types(tmp_path, row, expected):
    assert read_records(jsonl(tmp_path / "sft.jsonl", [row]), SFTExample) == [expected]


@pytest.mark.parametrize("row, expected", [
    ({"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."},
     PreferencePair(prompt="Hi", chosen="Hello!", rejected="Go away.")),
    ({"prompt": [user("Hi")], "chosen": [assistant("Hello!")], "rejected": [assistant("Go away.")]},
     PreferencePair(prompt=USER_HI, chosen="Hello!", rejected="Go away.")),
    # implicit prompt: the shared leading messages
    ({"chosen": [user("Hi"), assistant("Hello!")], "rejected": [user("Hi"), assistant("Go away.")]},
     PreferencePair(prompt=USER_HI, chosen="Hello!", rejected="Go away.")),
    # TRL's maybe_extract_prompt: a string prompt beside whole conversations is not the prompt
    ({"prompt": "greeting", "chosen": [user("Hi"), assistant("Hello!")], "rejected": [user("Hi"), assistant("No.")]},
     PreferencePair(prompt=USER_HI, chosen="Hello!", rejected="No.")),
    # implicit prompt in strings: the shared characters, less the space that ends them
    ({"chosen": "Q: colour of the sky? A: blue", "rejected": "Q: colour of the sky? A: green"},
     PreferencePair(prompt="Q: colour of the sky? A:", chosen=" blue", rejected=" green")),
])
def test_preference_types(tmp_path, row, expected):
    assert read_records(jsonl(tmp_path / "pairs.jsonl", [row]), PreferencePair) == [expected]


@pytest.mark.parametrize("row, expected", [
    ({"prompt": "Hi", "completion": "Hello!", "label": True}, BinaryFeedback(prompt="Hi", response="Hello!", label=True)),
    ({"prompt": [user("Hi")], "completion": [assistant("Go away.")], "label": False},
     BinaryFeedback(prompt=USER_HI, response="Go away.", label=False)),
    # stepwise supervision: one judgement of the joined steps, good only if every step is
    ({"prompt": "2+2*2?", "completions": ["2*2=4", "2+4=6"], "labels": [True, True]},
     BinaryFeedback(prompt="2+2*2?", response="2*2=4\n2+4=6", label=True)),
    ({"prompt": "2+2*2?", "completions": ["2+2=4", "4*2=8"], "labels": [True, False]},
     BinaryFeedback(prompt="2+2*2?", response="2+2=4\n4*2=8", label=False)),
])
def test_unpaired_and_stepwise_types(tmp_path, row, expected):
    path = jsonl(tmp_path / "binary.jsonl", [row])
    assert detect_file_kind(path) == "binary"
    assert read_records(path, BinaryFeedback) == [expected]


def test_prompt_only_types(tmp_path):
    path = jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Hi"}, {"prompt": [user("Hi")]}])
    assert read_records(path, PromptOnly) == [PromptOnly(prompt="Hi"), PromptOnly(prompt=USER_HI)]


# --- what cannot be read, located and counted ---------------------------------------------------
def test_rows_that_cannot_be_rewritten_are_located_and_counted(tmp_path):
    path = jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": [user("Hi")], "chosen": [user("again"), assistant("Hello!")], "rejected": [assistant("No.")]},
        {"chosen": [user("Hi"), assistant("Hello!")], "rejected": [user("Bye"), assistant("No.")]},
        {"chosen": "Blue.", "rejected": "Green."},
        {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."},
    ])
    with pytest.raises(DataError) as caught:
        read_records(path, PreferencePair)
    message = str(caught.value)
    assert "pairs.jsonl:1: field 'chosen': expected one assistant message as the completion, got roles " \
           "['user', 'assistant']" in message
    assert "pairs.jsonl:2: field 'chosen': expected 'chosen' and 'rejected' to share the prompt's messages" in message
    assert "pairs.jsonl:3: field 'prompt': missing, and 'chosen' and 'rejected' share no leading text" in message
    records, report = read_records_report(path, PreferencePair, on_invalid="skip")
    assert len(records) == 1 and report.skipped == {"invalid_conversation": 1, "missing_field": 2}

    steps = jsonl(tmp_path / "steps.jsonl", [{"prompt": "x", "completions": ["a", "b"], "labels": [True]}])
    with pytest.raises(DataError, match=r"steps\.jsonl:1: field 'labels': expected 2 booleans \(one per step\)"):
        read_records(steps, BinaryFeedback)


def test_an_sft_row_in_two_forms_is_refused(tmp_path):
    path = jsonl(tmp_path / "sft.jsonl", [{"text": "a", "messages": [user("Hi"), assistant("Hello!")]}])
    with pytest.raises(DataError, match=r"sft\.jsonl:1: expected one of 'prompt' \+ 'response', 'messages' or "
                                        r"'text', not both 'messages' and 'text'"):
        read_records(path, SFTExample)


# --- extract_prompt against TRL's own (where TRL is installed) ----------------------------------
@pytest.mark.parametrize("chosen, rejected", [
    ("Q: sky? A: blue", "Q: sky? A: green"),
    ("Human: hi Assistant: hello", "Human: hi Assistant: go"),
    ("abc", "abd"),
    ([user("Hi"), assistant("Hello!")], [user("Hi"), assistant("No.")]),
    ([user("Hi"), assistant("a"), user("More"), assistant("b")], [user("Hi"), assistant("a"), user("More"),
                                                                   assistant("c")]),
])
def test_extract_prompt_splits_as_trl_does(chosen, rejected):
    data_utils = pytest.importorskip("trl.data_utils")
    theirs = data_utils.extract_prompt({"chosen": chosen, "rejected": rejected})
    assert extract_prompt(chosen, rejected) == (theirs["prompt"], theirs["chosen"], theirs["rejected"])


# --- text: every token trained, no template ---------------------------------------------------
def test_text_examples_train_on_every_token_and_end_with_eos(smol_tokenizer):
    encoded = encode_sft_example(smol_tokenizer, SFTExample(text="The sky is blue."), max_length=64)
    words = smol_tokenizer("The sky is blue.", add_special_tokens=False)["input_ids"]
    assert encoded.input_ids[-len(words) - 1:] == words + [smol_tokenizer.eos_token_id]
    assert encoded.labels == encoded.input_ids and IGNORE_INDEX not in encoded.labels
    cut = encode_sft_example(smol_tokenizer, SFTExample(text="The sky is blue."), max_length=3)
    assert cut.input_ids == encoded.input_ids[:3]


# --- splits: DatasetDict folders and data files laid out as a hub repo ---------------------------
def test_a_folder_of_hub_data_files_reads_through_load_dataset_with_its_splits(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = tmp_path / "ultrafeedback-snapshot"
    (repo / "data").mkdir(parents=True)
    rows = {"train": [{"prompt": [user("Hi")], "chosen": [assistant("Hello!")], "rejected": [assistant("No.")]}],
            "test": [{"prompt": [user("Bye")], "chosen": [assistant("Goodbye!")], "rejected": [assistant("Go.")]}]}
    for split, split_rows in rows.items():
        pq.write_table(pa.Table.from_pylist(split_rows), repo / "data" / f"{split}-00000-of-00001.parquet")
    assert read_records(repo, PreferencePair) == [PreferencePair(prompt=USER_HI, chosen="Hello!", rejected="No.")]
    assert read_records(repo, PreferencePair, split=Split("test"))[0].chosen == "Goodbye!"


def test_a_hub_id_offline_is_one_clear_error(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub

    # datasets and huggingface_hub read HF_HUB_OFFLINE once, at import: switch their copies off too,
    # or the reader would wait for network timeouts before failing.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"^trl-lib/ultrafeedback_binarized: no such file or folder here, and loading "
                                        r"it as a Hugging Face Hub dataset \(split 'train'\) failed: "):
        read_records("trl-lib/ultrafeedback_binarized", PreferencePair)
    with pytest.raises(DataError, match=r"^pairs\.jsonl: no such file or folder$"):
        read_records("pairs.jsonl", PreferencePair)


# --- writing: TRL's rows, read back equal, templated by TRL as by alignloop ------------------------
RECORDS = [
    PreferencePair(prompt="Name a colour.", chosen="Blue.", rejected="No.", margin=0.5),
    PreferencePair(prompt=[Message(role="system", content="Be kind."), *USER_HI], chosen="Hello!", rejected="Go."),
]


def test_written_rows_are_trls_types_and_read_back_equal(tmp_path):
    from alignloop.data import write_jsonl
    from alignloop.data.trl_formats import as_read_back

    conversational = tmp_path / "conversational.jsonl"
    write_jsonl(conversational, RECORDS, "trl-conversational")
    rows = [json.loads(line) for line in conversational.read_text().splitlines()]
    assert rows[0] == {"prompt": [user("Name a colour.")], "chosen": [assistant("Blue.")],
                       "rejected": [assistant("No.")], "margin": 0.5}
    assert read_records(conversational, PreferencePair) == [as_read_back(r, "trl-conversational") for r in RECORDS]
    assert read_records(conversational, PreferencePair)[1] == RECORDS[1]

    standard = tmp_path / "standard.jsonl"
    write_jsonl(standard, RECORDS[:1], "trl-standard")
    assert json.loads(standard.read_text()) == {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "No.",
                                                "margin": 0.5}
    with pytest.raises(DataError, match="a PreferencePair with a conversation has no trl-standard"):
        write_jsonl(tmp_path / "no.jsonl", RECORDS[1:], "trl-standard")

    sft = tmp_path / "sft.jsonl"
    examples = [SFTExample(prompt="Hi", response="Hello!"), SFTExample(text="Plain text.")]
    write_jsonl(sft, examples, "trl-conversational")
    assert [json.loads(line) for line in sft.read_text().splitlines()] == [
        {"prompt": [user("Hi")], "completion": [assistant("Hello!")]}, {"text": "Plain text."}]
    kto = tmp_path / "kto.jsonl"
    write_jsonl(kto, [BinaryFeedback(prompt="Hi", response="Go.", label=False)], "trl-standard")
    assert json.loads(kto.read_text()) == {"prompt": "Hi", "completion": "Go.", "label": False}


def test_trl_templates_a_written_preference_file_to_the_ids_alignloop_trains_on(tmp_path, smol_tokenizer):
    """The same data.jsonl means the same model in both libraries: TRL's own data utilities
    (loading with datasets, maybe_apply_chat_template) give the token ids alignloop encodes."""
    data_utils = pytest.importorskip("trl.data_utils")
    from datasets import load_dataset

    from alignloop.data import encode_prompt_response, write_jsonl

    path = tmp_path / "data.jsonl"
    write_jsonl(path, RECORDS, "trl-conversational")
    dataset = load_dataset("json", data_files=str(path), split="train")
    assert all(data_utils.is_conversational(row) for row in dataset)
    ids = lambda text: smol_tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    for row, record in zip(dataset, read_records(path, PreferencePair)):
        theirs = data_utils.maybe_apply_chat_template(row, smol_tokenizer)
        for side in ("chosen", "rejected"):
            prompt_ids, response_ids = encode_prompt_response(smol_tokenizer, record.prompt, getattr(record, side))
            assert (ids(theirs["prompt"]), ids(theirs[side])) == (prompt_ids, response_ids)
