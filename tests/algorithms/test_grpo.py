"""GRPO / RLOO on a tiny model: group baselines, the KL at the start, the reward metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alignloop.algorithms.grpo import GRPOConfig, GroupPolicyGradient, GroupSettings, run_grpo
from alignloop.config import load_config
from alignloop.engine import read_metrics
from alignloop.engine.rollout import SamplingConfig
from cli_in_process import alignloop_in_process

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "grpo-tiny-cpu.yaml"
LENGTH_REWARD = ["reward={type: function, function: 'grpo_rewards:length_reward'}"]


@pytest.fixture(autouse=True)
def reward_module_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


def run(tiny_model_dir, out, *overrides):
    cfg = load_config(GRPOConfig, RECIPE, [f"model.name={tiny_model_dir}", f"train.output_dir={out}", *overrides])
    run_grpo(cfg)
    return [r for r in read_metrics(out / "metrics.jsonl") if "train/loss" in r]


def method_with(settings: GroupSettings) -> GroupPolicyGradient:
    return GroupPolicyGradient(sampling=SamplingConfig(), reward_source=None, pad_token_id=0, make_engine=None,
                               rows_per_micro_batch=4, settings=settings)


def test_group_advantages_sum_to_zero_within_each_group():
    method = method_with(GroupSettings(group_size=3))
    advantages = method._advantages(torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 8.0]))
    assert advantages.view(2, 3).sum(-1).abs().max() < 1e-6
    assert advantages[0] == pytest.approx(-1.0, abs=1e-5)  # (1 - 2) / std([1, 2, 3]) = -1 / 1
    rloo = method_with(GroupSettings(group_size=3, advantage="rloo"))
    assert rloo._advantages(torch.tensor([1.0, 2.0, 3.0]))[0] == pytest.approx(1.0 - 2.5)


def test_first_step_policy_equals_reference_and_rewards_are_those_of_the_source(tiny_model_dir, tmp_path):
    records = run(tiny_model_dir, tmp_path, "train.max_steps=2", *LENGTH_REWARD)
    first = records[0]
    assert first["kl/mean"] == pytest.approx(0.0, abs=1e-6)  # k3 of identical distributions
    assert first["kl/sequence"] == pytest.approx(0.0, abs=1e-5)
    # The length reward of a response of L ≤ 8 tokens: every sample's text has length ≥ 0.
    assert first["reward"] >= 0.0 and first["reward_std"] >= 0.0
    assert 0.0 <= first["response/eos_rate"] <= 1.0 and 1.0 <= first["completions/mean_length"] <= 8.0
    assert 0.0 < first["response/distinct_2"] <= 1.0
    assert first["train/tokens_per_s"] > 0


def test_full_fine_tuning_keeps_a_frozen_reference_copy(tiny_model_dir, tmp_path):
    records = run(tiny_model_dir, tmp_path, "train.max_steps=3", "train.lr=1e-2")
    assert records[0]["kl/mean"] == pytest.approx(0.0, abs=1e-6)
    assert records[-1]["kl/mean"] > 0.0  # the policy moved away from the frozen copy


def test_rloo_command_with_lora_runs_end_to_end(tiny_model_dir, tmp_path):
    done = alignloop_in_process("rloo", "--config", RECIPE, f"model.name={tiny_model_dir}", f"train.output_dir={tmp_path}",
                                "train.max_steps=2", "model.lora={r: 4, alpha: 8, dropout: 0.0}", *LENGTH_REWARD)
    assert done.returncode == 0, done.stderr[-2000:]
    config = (tmp_path / "config.yaml").read_text()
    assert "advantage: rloo" in config and "kl_in: reward" in config
    assert (tmp_path / "final" / "adapter_config.json").is_file()


def test_a_kl_budget_ends_the_run_on_the_last_weights_measured_within_it(tiny_model_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    method = method_with(GroupSettings(kl_stop=2.0))
    assert method.stop_reason({"kl/sequence": 1.99}) is None
    assert method.stop_reason({"kl/sequence": 2.0}) == (
        "its replies were 2.00 nats from the reference, at or past kl_stop = 2")
    # Step 1 samples the reference itself: its KL is float32 noise (~1e-3 summed over a batch,
    # the training and reference forwards add in different orders). A large step size carries
    # the policy well past 0.3 nats within a few steps (0.06, 0.71 at steps 2 and 3 on an AMD
    # EPYC); the k1 estimate is noisy and may dip below zero on the way, so the test checks the
    # rule, not the step it fires at: every step before the last is under the budget and
    # updated the weights, the last reaches it and updated nothing, and the run ends on the
    # weights that sampled the step before it (one update short of the last step's).
    common = ["train.lr=1e-1", "train.schedule=constant"]
    run(tiny_model_dir, tmp_path / "budget", "train.max_steps=8", "group.kl_stop=0.3", *common)
    records = [r for r in read_metrics(tmp_path / "budget" / "metrics.jsonl") if "kl/sequence" in r]
    steps = [r["step"] for r in records]
    assert steps == list(range(1, len(steps) + 1)) and 2 <= len(steps) < 8
    stopped = records[-1]
    assert all(r["kl/sequence"] < 0.3 and "train/loss" in r for r in records[:-1])
    assert stopped["kl/sequence"] >= 0.3 and "train/loss" not in stopped and stopped["train/updates_skipped"] == 1
    out = " ".join(capsys.readouterr().out.split())
    assert f"stopped at step {steps[-1]} of 8 without its update: its replies were" in out
    assert f"the run ends on the weights that sampled step {steps[-1] - 1}'s replies" in out
    assert stopped["train/ended_on_step"] == steps[-1] - 1
    # Those weights are the same seed's after steps[-1] - 2 updates: a run of that many steps
    # without a budget saves the same numbers (none: the untrained adapter, whose B is zero).
    final = load_file(tmp_path / "budget" / "final" / "model.safetensors")
    if steps[-1] == 2:
        lora_b = [tensor for name, tensor in final.items() if "lora_B" in name]
        assert lora_b and not any(tensor.any() for tensor in lora_b)
        return
    run(tiny_model_dir, tmp_path / "before", f"train.max_steps={steps[-1] - 2}", *common)
    before = load_file(tmp_path / "before" / "final" / "model.safetensors")
    assert final.keys() == before.keys()
    assert all(torch.equal(final[name], before[name]) for name in final)


def test_a_reward_model_ensemble_is_watched_for_over_optimisation(tiny_model_dir, tmp_path):
    from alignloop.algorithms.reward import RewardConfig, run_reward

    rm_cfg = load_config(RewardConfig, ROOT / "recipes" / "rm-tiny-cpu.yaml", [
        f"model.name={tiny_model_dir}", f"train.output_dir={tmp_path / 'rm'}", "train.max_steps=4",
        "reward.backbone=frozen", "reward.ensemble=3"])
    folder = run_reward(rm_cfg).final_model_dir
    records = run(tiny_model_dir, tmp_path / "rl", "train.max_steps=3",
                  f"reward={{type: reward_model, path: '{folder}', aggregate: mean_minus_std, penalty: 0.5}}")
    assert all(r["reward/disagreement"] > 0 for r in records)
    assert records[0]["overoptimisation/disagreement_ratio"] == 1.0  # the first step is the yardstick
    ratios = [r["overoptimisation/disagreement_ratio"] for r in records]
    assert ratios[1:] == pytest.approx([r["reward/disagreement"] / records[0]["reward/disagreement"] for r in records[1:]])

    method = method_with(GroupSettings())
    figures = method.watch_overoptimisation({"reward/disagreement": 0.2, "reward": 0.0})
    assert figures == {"overoptimisation/disagreement_ratio": 1.0, "overoptimisation/alarm": 0.0}
    assert method.watch_overoptimisation({"reward/disagreement": 0.4, "reward": 0.5})["overoptimisation/alarm"] == 1.0
    assert method.stop_reason({}) is None  # watched, not acted on, by default
    method.settings = method.settings.model_copy(update={"stop_on_overoptimisation": True})
    assert "over-optimisation alarm rang" in method.stop_reason({})
    # The watch is in the checkpoint: a run resumed after the alarm stopped it stops again.
    resumed = method_with(GroupSettings(stop_on_overoptimisation=True))
    resumed.load_state_dict(method.state_dict())
    assert "over-optimisation alarm rang" in resumed.stop_reason({})


def test_a_setting_the_baseline_does_not_take_is_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="scale_by_std is not a setting of advantage 'rloo' \\(only of 'grpo'\\)"):
        GroupSettings(advantage="rloo", scale_by_std=False)
    assert GroupSettings(advantage="grpo", scale_by_std=False).scale_by_std is False


def test_the_samplers_logprobs_stand_for_the_policys_only_in_full_precision(smol_tokenizer):
    """Where the sampler drew from the policy's float32 weights and no autocast is on, its
    recorded log-probs are the policy's at sampling time (one forward pass saved); under bf16
    autocast, or when nothing was recorded, the policy's are computed."""
    from alignloop.algorithms.online import ScoredRollout
    from alignloop.engine.rollout import Rollout, rollout_batch
    from alignloop.models import LoraSettings, apply_lora, build_tiny_causal_lm

    policy = apply_lora(build_tiny_causal_lm(smol_tokenizer, seed=1)[0], LoraSettings(r=4, dropout=0.0))
    recorded = [[-1.5, -2.5], [-3.5]]  # not what the model computes: tells the two sources apart
    rollout = Rollout([[10, 11], [12]], [[20, 21], [22]], [False, False], ["", ""], 1.0, recorded)
    scored = ScoredRollout([None, None], rollout, torch.zeros(2), rollout_batch(rollout, 0))
    method = method_with(GroupSettings())
    mask = scored.mask
    assert method.sampling_logps(policy, scored)[mask].tolist() == [-1.5, -2.5, -3.5]
    computed = method.policy_logps(policy, scored.tokens)[mask]
    assert (computed < -5).all()  # a random model over a 49k vocabulary
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not torch.equal(method.sampling_logps(policy, scored)[mask], torch.tensor([-1.5, -2.5, -3.5]))
    unrecorded = ScoredRollout([None, None], Rollout(rollout.prompt_ids, rollout.response_ids, rollout.finished,
                                                     rollout.texts, 1.0), torch.zeros(2), scored.tokens)
    assert torch.equal(method.sampling_logps(policy, unrecorded)[mask], computed)


