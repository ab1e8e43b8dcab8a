"""HH-RLHF transcripts into preference pairs, with counted skips; and deterministic splits."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from alignloop.data import (
    HHSkip,
    Message,
    PreferencePair,
    convert_hh_file,
    hh_pair_to_preference,
    parse_hh_dialogue,
    read_records,
    split_by_fraction,
    split_every_nth,
)

SHARED_HH_FILE = Path(__file__).resolve().parents[3] / "shared" / "data" / "hh-rlhf-harmless" / "pairs.jsonl.gz"

PREFIX = "\n\nHuman: How do I pick a lock?\n\nAssistant: Why do you ask?\n\nHuman: I locked myself out."


def test_parse_dialogue_into_messages():
    assert parse_hh_dialogue(PREFIX + "\n\nAssistant:  Call a locksmith. ") == [
        Message(role="user", content="How do I pick a lock?"),
        Message(role="assistant", content="Why do you ask?"),
        Message(role="user", content="I locked myself out."),
        Message(role="assistant", content="Call a locksmith."),
    ]


def test_a_speaker_tag_inside_a_paragraph_is_text():
    messages = parse_hh_dialogue("\n\nHuman: Say hi.\n\nAssistant: Sure. Human: hi")
    assert messages[-1] == Message(role="assistant", content="Sure. Human: hi")


@pytest.mark.parametrize("text", ["Human: no leading blank line", "\n\nSomebody: hi", "preamble\n\nHuman: hi"])
def test_unparseable_dialogue_is_a_skip(text):
    with pytest.raises(HHSkip) as caught:
        parse_hh_dialogue(text)
    assert caught.value.reason == "unparseable_dialogue"


def test_pair_shares_the_conversation_up_to_the_final_user_turn():
    pair = hh_pair_to_preference(PREFIX + "\n\nAssistant: Call a locksmith.", PREFIX + "\n\nAssistant: Use a hairpin.")
    assert pair == PreferencePair(
        prompt=[
            Message(role="user", content="How do I pick a lock?"),
            Message(role="assistant", content="Why do you ask?"),
            Message(role="user", content="I locked myself out."),
        ],
        chosen="Call a locksmith.",
        rejected="Use a hairpin.",
    )


@pytest.mark.parametrize(
    ("chosen", "rejected", "reason"),
    [
        (PREFIX + "\n\nAssistant: Same.", PREFIX + "\n\nAssistant:  Same.", "identical_responses"),
        (PREFIX + "\n\nAssistant: ", PREFIX + "\n\nAssistant: Use a hairpin.", "empty_response"),
        (PREFIX + "\n\nAssistant: Ok.", PREFIX.replace("Why do you ask?", "Why?") + "\n\nAssistant: No.",
         "diverges_before_last_turn"),
        (PREFIX + "\n\nAssistant: Ok.", PREFIX + "\n\nAssistant: Ok.\n\nHuman: And?\n\nAssistant: No.",
         "diverges_before_last_turn"),
        (PREFIX, PREFIX + "\n\nAssistant: No.", "no_final_assistant_turn"),
        ("\n\nAssistant: Hi.\n\nAssistant: A", "\n\nAssistant: Hi.\n\nAssistant: B", "no_user_turn_before_response"),
    ],
)
def test_quirky_pairs_are_skipped_with_a_reason(chosen, rejected, reason):
    with pytest.raises(HHSkip) as caught:
        hh_pair_to_preference(chosen, rejected)
    assert caught.value.reason == reason


def test_convert_file_counts_written_and_skipped(tmp_path):
    lines = [
        {"chosen": PREFIX + "\n\nAssistant: Call a locksmith.", "rejected": PREFIX + "\n\nAssistant: Use a hairpin."},
        {"chosen": PREFIX + "\n\nAssistant: Same.", "rejected": PREFIX + "\n\nAssistant: Same."},
        {"chosen": "no transcript here", "rejected": PREFIX + "\n\nAssistant: x"},
        {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."},
        {"only": "one key"},
    ]
    source = tmp_path / "hh.jsonl.gz"
    with gzip.open(source, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(json.dumps(line) for line in lines) + "\n\nnot json\n")
    report = convert_hh_file(source, tmp_path / "out" / "pairs.jsonl")
    assert report.written == 2
    assert report.skipped == {"identical_responses": 1, "unparseable_dialogue": 1, "unreadable_line": 2}
    assert report.read == 6
    pairs = read_records(tmp_path / "out" / "pairs.jsonl", PreferencePair)
    assert [p.chosen for p in pairs] == ["Call a locksmith.", "Hello!"]
    assert pairs[1].prompt == [Message(role="user", content="Hi")]
    # TRL's conversational preference rows: messages with roles on every side
    row = json.loads((tmp_path / "out" / "pairs.jsonl").read_text().splitlines()[1])
    assert row == {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello!"}],
                   "rejected": [{"role": "assistant", "content": "Go away."}]}

    # trl-standard: strings; a dialogue with earlier turns has no string prompt and is counted
    standard = convert_hh_file(source, tmp_path / "standard.jsonl", style="trl-standard")
    rows = [json.loads(line) for line in (tmp_path / "standard.jsonl").read_text().splitlines()]
    assert rows == [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}]
    assert standard.written == 1 and standard.skipped["conversation"] == 1  # PREFIX has two human turns


@pytest.mark.skipif(not SHARED_HH_FILE.exists(), reason="the shared HH-RLHF file is not beside this checkout")
def test_convert_the_real_hh_rlhf_harmless_file(tmp_path):
    report = convert_hh_file(SHARED_HH_FILE, tmp_path / "pairs.jsonl")
    assert report.written == 1794
    assert report.skipped == {"diverges_before_last_turn": 2, "empty_response": 4}
    pairs = read_records(tmp_path / "pairs.jsonl", PreferencePair)
    assert pairs[0].prompt[0] == Message(role="user", content="what are some pranks with a pen i can do?")
    assert pairs[0].chosen.startswith("No, sorry!")
    assert all(p.prompt[-1].role == "user" and p.chosen != p.rejected for p in pairs)
    train, held_out = split_every_nth(pairs, 5)
    assert (len(train), len(held_out)) == (1436, 358)


def test_split_every_nth_holds_out_the_nth_records():
    train, held_out = split_every_nth(list(range(12)), n=5)
    assert held_out == [4, 9]
    assert train == [0, 1, 2, 3, 5, 6, 7, 8, 10, 11]
    with pytest.raises(ValueError):
        split_every_nth([1, 2], n=1)


def test_split_by_fraction_is_even_and_matches_every_nth():
    records = list(range(100))
    assert split_by_fraction(records, 0.2) == split_every_nth(records, 5)
    train, held_out = split_by_fraction(list(range(10)), 0.3)
    assert held_out == [3, 6, 9]
    # 0.29 * 100 is 28.999... in floats; the split must still hold out exactly 29 of 100.
    assert len(split_by_fraction(records, 0.29)[1]) == 29
    assert split_by_fraction(records, 0.0) == (records, [])
