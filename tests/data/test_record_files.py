"""Reading every file format, and errors that name the file, the line / row and the field."""

from __future__ import annotations

import csv
import gzip
import json

import pytest

from alignloop.data import (
    DataError,
    Message,
    PreferencePair,
    Ranking,
    Rating,
    SFTExample,
    Split,
    detect_format,
    read_records,
    write_jsonl,
)

PAIRS = [
    {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "No."},
    {"prompt": [{"role": "user", "content": "Hi"}], "chosen": "Hello!", "rejected": "Go away.", "margin": 1.5},
]
EXPECTED_PAIRS = [
    PreferencePair(prompt="Name a colour.", chosen="Blue.", rejected="No."),
    PreferencePair(prompt=[Message(role="user", content="Hi")], chosen="Hello!", rejected="Go away.", margin=1.5),
]


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- JSONL ----------------------------------------------------------------------------------


def test_jsonl_skips_blank_lines(tmp_path):
    path = write_lines(tmp_path / "pairs.jsonl", [json.dumps(PAIRS[0]), "", "   ", json.dumps(PAIRS[1])])
    assert read_records(path, PreferencePair) == EXPECTED_PAIRS


def test_gzipped_jsonl_and_schema_by_name(tmp_path):
    path = tmp_path / "pairs.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(json.dumps(p) for p in PAIRS))
    assert read_records(path, "preference") == EXPECTED_PAIRS


def test_jsonl_error_names_file_physical_line_and_field(tmp_path):
    lines = [json.dumps(PAIRS[0]), "", json.dumps({"prompt": "p", "chosen": None, "rejected": "r"})]
    path = write_lines(tmp_path / "pairs.jsonl", lines)
    with pytest.raises(DataError) as caught:
        read_records(path, PreferencePair)
    # Line 3: the blank line 2 is skipped but still counted, as an editor counts it.
    assert f"{path}:3: field 'chosen': expected a non-empty string, got null" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_malformed_json_line_and_non_object_line(tmp_path):
    lines = [json.dumps(PAIRS[0]), '{"prompt": "p", "chosen": "a" "rejected": "b"}', "[1, 2]"]
    path = write_lines(tmp_path / "pairs.jsonl", lines)
    with pytest.raises(DataError) as caught:
        read_records(path, PreferencePair)
    message = str(caught.value)
    assert f"{path}:2: not valid JSON: Expecting ',' delimiter (column 31)" in message
    assert f"{path}:3: expected a JSON object (one record), got an array" in message


def test_several_errors_are_reported_at_once_and_the_rest_counted(tmp_path):
    bad = json.dumps({"prompt": "p", "chosen": "", "rejected": "r"})
    path = write_lines(tmp_path / "pairs.jsonl", [bad] * 13)
    with pytest.raises(DataError) as caught:
        read_records(path, PreferencePair)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{path}: not a valid PreferencePair dataset:"
    assert lines[1].startswith(f"{path}:1: field 'chosen'")
    assert lines[10].startswith(f"{path}:10: field 'chosen'")
    assert lines[11] == "... and 3 more errors"


def test_empty_file_and_missing_path(tmp_path):
    empty = write_lines(tmp_path / "empty.jsonl", [""])
    with pytest.raises(DataError, match=r"empty\.jsonl: no records \(the file is empty\)"):
        read_records(empty, PreferencePair)
    with pytest.raises(DataError, match=r"nowhere\.jsonl: no such file or folder"):
        read_records(tmp_path / "nowhere.jsonl", PreferencePair)


def test_defaults_supply_the_rating_scale(tmp_path):
    rows = [{"prompt": "p", "response": "r", "score": 6}, {"prompt": "p", "response": "s", "score": 2, "scale_max": 10}]
    path = write_lines(tmp_path / "ratings.jsonl", [json.dumps(r) for r in rows])
    ratings = read_records(path, Rating, defaults={"scale_min": 1, "scale_max": 7, "axis": "harmless"})
    assert [(r.score, r.scale_min, r.scale_max) for r in ratings] == [(6, 1, 7), (2, 1, 10)]
    assert {r.axis for r in ratings} == {"harmless"}
    with pytest.raises(DataError, match=r"ratings\.jsonl:1: field 'score': expected a number between 1 and 5, got 6"):
        read_records(path, Rating, defaults={"scale_min": 1, "scale_max": 5})


