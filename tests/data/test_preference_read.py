"""Reading preference data: skip mode and its reasons, dataset-level checks, kinds, splits, HH-RLHF."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignloop.config import ConfigError, Section, load_config
from alignloop.data import (
    DataError,
    Message,
    PreferenceDataConfig,
    PreferencePair,
    Ranking,
    Rating,
    check_pair,
    check_ranking,
    dataset_fingerprint,
    preference_fingerprint,
    read_preference_data,
    read_records,
    read_records_report,
)

REAL_HH = Path("/work/shared/data/hh-rlhf-harmless/pairs.jsonl.gz")


def write_rows(path: Path, rows: list) -> Path:
    """One line per row: dicts and lists as JSON, strings as they are (to write broken lines)."""
    path.write_text("\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows) + "\n")
    return path


def pair(prompt: str, chosen: str = "a", rejected: str = "b", **extra) -> dict:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra}


def rating(prompt: str, response: str, score: float, **extra) -> dict:
    return {"prompt": prompt, "response": response, "score": score, **extra}


# --- skip mode: every reason, counted once per row ------------------------------------------

BAD_PAIRS = [
    pair("p1"),                                        # 1 valid
    "{not json",                                       # 2 malformed_json
    pair("p", chosen=""),                              # 3 empty_response
    {"prompt": "p", "rejected": "b"},                  # 4 missing_field
    pair("p", chosen=3),                               # 5 wrong_type
    [1, 2],                                            # 6 not_an_object
    pair("p", chosen=" same ", rejected="same"),       # 7 identical_responses (after strip)
    pair(""),                                          # 8 empty_prompt
    pair("p", margin=True),                            # 9 wrong_type
    pair("p", chosen=None, rejected=""),               # 10 two problems, counted once (missing_field)
    pair("p10"),                                       # 11 valid
]


def test_skip_mode_counts_each_bad_row_once_under_its_first_reason(tmp_path):
    path = write_rows(tmp_path / "pairs.jsonl", BAD_PAIRS)
    records, report = read_records_report(path, PreferencePair, on_invalid="skip", convert=check_pair)
    assert [r.prompt for r in records] == ["p1", "p10"]
    assert report.kept == 2
    assert report.skipped == {
        "empty_prompt": 1, "empty_response": 1, "identical_responses": 1, "malformed_json": 1,
        "missing_field": 2, "not_an_object": 1, "wrong_type": 2,
    }
    assert report.total_skipped == 9
    assert report.examples == [
        f"{path}:2: not valid JSON: Expecting property name enclosed in double quotes (column 2)",
        f"{path}:3: field 'chosen': expected a non-empty string, got \"\"",
        f"{path}:4: field 'chosen': missing required field",
        f"{path}:5: field 'chosen': expected a non-empty string, got 3",
        f"{path}:6: expected a JSON object (one record), got an array",
    ]
    assert str(report).startswith("2 kept, 9 skipped (empty_prompt: 1, ")


def test_error_mode_is_read_records_and_names_dataset_check_failures(tmp_path):
    path = write_rows(tmp_path / "pairs.jsonl", BAD_PAIRS)
    with pytest.raises(DataError) as caught:
        read_records_report(path, PreferencePair, convert=check_pair)
    message = str(caught.value)
    assert message.startswith(f"{path}: not a valid PreferencePair dataset:\n{path}:2: not valid JSON")
    assert f"{path}:7: identical_responses: field 'rejected': the same text as 'chosen'" in message
    with pytest.raises(DataError) as plain:
        read_records(path, PreferencePair)
    # read_records has no dataset checks, so line 7 is fine there; everything else is the same.
    assert plain.value.args[0] == message.replace(
        f"\n{path}:7: identical_responses: field 'rejected': the same text as 'chosen'", ""
    )
    good = write_rows(tmp_path / "good.jsonl", [pair("x")])
    assert read_records_report(good, "preference")[0] == read_records(good, "preference")


def test_ratings_outside_the_scale_and_scale_defaults(tmp_path):
    path = write_rows(tmp_path / "ratings.jsonl", [
        rating("p", "r", 9, scale_min=1, scale_max=5),     # score_outside_scale
        rating("p", "r", 4),                               # no scale: missing_field without defaults
        rating("p", "r", 7, scale_min=0, scale_max=10),    # its own scale wins over the defaults
        '{"prompt": "p", "response": "r", "score": NaN}',  # Python's json reads NaN: not_finite
    ])
    _, report = read_records_report(path, Rating, on_invalid="skip")
    assert report.skipped == {"missing_field": 1, "not_finite": 1, "score_outside_scale": 1}
    records, report = read_records_report(path, Rating, on_invalid="skip", defaults={"scale_min": 1, "scale_max": 5})
    assert [(r.score, r.scale_min, r.scale_max) for r in records] == [(4, 1, 5), (7, 0, 10)]
    assert report.skipped == {"not_finite": 1, "score_outside_scale": 1}
    assert report.examples[0] == f"{path}:1: field 'score': expected a number between 1 and 5, got 9.0"


@pytest.mark.parametrize(
    ("ranking", "reason"),
    [
        ({"responses": ["a", " a", "b"]}, "duplicate_responses"),
        ({"responses": ["a", "b"], "ranks": [1, 3]}, "invalid_ranks"),       # a gap
        ({"responses": ["a", "b"], "ranks": [2, 3]}, "invalid_ranks"),       # not from 1
        ({"responses": ["a", "b", "c"], "ranks": [1, 2, 4]}, "invalid_ranks"),
        ({"responses": ["a", "b"], "ranks": [1]}, "invalid_ranks"),          # one rank missing (schema)
        ({"responses": ["a", "b"], "ranks": [2, 1]}, "invalid_ranks"),       # not best first (schema)
        ({"responses": ["a"]}, "too_few_responses"),
        ({"responses": ["a", ""]}, "empty_response"),
    ],
)
def test_bad_rankings(tmp_path, ranking, reason):
    path = write_rows(tmp_path / "rankings.jsonl", [{"prompt": "p", **ranking}])
    _, report = read_records_report(path, Ranking, on_invalid="skip", convert=check_ranking)
    assert report.skipped == {reason: 1}


@pytest.mark.parametrize("ranks", [None, [1, 2, 3], [1, 1, 3], [1, 1, 2], [1, 1, 1]])
def test_rankings_without_gaps_pass(ranks):
    ranking = Ranking(prompt="p", responses=["a", "b", "c"], ranks=ranks)
    assert check_ranking(ranking) is ranking


# --- the config -----------------------------------------------------------------------------


class Recipe(Section):
    data: PreferenceDataConfig


def test_config_defaults_help_and_one_path_as_a_list():
    config = PreferenceDataConfig(train="pairs.jsonl")
    assert (config.train, config.eval, config.eval_every_nth) == ([Path("pairs.jsonl")], [], None)
    assert (config.format, config.kind, config.hh_rlhf, config.on_invalid) == ("auto", "auto", False, "skip")
    assert (config.max_length, config.max_prompt_length, config.use_chat_template) == (512, None, True)
    assert config.rating_defaults() is None
    for name, field in PreferenceDataConfig.model_fields.items():
        assert field.description and "\n" not in field.description, name


def test_config_errors_name_the_key(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data:\n  train: [a.jsonl, b.jsonl]\n  rating_scale_min: 1\n  rating_scale_max: 5\n")
    config = load_config(Recipe, recipe).data
    assert config.train == [Path("a.jsonl"), Path("b.jsonl")]
    assert config.rating_defaults() == {"scale_min": 1, "scale_max": 5}
    bad = {
        "data.kind=triples": "data.kind",
        "data.eval_every_nth=1": "data.eval_every_nth",
        "data.eval=e.jsonl": "either eval .* or eval_every_nth",
        "data.rating_scale_max=null": "both rating_scale_min and rating_scale_max",
        "data.max_prompt_length=600": "max_prompt_length must be below max_length",
        "data.max_lenght=5": "unknown key 'data.max_lenght'",
    }
    for override, match in bad.items():
        with pytest.raises(ConfigError, match=match):
            load_config(Recipe, recipe, overrides=["data.eval_every_nth=5", override])
    with pytest.raises(ConfigError, match="hh_rlhf files hold pairs"):
        load_config(Recipe, overrides=["data.train=a.jsonl", "data.hh_rlhf=true", "data.kind=ratings"])


# --- kinds ----------------------------------------------------------------------------------


def test_auto_kind_per_file(tmp_path):
    files = [
        write_rows(tmp_path / "pairs.jsonl", ["{broken", pair("p0", margin=1.5, score=3), pair("p1")]),
        write_rows(tmp_path / "rankings.jsonl", [{"prompt": "q", "responses": ["x", "y"]}]),
        write_rows(tmp_path / "ratings.jsonl", [rating("r", "z", 2, scale_min=1, scale_max=5)]),
        write_rows(tmp_path / "binary.jsonl", [{"prompt": "b", "response": "w", "label": False}]),
    ]
    data = read_preference_data(PreferenceDataConfig(train=files))
    assert data.train.counts() == {"pairs": 2, "rankings": 1, "ratings": 1, "binary": 1}
    assert len(data.train) == 5 and len(data.eval) == 0
    assert data.train.pairs[0] == PreferencePair(prompt="p0", chosen="a", rejected="b", margin=1.5)
    assert data.report.kinds == {str(f): kind for f, kind in zip(files, ["pairs", "rankings", "ratings", "binary"])}
    assert data.report.skipped == {"malformed_json": 1}
    assert str(data.report).splitlines()[0] == f"{files[0]} (pairs): 2 kept, 1 skipped (malformed_json: 1)"


def test_a_file_mixing_kinds_is_an_error_even_in_skip_mode(tmp_path):
    rows = [pair("p"), {"prompt": "only"}, {"prompt": "q", "responses": ["x", "y"]}]
    path = write_rows(tmp_path / "mixed.jsonl", rows)
    expected = rf"{path}:3: a record of kind 'rankings' in a file of 'pairs' \(decided at {path}:1\)"
    with pytest.raises(DataError, match=expected):
        read_preference_data(PreferenceDataConfig(train=path))


def test_no_kind_to_detect_or_no_valid_record(tmp_path):
    path = write_rows(tmp_path / "prompts.jsonl", [{"prompt": "x"}])
    with pytest.raises(DataError, match=f"{path}: no row shows which kind .* set kind"):
        read_preference_data(PreferenceDataConfig(train=path))
    pairs = write_rows(tmp_path / "pairs.jsonl", [pair("p")])
    with pytest.raises(DataError, match=r"no valid binary records \(0 kept, 1 skipped \(missing_field: 1\)\)"):
        read_preference_data(PreferenceDataConfig(train=pairs, kind="binary"))


def test_error_mode_through_the_config(tmp_path):
    path = write_rows(tmp_path / "pairs.jsonl", [pair("p"), pair("q", chosen="same", rejected="same")])
    assert len(read_preference_data(PreferenceDataConfig(train=path)).train.pairs) == 1
    with pytest.raises(DataError, match=f"{path}:2: identical_responses"):
        read_preference_data(PreferenceDataConfig(train=path, on_invalid="error"))


# --- eval split and fingerprint -------------------------------------------------------------


def test_eval_every_nth_holds_out_per_file_over_valid_records(tmp_path):
    rows = [pair(f"p{i}") for i in range(10)]
    rows.insert(3, pair("bad", chosen=""))  # skipped, so it does not shift the split
    pairs = write_rows(tmp_path / "pairs.jsonl", rows)
    thumbs = [{"prompt": f"b{i}", "response": "r", "label": True} for i in range(6)]
    binary = write_rows(tmp_path / "binary.jsonl", thumbs)
    data = read_preference_data(PreferenceDataConfig(train=[pairs, binary], eval_every_nth=5))
    assert [p.prompt for p in data.eval.pairs] == ["p4", "p9"]
    assert [b.prompt for b in data.eval.binary] == ["b4"]
    assert [p.prompt for p in data.train.pairs] == ["p0", "p1", "p2", "p3", "p5", "p6", "p7", "p8"]
    assert len(data.train.binary) == 5
    separate = read_preference_data(PreferenceDataConfig(train=binary, eval=pairs))
    assert (separate.train.counts()["binary"], separate.eval.counts()["pairs"]) == (6, 10)


def test_fingerprint_covers_every_train_record_in_kind_order(tmp_path):
    pairs = write_rows(tmp_path / "pairs.jsonl", [pair("p")])
    ratings = write_rows(tmp_path / "ratings.jsonl", [rating("r", "z", 2, scale_min=1, scale_max=5)])
    data = read_preference_data(PreferenceDataConfig(train=[ratings, pairs]))
    assert preference_fingerprint(data.train) == dataset_fingerprint(data.train.pairs + data.train.ratings)
    write_rows(ratings, [rating("r", "z", 3, scale_min=1, scale_max=5)])
    assert preference_fingerprint(read_preference_data(PreferenceDataConfig(train=[ratings, pairs])).train) != (
        preference_fingerprint(data.train)
    )


# --- HH-RLHF --------------------------------------------------------------------------------


def hh(chosen: str, rejected: str) -> dict:
    return {"chosen": chosen, "rejected": rejected}


HH_ROWS = [
    hh("\n\nHuman: Hi\n\nAssistant: Hello!", "\n\nHuman: Hi\n\nAssistant: Go away."),   # 1 kept
    hh("\n\nHuman: Hi\n\nAssistant:", "\n\nHuman: Hi\n\nAssistant: No."),               # 2 empty_response
    hh("\n\nHuman: A\n\nAssistant: x", "\n\nHuman: B\n\nAssistant: y"),                 # 3 diverges_before_last_turn
    hh("\n\nHuman: Hi\n\nAssistant: Same", "\n\nHuman: Hi\n\nAssistant: Same"),         # 4 identical_responses
    hh("hello", "\n\nHuman: Hi\n\nAssistant: x"),                                        # 5 unparseable_dialogue
    {"chosen": "\n\nHuman: Hi\n\nAssistant: x"},                                          # 6 missing_field
    "not json",                                                                           # 7 malformed_json
    hh("\n\nHuman: Hi\n\nAssistant: Hey\n\nHuman: Colour?\n\nAssistant: Blue.",
       "\n\nHuman: Hi\n\nAssistant: Hey\n\nHuman: Colour?\n\nAssistant: Loud."),        # 8 kept
]


def test_hh_rlhf_conversion_through_the_config(tmp_path):
    path = write_rows(tmp_path / "hh.jsonl", HH_ROWS)
    data = read_preference_data(PreferenceDataConfig(train=path, hh_rlhf=True))
    assert data.train.pairs == [
        PreferencePair(prompt=[Message(role="user", content="Hi")], chosen="Hello!", rejected="Go away."),
        PreferencePair(
            prompt=[Message(role="user", content="Hi"), Message(role="assistant", content="Hey"),
                    Message(role="user", content="Colour?")],
            chosen="Blue.", rejected="Loud.",
        ),
    ]
    assert data.report.skipped == {
        "diverges_before_last_turn": 1, "empty_response": 1, "identical_responses": 1, "malformed_json": 1,
        "missing_field": 1, "unparseable_dialogue": 1,
    }
    assert data.report.kinds == {str(path): "pairs"}
    with pytest.raises(DataError, match=f"{path}:2: empty_response: the chosen transcript ends"):
        read_preference_data(PreferenceDataConfig(train=path, hh_rlhf=True, on_invalid="error"))


@pytest.mark.skipif(not REAL_HH.is_file(), reason="the shared HH-RLHF harmless file is not present")
def test_real_hh_rlhf_harmless_counts():
    data = read_preference_data(PreferenceDataConfig(train=REAL_HH, hh_rlhf=True, eval_every_nth=5))
    assert data.report.files[str(REAL_HH)].kept == 1794
    assert data.report.skipped == {"diverges_before_last_turn": 2, "empty_response": 4}
    assert (len(data.train.pairs), len(data.eval.pairs)) == (1436, 358)
