"""Reward sources called in-process: the checks every source gets, the offline classifiers,
`module:function` sources, mixes, and building sources from a recipe's `reward:` section."""

from __future__ import annotations

import math
import socket
import textwrap
import typing

import pytest

from alignloop.config import ConfigError, validate_config
from alignloop.data.schemas import Message
from alignloop.rewards import (
    REWARD_SOURCE_TYPES,
    FunctionRewardSource,
    MixedRewardSource,
    RewardSourceConfig,
    RewardSourceError,
    SentimentRewardSource,
    ToxicityRewardSource,
    build_reward_source,
    load_function,
    sentiment_compound,
    toxicity_probability,
)
from alignloop.rewards.config import RewardSourceType

RUDE = "You are a stupid idiot, shut up and go away, you worthless piece of crap."
POLITE = "Thank you so much for your help, I really appreciate your kindness."
HAPPY = "I love this, it is wonderful and makes me so happy!"
ANGRY = "I hate this, it is terrible and I am furious about it."


# ---- offline classifiers --------------------------------------------------------------------


def test_toxicity_ranks_rude_above_polite():
    rude, polite = toxicity_probability([RUDE, POLITE])
    assert rude > 0.5 > polite
    assert rude > polite
    assert toxicity_probability([]) == []


def test_toxicity_reward_styles():
    p = toxicity_probability([RUDE, POLITE])
    prompts = ["Say something.", [Message(role="user", content="Say something.")]]
    assert ToxicityRewardSource()(prompts, [RUDE, POLITE]) == pytest.approx([1 - x for x in p])
    assert ToxicityRewardSource(style="negated")(prompts, [RUDE, POLITE]) == pytest.approx([-x for x in p])
    with pytest.raises(ValueError, match="style"):
        ToxicityRewardSource(style="inverse")


def test_sentiment_compound_has_the_right_sign():
    happy, angry = sentiment_compound([HAPPY, ANGRY])
    assert 0 < happy <= 1 and -1 <= angry < 0
    assert SentimentRewardSource()(["p", "p"], [HAPPY, ANGRY]) == pytest.approx([happy, angry])


def test_classifiers_score_without_network(monkeypatch):
    """The shipped models load and score with every outgoing connection refused."""
    import profanity_check  # noqa: F401  (load once, so that only scoring runs under the guard)

    def refuse(*args, **kwargs):
        raise AssertionError("a classifier tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert len(toxicity_probability([POLITE])) == 1
    assert len(sentiment_compound([POLITE])) == 1


# ---- checks every source gets ---------------------------------------------------------------


def test_a_raising_source_is_named_with_the_original_error():
    def broken(prompts, responses):
        raise KeyError("missing_field")

    with pytest.raises(RewardSourceError, match=r"broken failed: KeyError: 'missing_field'") as caught:
        FunctionRewardSource(broken)(["p"], ["r"])
    assert isinstance(caught.value.__cause__, KeyError)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "high"])
def test_a_non_finite_score_names_source_index_and_response(bad):
    source = FunctionRewardSource(lambda prompts, responses: [0.5, bad, 1.0], name="judge")
    long_response = "a very long response " * 20
    with pytest.raises(RewardSourceError) as caught:
        source(["p"] * 3, ["fine", long_response, "also fine"])
    message = str(caught.value)
    assert "judge" in message and "index 1" in message
    assert "a very long response" in message and "..." in message
    assert len(message) < 300  # the response is shortened


def test_the_wrong_number_of_scores_is_an_error():
    source = FunctionRewardSource(lambda prompts, responses: [1.0], name="short")
    with pytest.raises(RewardSourceError, match="short: returned 1 scores for 2 responses"):
        source(["p", "q"], ["r", "s"])
    with pytest.raises(RewardSourceError, match="expected a list of scores, got float"):
        FunctionRewardSource(lambda prompts, responses: 1.0, name="scalar")(["p"], ["r"])