# --- JSON -----------------------------------------------------------------------------------


def test_json_array(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(PAIRS, indent=2))
    assert read_records(path, PreferencePair) == EXPECTED_PAIRS


def test_json_errors_name_the_item(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([PAIRS[0], {"prompt": "p", "chosen": "a"}]))
    with pytest.raises(DataError, match=r"pairs\.json: item 1: field 'rejected': missing required field"):
        read_records(path, PreferencePair)
    path.write_text(json.dumps({"records": PAIRS}))
    with pytest.raises(DataError, match=r"pairs\.json: expected a top-level JSON array of records, got an object"):
        read_records(path, PreferencePair)
    path.write_text('[\n  {"prompt": "p",\n  }\n]')
    with pytest.raises(DataError, match=r"pairs\.json:3: not valid JSON"):
        read_records(path, PreferencePair)


# --- CSV ------------------------------------------------------------------------------------


def write_csv(path, header, rows):
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_csv_with_json_cells_empty_optional_cells_and_text_starting_with_a_bracket(tmp_path):
    conversation = json.dumps([{"role": "user", "content": "Hi"}])
    path = write_csv(
        tmp_path / "pairs.csv",
        ["prompt", "chosen", "rejected", "margin"],
        [["Name a colour.", "Blue.", "No.", ""], [conversation, "Hello!", "Go away.", "1.5"],
         ["[citation needed] means?", '["a", "b"]', "No.", ""]],
    )
    records = read_records(path, PreferencePair)
    assert records[:2] == EXPECTED_PAIRS
    # A text-only field keeps JSON-looking text as text; a prompt that is not JSON stays text.
    assert (records[2].prompt, records[2].chosen) == ("[citation needed] means?", '["a", "b"]')


def test_csv_ranking_lists(tmp_path):
    path = write_csv(tmp_path / "ranks.csv", ["prompt", "responses", "ranks"], [["p", '["a", "b", "c"]', "[1, 1, 2]"]])
    assert read_records(path, Ranking) == [Ranking(prompt="p", responses=["a", "b", "c"], ranks=[1, 1, 2])]


def test_csv_error_names_the_physical_line_of_the_row(tmp_path):
    # The first row's chosen text spans three physical lines, so the bad row starts on line 5.
    path = write_csv(
        tmp_path / "pairs.csv", ["prompt", "chosen", "rejected"],
        [["Write a poem.", "Roses\nare\nred", "No."], ["Hi", "", "Go away."]],
    )
    with pytest.raises(DataError) as caught:
        read_records(path, PreferencePair)
    assert f"{path}:5: field 'chosen': expected a non-empty string, got \"\"" in str(caught.value)


