"""Dataset fingerprints: stable for the same records, different for any change, format-blind."""

from __future__ import annotations

import csv
import json

from alignloop.data import Message, PreferencePair, PromptOnly, canonical_json, dataset_fingerprint, read_records

PAIRS = [
    PreferencePair(prompt="Name a colour.", chosen="Blue.", rejected="No.", margin=1.0),
    PreferencePair(prompt=[Message(role="user", content="Hi")], chosen="Hello!", rejected="Go away."),
]


def test_canonical_json_is_sorted_compact_and_typed():
    assert canonical_json(PromptOnly(prompt="Hi")) == '{"fields":{"prompt":"Hi"},"type":"PromptOnly"}'
    assert canonical_json(PAIRS[1]) == (
        '{"fields":{"chosen":"Hello!","margin":null,"prompt":[{"content":"Hi","role":"user"}],'
        '"rejected":"Go away.","weight":null},"type":"PreferencePair"}'
    )


def test_same_records_same_hash_and_a_known_value():
    rebuilt = [PreferencePair.model_validate(p.model_dump()) for p in PAIRS]
    assert dataset_fingerprint(rebuilt) == dataset_fingerprint(PAIRS)
    # sha256 of the canonical line of PromptOnly(prompt="Hi") plus "\n", computed independently:
    # printf '%s\n' '{"fields":{"prompt":"Hi"},"type":"PromptOnly"}' | sha256sum
    assert dataset_fingerprint([PromptOnly(prompt="Hi")]) == (
        "86e784a44608bb4a81f7658fe65e4dfaee53957c6f873bffd713407fc5ffc1c1"
    )


def test_any_change_changes_the_hash():
    base = dataset_fingerprint(PAIRS)
    assert dataset_fingerprint([PAIRS[0].model_copy(update={"chosen": "Blue!"}), PAIRS[1]]) != base
    assert dataset_fingerprint([PAIRS[0].model_copy(update={"margin": None}), PAIRS[1]]) != base
    assert dataset_fingerprint([PAIRS[0].model_copy(update={"weight": 0.5}), PAIRS[1]]) != base
    assert dataset_fingerprint(list(reversed(PAIRS))) != base
    assert dataset_fingerprint(PAIRS[:1]) != base
    assert dataset_fingerprint([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_the_file_format_does_not_matter(tmp_path):
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("\n".join(p.model_dump_json() for p in PAIRS))
    table = tmp_path / "pairs.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "chosen", "rejected", "margin"])
        writer.writerow(["Name a colour.", "Blue.", "No.", "1"])  # "1" reads as the float 1.0
        writer.writerow([json.dumps([{"role": "user", "content": "Hi"}]), "Hello!", "Go away.", ""])
    expected = dataset_fingerprint(PAIRS)
    assert dataset_fingerprint(read_records(jsonl, PreferencePair)) == expected
    assert dataset_fingerprint(read_records(table, PreferencePair)) == expected