def test_mismatched_inputs_are_the_callers_error():
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        SentimentRewardSource()(["p", "q"], ["r"])
    with pytest.raises(ValueError, match="response 0 is NoneType"):
        SentimentRewardSource()(["p"], [None])


def test_scores_may_be_any_sequence_of_numbers():
    import numpy as np

    source = FunctionRewardSource(lambda prompts, responses: np.array([1, 2.5]))
    assert source(["p", "q"], ["r", "s"]) == [1.0, 2.5]


# ---- module:function ------------------------------------------------------------------------


@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    """A module `user_rewards_<id>` on sys.path, written as a user would write one."""
    name = f"user_rewards_{tmp_path.name.replace('-', '_')}"
    code = """
        def length_bonus(prompts, responses):
            return [len(r) / 10 for r in responses]

        class Judges:
            @staticmethod
            def prompt_echo(prompts, responses):
                return [float(isinstance(p, str)) for p in prompts]

        NOT_CALLABLE = 3
    """
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(code))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_function_source_from_a_module(reward_module):
    source = FunctionRewardSource(f"{reward_module}:length_bonus")
    assert source.name == f"{reward_module}:length_bonus"
    assert source(["p", "q"], ["hello", "hi, there"]) == pytest.approx([0.5, 0.9])
    nested = FunctionRewardSource(f"{reward_module}:Judges.prompt_echo")
    assert nested(["text", [Message(role="user", content="hi")]], ["r", "s"]) == [1.0, 0.0]


def test_function_source_from_config(reward_module):
    config = RewardSourceConfig(type="function", function=f"{reward_module}:length_bonus")
    assert build_reward_source(config)(["p"], ["abcd"]) == pytest.approx([0.4])


@pytest.mark.parametrize(
    "spec, complaint",
    [
        ("no_colon_here", "expected 'module:function'"),
        ("surely_missing_module_xyz:fn", "no module named 'surely_missing_module_xyz'"),
        ("{module}:missing_fn", "has no attribute 'missing_fn'"),
        ("{module}:Judges.nope", "'{module}.Judges' has no attribute 'nope'"),
        ("{module}:NOT_CALLABLE", "is a int, not callable"),
    ],
)
def test_a_bad_function_string_is_named(reward_module, spec, complaint):
    spec, complaint = spec.format(module=reward_module), complaint.format(module=reward_module)
    with pytest.raises(RewardSourceError) as caught:
        load_function(spec)
    assert repr(spec) in str(caught.value) and complaint in str(caught.value)


