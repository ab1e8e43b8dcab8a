"""`alignloop eval` on a tiny random model: the eval.json contract, KL 0 against itself, the same
reference samples whatever the policy, LoRA adapters and separate references, win rates, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from alignloop.config import ConfigError, load_config
from alignloop.evaluation.hacking import eval_warnings
from alignloop.evaluation.policy_eval import (
    EvalConfig,
    evaluate,
    plan_models,
    reduction_interval,
    reduction_text,
    relative_reduction,
    source_role,
    win_counts,
)
from alignloop.models import (
    LoraSettings,
    ModelConfig,
    ModelLoadError,
    build_reward_model,
    load_model_and_tokenizer,
    save_reward_model,
    save_trained_model,
)
from alignloop.rewards import RewardSourceConfig, RewardSourceError

PROMPTS = [
    {"prompt": "Tell me what you think of my neighbours."},
    {"prompt": [{"role": "user", "content": "Why is the sky blue?"}]},
    {"prompt": "Write one sentence about cats."},
]
SOURCES = ("sources=[{type: toxicity}, {type: sentiment}, "
           "{type: function, name: chars, function: 'test_policy_eval:char_count'}]")
CONTRACT = {"policy", "reference", "prompts", "samples_per_prompt", "created_at", "sources", "toxicity", "kl",
            "win_rate", "length", "eos_rate", "distinct", "warnings", "examples"}


def char_count(prompts, responses):
    """A toy gold scorer whose value can be checked from the text: its length in characters."""
    return [float(len(response)) for response in responses]


@pytest.fixture(autouse=True)
def scorer_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "held-out.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in PROMPTS))
    return path


def config(policy, prompts_file, output: Path, *overrides: str) -> EvalConfig:
    return load_config(EvalConfig, None, [
        f"policy={policy}", f"prompts={prompts_file}", f"output={output}", "samples_per_prompt=2",
        "sampling.max_new_tokens=8", "sampling.batch_size=4", "progress=false", SOURCES, *overrides,
    ])


def save_lora(tiny_model_dir, folder: Path, scale: float) -> Path:
    """A LoRA adapter on the tiny model saved as ppo / grpo / dpo save it; B ~ N(0, scale)."""
    model, tokenizer = load_model_and_tokenizer(
        ModelConfig(name=str(tiny_model_dir), lora=LoraSettings(r=2, alpha=4, dropout=0.0)))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, scale) if scale else parameter.zero_()
    return save_trained_model(model, folder, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def self_eval(tiny_model_dir, prompts_file, tmp_path_factory) -> dict:
    """The tiny model against itself: every later reference column must equal this one."""
    return evaluate(config(tiny_model_dir, prompts_file, tmp_path_factory.mktemp("self") / "eval.json"))


def reference_texts(result: dict) -> list[str]:
    return [example["reference"] for example in result["examples"]]


def test_against_itself_kl_is_zero_and_every_pair_ties(self_eval, tiny_model_dir, prompts_file):
    result = self_eval
    assert CONTRACT <= result.keys()
    assert result["samples_per_prompt"] == 2 and result["policy"] == str(tiny_model_dir)
    assert set(result["sources"]) == {"toxicity", "sentiment", "chars"}
    for name, entry in result["sources"].items():
        assert {"higher_is_better", "policy", "reference", "policy_mean", "policy_se", "reference_mean",
                "reference_se"} <= entry.keys()
        assert len(entry["policy"]) == 6 and entry["policy"] == entry["reference"]
        assert result["win_rate"][name] == {"win": 0, "tie": 6, "loss": 0, "rate": 0.5}
    # The policy's log-probs are the sampler's (KV cache, left padding), the reference's a forward
    # pass: float32 rounding apart, ~1e-6 a token over at most 8 tokens.
    assert result["kl"]["per_response"] == pytest.approx([0.0] * 6, abs=1e-4)
    assert result["kl"]["mean"] == pytest.approx(0.0, abs=1e-4)
    assert result["toxicity"]["policy"] == result["toxicity"]["reference"]
    assert len(result["toxicity"]["policy"]) == 6 and "relative_reduction" in result["toxicity"]
    assert result["length"]["policy"] == result["length"]["reference"] > 0
    assert set(result["distinct"]["policy"]) == {"distinct_1", "distinct_2"}
    assert any("the reference is the policy itself" in warning for warning in result["warnings"])
    # Examples: the first sample of each prompt, chat prompts as role: content lines, scores [ref, pol].
    assert [e["prompt"] for e in result["examples"]] == [PROMPTS[0]["prompt"], "user: Why is the sky blue?",
                                                         PROMPTS[2]["prompt"]]
    for example in result["examples"]:
        assert example["scores"]["chars"] == [float(len(example["reference"])), float(len(example["policy"]))]
    on_disk = json.loads(Path(result["config"]["output"]).read_text())
    assert on_disk == json.loads(json.dumps(result))


def test_a_zero_adapter_is_the_reference_and_a_trained_one_moves_away(self_eval, tiny_model_dir, prompts_file,
                                                                      tmp_path):
    zero = save_lora(tiny_model_dir, tmp_path / "zero" / "final", scale=0.0)
    same = evaluate(config(zero, prompts_file, tmp_path / "zero.json"))
    assert same["kl"]["per_response"] == pytest.approx([0.0] * 6, abs=1e-4)
    assert reference_texts(same) == reference_texts(self_eval)
    assert same["reference"] == f"{tiny_model_dir} (adapters off)"

    trained = save_lora(tiny_model_dir, tmp_path / "trained" / "final", scale=0.5)
    reward_model, tokenizer = build_reward_model(str(tiny_model_dir))
    rm = save_reward_model(reward_model, tmp_path / "rm", tokenizer)
    with_rm = SOURCES[:-1] + f", {{type: reward_model, path: '{rm}'}}]"
    result = evaluate(config(trained, prompts_file, tmp_path / "trained.json", "kl_bound=0.001", with_rm))
    assert result["policy"] == str(trained)
    roles = {name: entry["role"] for name, entry in result["sources"].items()}
    assert roles == {"toxicity": "gold", "sentiment": "gold", "chars": "gold", "reward_model": "reward_model"}
    assert result["warnings"] == eval_warnings(result, kl_bound=0.001)
    # Same seeds: the reference's samples do not depend on which policy is evaluated.
    assert reference_texts(result) == reference_texts(self_eval)
    assert result["sources"]["chars"]["reference"] == self_eval["sources"]["chars"]["reference"]
    assert [e["policy"] for e in result["examples"]] != reference_texts(result)
    assert result["kl"]["mean"] > 0.1
    assert any("above the bound of 0.001" in warning for warning in result["warnings"])
    for name, counts in result["win_rate"].items():
        assert counts["win"] + counts["tie"] + counts["loss"] == 6
        assert counts["rate"] == pytest.approx((counts["win"] + 0.5 * counts["tie"]) / 6)
        assert counts == win_counts(result["sources"][name]["policy"], result["sources"][name]["reference"])


def test_a_separate_reference_model_is_sampled_with_the_same_seeds(self_eval, tiny_model_dir, prompts_file,
                                                                    tmp_path):
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    torch.manual_seed(1)
    with torch.no_grad():  # a full fine-tune: every weight of the output layer moved
        model.lm_head.weight.add_(0.5 * torch.randn_like(model.lm_head.weight))
    tuned = save_trained_model(model, tmp_path / "full-finetune", tokenizer=tokenizer)
    result = evaluate(config(tuned, prompts_file, tmp_path / "eval.json", f"reference={tiny_model_dir}"))
    assert result["reference"] == str(tiny_model_dir)
    assert reference_texts(result) == reference_texts(self_eval)
    assert result["kl"]["mean"] > 0.1
    assert not any("the reference is the policy itself" in warning for warning in result["warnings"])


def test_prompts_from_a_datasetdict_folder_use_its_test_split_or_the_one_named(tiny_model_dir, tmp_path):
    import datasets

    folder = tmp_path / "prompts-dict"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"prompt": "a training prompt"}]),
        "test": datasets.Dataset.from_list([{"prompt": "a held-out prompt"}, {"prompt": "another one"}]),
    }).save_to_disk(str(folder))
    held_out = evaluate(config(tiny_model_dir, folder, tmp_path / "test.json", "samples_per_prompt=1", "kl_bound=null"))
    assert [e["prompt"] for e in held_out["examples"]] == ["a held-out prompt", "another one"]
    named = evaluate(config(tiny_model_dir, folder, tmp_path / "train.json", "samples_per_prompt=1", "split=train"))
    assert [e["prompt"] for e in named["examples"]] == ["a training prompt"]


def test_where_an_adapter_finds_its_base(tiny_model_dir, prompts_file, tmp_path):
    adapter = save_lora(tiny_model_dir, tmp_path / "final", scale=0.0)
    plan = plan_models(config(adapter, prompts_file, tmp_path / "e.json"))
    assert (plan.base, plan.adapter, plan.reference) == (str(tiny_model_dir), str(adapter), None)
    spelled_otherwise = plan_models(config(adapter, prompts_file, tmp_path / "e.json", f"reference={tiny_model_dir}/."))
    assert spelled_otherwise.reference is None  # the base itself: one network, adapters off
    # The loop's form: the base by name, the adapter beside it.
    explicit = plan_models(EvalConfig.model_validate(
        {"policy": {"name": str(tiny_model_dir), "adapter": str(adapter)}, "prompts": str(prompts_file)}))
    assert (explicit.base, explicit.adapter) == (str(tiny_model_dir), str(adapter))

    moved = tmp_path / "moved"  # an adapter whose base folder is gone: the reference is its base
    shutil.copytree(adapter, moved)
    settings = json.loads((moved / "adapter_config.json").read_text())
    (moved / "adapter_config.json").write_text(json.dumps({**settings, "base_model_name_or_path": "/gone/base"}))
    with pytest.raises(ModelLoadError, match="base_model_name_or_path.*set `reference`"):
        plan_models(config(moved, prompts_file, tmp_path / "e.json"))
    plan = plan_models(config(moved, prompts_file, tmp_path / "e.json", f"reference={tiny_model_dir}"))
    assert (plan.base, plan.adapter, plan.reference) == (str(tiny_model_dir), str(moved), None)
    with pytest.raises(ModelLoadError, match="no adapter_config.json"):
        plan_models(load_config(EvalConfig, None, [f"policy.name={tiny_model_dir}", f"policy.adapter={tmp_path}",
                                                   f"prompts={prompts_file}"]))


def test_a_reference_with_other_tokens_is_refused(tiny_model_dir, prompts_file, tmp_path):
    other = tmp_path / "other-tokenizer"
    shutil.copytree(tiny_model_dir, other)
    _, tokenizer = load_model_and_tokenizer(str(other))
    tokenizer.add_tokens(["<new-token>"])
    tokenizer.save_pretrained(str(other))
    with pytest.raises(ConfigError, match="different tokenizer.*same tokens"):
        evaluate(config(tiny_model_dir, prompts_file, tmp_path / "e.json", f"reference={other}"))


def test_win_counts_by_hand():
    # pairs: 3>1 win, 1<2 loss, 2=2 tie, 2.0000001~0? no: win, 5 vs 5+1e-9 tie (within tolerance)
    assert win_counts([3.0, 1.0, 2.0, 2.0000001, 5.0], [1.0, 2.0, 2.0, 0.0, 5.0 + 1e-9]) == {
        "win": 2, "tie": 2, "loss": 1, "rate": pytest.approx((2 + 0.5 * 2) / 5)}


def test_the_reduction_and_its_bootstrap_interval_by_hand():
    # Two prompts, two replies each. Per prompt (policy sum, reference sum): (0.1, 0.5), (0.3, 0.5).
    policy, reference = [0.0, 0.1, 0.1, 0.2], [0.2, 0.3, 0.4, 0.1]
    assert relative_reduction(policy, reference) == pytest.approx(1 - 0.4 / 1.0)
    assert relative_reduction([0.1], [0.0]) is None
    # A resample draws each prompt 0, 1 or 2 times: reductions 1 - 0.2/1 = 0.8 (first twice),
    # 0.6 (one each) or 1 - 0.6/1 = 0.4 (second twice), drawn 1/4, 1/2, 1/4 of the time, so the
    # 95 % interval's ends are the extremes.
    low, high = reduction_interval(policy, reference, samples_per_prompt=2, resamples=400)
    assert (low, high) == (pytest.approx(0.4), pytest.approx(0.8))
    # The same draws every call (seeded), and a narrower level can exclude the extremes' 1/4 tails.
    assert reduction_interval(policy, reference, 2, resamples=400) == [low, high]
    assert reduction_interval(policy, reference, 2, level=0.4, resamples=400) == [pytest.approx(0.6)] * 2
    # One prompt cannot be resampled; a reference that is never toxic gives no ratio.
    assert reduction_interval(policy, reference, samples_per_prompt=4) is None
    assert reduction_interval([0.1, 0.1], [0.0, 0.0], samples_per_prompt=1) is None
    assert reduction_text(0.576, [0.404, 0.69]) == "58 % (95 % interval 40-69 %)"
    assert reduction_text(0.576, None) == "58 %"


def test_learned_reward_models_are_told_from_gold_scorers():
    rm = RewardSourceConfig(type="reward_model", path="runs/rm/final")
    assert source_role(rm) == "reward_model"
    assert source_role(RewardSourceConfig(type="mix", sources=[rm, RewardSourceConfig(type="toxicity")])) == "reward_model"
    assert source_role(RewardSourceConfig(type="toxicity")) == "gold"
    assert source_role(RewardSourceConfig(type="function", function="m:f")) == "gold"
    assert source_role(RewardSourceConfig(type="sentiment"), monitors=["sentiment"]) == "monitor"


def test_a_broken_source_stops_before_any_model_is_loaded(prompts_file, tmp_path):
    broken = "sources=[{type: function, function: 'no_such_module:score'}]"
    with pytest.raises(RewardSourceError, match="no module named 'no_such_module'"):
        evaluate(config(tmp_path / "no-model-here", prompts_file, tmp_path / "e.json", broken))


def test_bad_settings_are_named(prompts_file, tmp_path):
    with pytest.raises(ConfigError, match="two sources are named 'toxicity'"):
        load_config(EvalConfig, None, ["policy=x", f"prompts={prompts_file}", "sources=[{type: toxicity}, {type: toxicity}]"])
    with pytest.raises(ConfigError, match="monitors: 'sentiment' is not one of the gold sources \\(toxicity\\)"):
        load_config(EvalConfig, None, ["policy=x", f"prompts={prompts_file}", "sources=[{type: toxicity}]", "monitors=[sentiment]"])
    with pytest.raises(ConfigError, match="sampling.engine"):
        load_config(EvalConfig, None, ["policy=x", f"prompts={prompts_file}", "sampling.engine=vllm"])
    with pytest.raises(ConfigError, match="unknown key 'sample_per_prompt'.*did you mean 'samples_per_prompt'"):
        load_config(EvalConfig, None, ["policy=x", f"prompts={prompts_file}", "sample_per_prompt=3"])
    with pytest.raises(ConfigError, match="missing required key 'prompts'"):
        load_config(EvalConfig, None, ["policy=x"])


def test_the_command_prints_a_table_and_the_path(tiny_model_dir, prompts_file, tmp_path):
    from alignloop.cli.main import app

    output = tmp_path / "cli" / "eval.json"
    args = ["eval", f"policy={tiny_model_dir}", f"prompts={prompts_file}", f"output={output}", "samples_per_prompt=1",
            "sampling.max_new_tokens=4", "progress=false"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert f"eval.json: {output}" in done.output and "KL to reference" in done.output
    assert json.loads(output.read_text())["samples_per_prompt"] == 1
    missing = CliRunner().invoke(app, args[:2] + [f"prompts={tmp_path / 'nope.jsonl'}"])
    assert missing.exit_code == 2 and "nope.jsonl" in missing.output