def test_the_method_backtracks_on_the_kl_budget_as_often_as_allowed_and_never_on_the_alarm():
    method = method_with(GroupSettings(kl_stop=2.0, kl_backtracks=2))
    assert method.backtrack({"kl/sequence": 1.5}) is None  # within the budget: nothing to go back from
    assert [method.backtrack({"kl/sequence": 2.5}) for _ in range(3)] == [0.5, 0.5, None]
    assert method.state_dict()["backtracks_taken"] == 2
    resumed = method_with(GroupSettings(kl_stop=2.0, kl_backtracks=2))
    resumed.load_state_dict(method.state_dict())
    assert resumed.backtrack({"kl/sequence": 2.5}) is None  # a resumed run has none left either
    alarmed = method_with(GroupSettings(kl_stop=2.0, kl_backtracks=2, stop_on_overoptimisation=True))
    alarmed.watch_overoptimisation({"reward/disagreement": 1.0, "reward": 0.0})
    alarmed.watch_overoptimisation({"reward/disagreement": 10.0, "reward": 1.0})
    assert alarmed.watch.rang_at is not None and alarmed.backtrack({"kl/sequence": 2.5}) is None


def test_a_run_that_reaches_its_kl_budget_goes_back_and_on_at_half_the_rate(tiny_model_dir, tmp_path, capsys):
    # The budget test's run with two backtracks. A step that reaches 0.3 nats updates nothing;
    # the weights go back to those that sampled the step before and later updates take half
    # the rate. The run ends at a crossing with no backtrack left, at one whose replies the
    # restored weights sampled themselves (then it ends on them), or at one on its last step,
    # or after its 12 steps.
    run(tiny_model_dir, tmp_path, "train.max_steps=12", "group.kl_stop=0.3", "group.kl_backtracks=2",
        "train.lr=1e-1", "train.schedule=constant")
    records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "kl/sequence" in r]
    assert [r["step"] for r in records] == list(range(1, len(records) + 1))
    rate, backtracks = 0.1, []
    for before, record in zip([None, *records], records):
        if "train/loss" in record:
            assert record["kl/sequence"] < 0.3 and record["train/lr"] == pytest.approx(rate)
        elif "train/backtracked_to_step" in record:
            assert record["kl/sequence"] >= 0.3 and record["train/updates_skipped"] == 1 and "train/loss" in before
            assert record["train/backtracked_to_step"] == record["step"] - 1
            rate /= 2
            assert record["train/lr"] == pytest.approx(rate)
            backtracks.append(record["step"])
        else:  # the crossing that ends the run
            assert record is records[-1] and record["kl/sequence"] >= 0.3
            gone_back = "train/backtracked_to_step" in before
            assert len(backtracks) == 2 or gone_back or record["step"] == 12
            assert record["train/ended_on_step"] == record["step"] - (2 if gone_back else 1)
    assert backtracks and (records[-1]["step"] == 12 or "train/ended_on_step" in records[-1])
    out = " ".join(capsys.readouterr().out.split())
    assert (f"backtracked at step {backtracks[0]} of 12, without its update: its replies were" in out
            and f"on from the weights that sampled step {backtracks[0] - 1}'s replies at lr 0.05" in out)