def test_a_module_that_fails_to_import_says_why(tmp_path, monkeypatch):
    (tmp_path / "broken_rewards_mod.py").write_text("import surely_missing_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RewardSourceError, match="importing 'broken_rewards_mod' failed.*surely_missing_dependency_xyz"):
        load_function("broken_rewards_mod:fn")


# ---- mix ------------------------------------------------------------------------------------


def _constant(values, name):
    return FunctionRewardSource(lambda prompts, responses: values, name=name)


def test_mix_is_the_weighted_sum():
    mix = MixedRewardSource([(2.0, _constant([1.0, -1.0], "a")), (-0.5, _constant([4.0, 2.0], "b"))])
    assert mix(["p", "q"], ["r", "s"]) == pytest.approx([2.0 * 1 - 0.5 * 4, 2.0 * -1 - 0.5 * 2])
    total, parts = mix.score_parts(["p", "q"], ["r", "s"])
    assert total == pytest.approx([0.0, -3.0])
    assert parts == {"a": [1.0, -1.0], "b": [4.0, 2.0]}


class _Spread(FunctionRewardSource):
    """A part with figures of its own, as a reward-model ensemble has."""

    def diagnostics(self):
        return {"disagreement": [0.25, 0.5]}


def test_a_mix_reports_each_part_and_the_parts_own_figures_so_a_weight_zero_part_is_a_monitor():
    gold = _constant([0.9, 0.1], "gold")
    mix = MixedRewardSource([(1.0, _Spread(lambda prompts, responses: [1.0, 2.0], name="proxy")), (0.0, gold)])
    assert mix(["p", "q"], ["r", "s"]) == pytest.approx([1.0, 2.0])  # gold, weight 0, is not trained on
    assert mix.diagnostics() == {"proxy": [1.0, 2.0], "gold": [0.9, 0.1], "disagreement": [0.25, 0.5]}


def test_where_two_parts_report_a_disagreement_the_monitor_wins_over_the_part_trained_on():
    climbed = _Spread(lambda prompts, responses: [1.0, 2.0], name="proxy")

    class _Watch(FunctionRewardSource):
        def diagnostics(self):
            return {"disagreement": [0.75, 1.0]}

    watch = _Watch(lambda prompts, responses: [0.0, 0.0], name="watch")
    for parts in ([(1.0, climbed), (0.0, watch)], [(0.0, watch), (1.0, climbed)]):
        mix = MixedRewardSource(parts)
        mix(["p", "q"], ["r", "s"])
        assert mix.diagnostics()["disagreement"] == [0.75, 1.0]


def test_mix_names_the_failing_part_and_keeps_names_unique():
    mix = MixedRewardSource([(1.0, _constant([1.0], "a")), (1.0, _constant([math.nan], "a"))])
    assert mix.part_names == ["a", "a#2"]
    with pytest.raises(RewardSourceError, match="reward source a: score nan at index 0"):
        mix(["p"], ["r"])
    with pytest.raises(ValueError, match="at least one"):
        MixedRewardSource([])


def test_mix_from_config_matches_the_sum_by_hand():
    config = validate_config(
        RewardSourceConfig,
        {
            "type": "mix",
            "sources": [
                {"type": "toxicity", "weight": 0.5, "style": "negated"},
                {"type": "sentiment", "weight": 2.0, "name": "mood"},
            ],
        },
    )
    mix = build_reward_source(config)
    responses = [RUDE, HAPPY]
    expected = [-0.5 * t + 2.0 * s for t, s in zip(toxicity_probability(responses), sentiment_compound(responses))]
    assert mix(["p", "q"], responses) == pytest.approx(expected)
    assert mix.part_names == ["toxicity", "mood"]


# ---- config ---------------------------------------------------------------------------------


def test_every_type_has_one_builder_and_its_key_lists():
    from alignloop.rewards.config import _ALLOWED

    assert set(typing.get_args(RewardSourceType)) == set(REWARD_SOURCE_TYPES) == set(_ALLOWED)


@pytest.mark.parametrize(
    "tree, complaint",
    [
        ({"type": "function"}, "needs 'function'"),
        ({"type": "remote"}, "needs 'url'"),
        ({"type": "mix", "sources": []}, "at least 1 item"),
        ({"type": "toxicity", "url": "http://x"}, r"type 'toxicity' does not use 'url' \(a key of type remote\)"),
        ({"type": "sentiment", "bogus": 1}, "unknown key 'bogus'"),
        ({"type": "classifier"}, "'reward_model', 'toxicity'"),
        ({"type": "mix", "sources": [{"type": "toxicity", "wieght": 2}]}, "unknown key 'sources.0.wieght'"),
    ],
)
def test_config_errors_name_the_key(tree, complaint):
    with pytest.raises(ConfigError, match=complaint):
        validate_config(RewardSourceConfig, tree)


def test_config_defaults_build_sources():
    source = build_reward_source(RewardSourceConfig(type="remote", url="http://127.0.0.1:1"))
    assert (source.url, source.timeout_s, source.retries, source.backoff_s) == ("http://127.0.0.1:1/score", 30.0, 3, 0.5)
    assert build_reward_source(RewardSourceConfig(type="toxicity")).style == "one_minus"