def test_csv_sft_rows_in_either_form(tmp_path):
    # An SFT file may mix forms: the unused columns of a row are left empty, i.e. absent.
    messages = json.dumps([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
    path = write_csv(
        tmp_path / "sft.csv",
        ["prompt", "response", "messages"],
        [["Hi", "Hello", ""], ["", "", messages], ["Yo", "", ""]],
    )
    with pytest.raises(DataError) as caught:
        read_records(path, SFTExample)
    assert str(caught.value).splitlines()[1:] == [f"{path}:4: field 'response': missing required field"]
    path.write_text("\n".join(path.read_text().splitlines()[:3]) + "\n")
    first, second = read_records(path, SFTExample)
    assert first.prompt_and_response() == ("Hi", "Hello")
    assert second.prompt_and_response() == ([Message(role="user", content="Hi")], "Hello")


def test_csv_row_with_the_wrong_number_of_cells(tmp_path):
    path = tmp_path / "sft.csv"
    path.write_text("prompt,response\nHi,Hello\nHi,Hello,extra\n")
    with pytest.raises(DataError, match=r"sft\.csv:3: expected 2 cells \(one per column\), got 3"):
        read_records(path, SFTExample)


# --- Parquet and datasets folders -----------------------------------------------------------


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "sft.parquet"
    rows = [{"prompt": "Hi", "response": "Hello"}, {"prompt": "Yo", "response": None}]
    pq.write_table(pa.Table.from_pylist(rows), path)
    expected = r"sft\.parquet: row 1: field 'response': expected a non-empty string, got null"
    with pytest.raises(DataError, match=expected):
        read_records(path, SFTExample)
    pq.write_table(pa.Table.from_pylist([{"prompt": "Hi", "response": "Hello"}]), path)
    assert read_records(path, SFTExample) == [SFTExample(prompt="Hi", response="Hello")]


def test_datasets_folder(tmp_path):
    from datasets import Dataset, DatasetDict

    # Arrow columns hold one type, so both prompts are conversations here; and every row has
    # every column (from_list takes them from the first row), so margin is null there: absent.
    rows = [{**PAIRS[0], "prompt": PAIRS[1]["prompt"], "margin": None}, PAIRS[1]]
    folder = tmp_path / "pairs_ds"
    Dataset.from_list(rows).save_to_disk(str(folder))
    assert detect_format(folder) == "datasets"
    expected = [EXPECTED_PAIRS[0].model_copy(update={"prompt": EXPECTED_PAIRS[1].prompt}), EXPECTED_PAIRS[1]]
    assert read_records(folder, PreferencePair) == expected

    bad = tmp_path / "bad_ds"
    Dataset.from_list([PAIRS[0], {**PAIRS[0], "chosen": "  "}]).save_to_disk(str(bad))
    with pytest.raises(DataError, match=r"bad_ds: row 1: field 'chosen': expected a non-empty string"):
        read_records(bad, PreferencePair)

    splits = tmp_path / "splits_ds"
    DatasetDict({"train": Dataset.from_list(rows), "test": Dataset.from_list(rows[1:])}).save_to_disk(str(splits))
    assert read_records(splits, PreferencePair) == expected  # the train split by default
    assert read_records(splits, PreferencePair, split=Split("test")) == expected[1:]
    with pytest.raises(DataError, match=r"splits_ds: a DatasetDict without a split 'validation'; its splits: "
                                        r"train, test"):
        read_records(splits, PreferencePair, split=Split("validation"))
    assert read_records(splits / "train", PreferencePair) == expected  # one split's own folder


# --- format detection and writing -----------------------------------------------------------


def test_format_detection(tmp_path):
    for name, expected in [("a.jsonl", "jsonl"), ("a.JSONL.gz", "jsonl"), ("a.json", "json"),
                           ("a.csv", "csv"), ("a.parquet", "parquet")]:
        (tmp_path / name).write_text("")
        assert detect_format(tmp_path / name) == expected
    (tmp_path / "a.txt").write_text("")
    with pytest.raises(DataError, match=r"a\.txt: cannot tell the format"):
        detect_format(tmp_path / "a.txt")
    (tmp_path / "plain_folder").mkdir()  # maybe data files of a hub repo: load_dataset decides
    assert detect_format(tmp_path / "plain_folder") == "hub"
    with pytest.raises(DataError, match=r"plain_folder: a folder, but neither a datasets folder \(save_to_disk\) "
                                        r"nor data files that load_dataset reads \(split 'train'\) failed"):
        read_records(tmp_path / "plain_folder", PreferencePair)


def test_unreadable_bytes_and_a_folder_given_as_a_file(tmp_path):
    latin1 = tmp_path / "pairs.jsonl"
    latin1.write_bytes('{"prompt": "caf\u00e9"}'.encode("latin-1"))
    with pytest.raises(DataError, match=r"pairs\.jsonl: not readable as jsonl text"):
        read_records(latin1, PreferencePair)
    fake_gzip = tmp_path / "pairs.jsonl.gz"
    fake_gzip.write_text("plain text")
    with pytest.raises(DataError, match=r"pairs\.jsonl\.gz: not readable as jsonl text"):
        read_records(fake_gzip, PreferencePair)
    with pytest.raises(DataError, match="format 'jsonl' expects a file"):
        read_records(tmp_path, PreferencePair, format="jsonl")


def test_explicit_format_overrides_the_suffix(tmp_path):
    path = write_lines(tmp_path / "pairs.txt", [json.dumps(p) for p in PAIRS])
    assert read_records(path, PreferencePair, format="jsonl") == EXPECTED_PAIRS
    with pytest.raises(DataError, match="unknown format 'yaml'"):
        read_records(path, PreferencePair, format="yaml")


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_write_jsonl_round_trips_and_leaves_out_absent_fields(tmp_path, name):
    path = tmp_path / "nested" / name
    assert write_jsonl(path, EXPECTED_PAIRS) == 2
    assert read_records(path, PreferencePair) == EXPECTED_PAIRS
    if name.endswith(".jsonl"):
        assert "margin" not in path.read_text().splitlines()[0]
