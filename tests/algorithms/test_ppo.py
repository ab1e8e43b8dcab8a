"""PPO on a tiny model: the ratio is exactly 1 before the first update, the KL starts at 0,
the adaptive KL coefficient moves the right way, a killed run resumes identically (β included),
LoRA saves adapter + value head, and bad input stops with a clear message."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignloop.algorithms.kl_control import adaptive_kl_coef
from alignloop.algorithms.ppo import PPOConfig, explained_variance, run_ppo
from alignloop.config import load_config
from alignloop.engine import KILL_AT_STEP_ENV, read_metrics
from cli_in_process import alignloop_in_process

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "ppo-tiny-cpu.yaml"
HERE = Path(__file__).parent
LENGTH_REWARD = "reward={type: function, function: 'grpo_rewards:length_reward'}"


@pytest.fixture(autouse=True)
def reward_module_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


def train_records(out: Path) -> list[dict]:
    return [r for r in read_metrics(out / "metrics.jsonl") if "train/loss" in r]


def run(tiny_model_dir, out, *overrides):
    cfg = load_config(PPOConfig, RECIPE, [f"model.name={tiny_model_dir}", f"train.output_dir={out}", *overrides])
    run_ppo(cfg)
    return train_records(out)


def cli(tiny_model_dir, out, *args, env_extra=None, process=False):
    """`alignloop ppo` in this process, or in a fresh one (`process`: killed runs, module state)."""
    command = ["ppo", "--config", str(RECIPE), f"model.name={tiny_model_dir}", f"train.output_dir={out}", *args]
    if not (process or env_extra):
        return alignloop_in_process(*command)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(HERE), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "alignloop", *command], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_adaptive_kl_coefficient_follows_the_proportional_controller():
    # error = clip(0.3 / 0.1 - 1, ±0.2) = 0.2; β · (1 + 0.2 · 64 / 1000) = 0.1 · 1.0128
    assert adaptive_kl_coef(0.1, 0.3, 0.1, 1000, 64) == pytest.approx(0.10128)
    # error = 0.05 / 0.1 - 1 = -0.5 -> clipped to -0.2
    assert adaptive_kl_coef(0.1, 0.05, 0.1, 1000, 64) == pytest.approx(0.1 * (1 - 0.2 * 0.064))
    assert adaptive_kl_coef(0.1, 0.11, 0.1, 100, 10) == pytest.approx(0.1 * (1 + 0.1 * 0.1))
    with pytest.raises(ValueError, match="target"):
        adaptive_kl_coef(0.1, 0.1, 0.0, 100, 10)


def test_explained_variance_by_hand():
    returns = torch.tensor([[1.0, 2.0, 3.0, 99.0]])
    mask = torch.tensor([[True, True, True, False]])
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(returns, 2.0), returns, mask) == pytest.approx(0.0)
    # V = R + [1, -1, 0]: Var(R - V) = 2/3, Var(R) = 2/3 -> 0
    values = returns + torch.tensor([[1.0, -1.0, 0.0, 0.0]])
    assert explained_variance(values, returns, mask) == pytest.approx(0.0)
    values = returns + torch.tensor([[0.5, -0.5, 0.0, 0.0]])  # Var = 1/6 -> 1 - 0.25
    assert explained_variance(values, returns, mask) == pytest.approx(0.75)


def test_first_update_has_ratio_one_and_zero_kl_even_with_temperature(tiny_model_dir, tmp_path):
    # One epoch, one minibatch: the update sees exactly the weights that sampled, so the ratio
    # is 1 unless the log-probs were computed differently (temperature, dropout, precision).
    records = run(tiny_model_dir, tmp_path, "train.max_steps=2", "ppo.epochs=1", "ppo.num_minibatches=1",
                  "sampling.temperature=0.7", LENGTH_REWARD)
    first = records[0]
    assert first["policy/ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    assert first["policy/approx_kl"] == pytest.approx(0.0, abs=1e-6)
    assert first["policy/clipfrac"] == 0.0
    assert first["kl/sequence"] == pytest.approx(0.0, abs=1e-5)  # policy = reference before step 1
    assert first["value/mean"] == 0.0  # the zero-initialised head
    assert first["reward"] > 0  # length reward of non-empty responses
    assert records[1]["kl/sequence"] != pytest.approx(0.0, abs=1e-6)  # the policy moved


def test_several_epochs_and_minibatches_run_that_many_updates(tiny_model_dir, tmp_path):
    records = run(tiny_model_dir, tmp_path, "train.max_steps=2", "ppo.epochs=3", "ppo.num_minibatches=2",
                  "train.schedule=linear", LENGTH_REWARD)
    # 2 steps x 6 updates of a linear schedule from 1e-3 to 0 over 12 updates: step 2 starts at update 7.
    assert records[1]["train/lr"] == pytest.approx(1e-3 * (1 - 6 / 12))
    assert records[0]["policy/approx_kl"] > 0  # later updates saw a moved policy
    assert -1.0 <= records[1]["value/explained_variance"] <= 1.0


def test_adaptive_kl_moves_beta_with_the_kl_of_the_step_before(tiny_model_dir, tmp_path):
    records = run(tiny_model_dir, tmp_path, "train.max_steps=4", "ppo.kl_target=1e-6", "ppo.kl_horizon=10",
                  "train.lr=1e-2", LENGTH_REWARD)
    coefs, kls = [r["kl/coef"] for r in records], [r["kl/sequence"] for r in records]
    assert coefs[0] == pytest.approx(0.05)
    # Each step's β follows the KL measured in the step before: up where it was above the tiny
    # target, down where not (step 1's is 0, the policy being the reference; a later sampled
    # estimate can be too). Not "up at the end": 16 replies of 8 tokens estimate a small KL
    # with a noise that can put it below 0.
    assert kls[0] == pytest.approx(0.0, abs=1e-6) and any(kl > 1e-6 for kl in kls[1:-1])
    for step in range(1, len(records)):
        assert (coefs[step] > coefs[step - 1]) == (kls[step - 1] > 1e-6), (step, coefs, kls)


def test_killed_ppo_run_resumes_identically_including_the_kl_coefficient(tiny_model_dir, tmp_path):
    common = ("train.max_steps=4", "train.save_every=2", "ppo.kl_target=0.01", "ppo.kl_horizon=10",
              "data.eval=null", LENGTH_REWARD)
    # All three in fresh processes: the comparison is of a run with its own killed and resumed self.
    straight = cli(tiny_model_dir, tmp_path / "straight", *common, process=True)
    assert straight.returncode == 0, straight.stderr[-2000:]
    out = tmp_path / "killed"
    killed = cli(tiny_model_dir, out, *common, env_extra={KILL_AT_STEP_ENV: "3"})
    assert killed.returncode == -signal.SIGKILL
    resumed = cli(tiny_model_dir, out, *common, "--resume", process=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = train_records(tmp_path / "straight"), train_records(out)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for key in ("train/loss", "reward", "kl/sequence", "kl/coef", "value/loss", "policy/clipfrac"):
        assert [r[key] for r in b] == pytest.approx([r[key] for r in a], abs=1e-6), key
    assert [r["step"] for r in read_metrics(out / "samples.jsonl")][0] == 1


def test_lora_ppo_saves_the_adapter_and_the_value_head(tiny_model_dir, tmp_path):
    done = cli(tiny_model_dir, tmp_path, "train.max_steps=2", "model.lora={r: 4, alpha: 8, dropout: 0.1}",
               LENGTH_REWARD)
    assert done.returncode == 0, done.stderr[-2000:]
    final = tmp_path / "final"
    assert (final / "adapter_config.json").is_file()
    head = load_file(str(final / "value_head.safetensors"))
    assert head["weight"].shape == (1, 64) and head["weight"].abs().sum() > 0  # it learned
    records = train_records(tmp_path)
    assert records[0]["policy/ratio_mean"] == pytest.approx(1.0, abs=0.05)  # dropout 0.1 was switched off
    samples = read_metrics(tmp_path / "samples.jsonl")
    assert {"prompt", "response", "reward", "kl"} <= set(samples[0])


def test_a_failing_reward_source_stops_with_its_name_and_the_checkpoints_resume(tiny_model_dir, tmp_path):
    flaky = "reward={type: function, function: 'grpo_rewards:fails_on_third_call'}"
    common = ("train.max_steps=4", "train.save_every=1", "data.eval=null", flaky)
    failed = cli(tiny_model_dir, tmp_path, *common, process=True)  # the function counts its calls
    assert failed.returncode == 2
    assert "grpo_rewards:fails_on_third_call" in failed.stderr and "scoring service unavailable" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000001", "step-00000002"]
    resumed = cli(tiny_model_dir, tmp_path, *common, "--resume", process=True)  # a fresh process: the service is back
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [r["step"] for r in train_records(tmp_path)] == [1, 2, 3, 4]


def test_nan_rewards_are_refused_with_the_response(tiny_model_dir, tmp_path):
    done = cli(tiny_model_dir, tmp_path, "train.max_steps=1", "data.eval=null",
               "reward={type: function, function: 'grpo_rewards:nan_reward'}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "score nan at index 0" in done.stderr


def test_prompt_and_response_longer_than_the_context_are_refused(tiny_model_dir, tmp_path):
    done = cli(tiny_model_dir, tmp_path, "sampling.max_new_tokens=100000")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "sampling.max_new_tokens (100000) exceeds the model's context" in done.stderr


def test_overlong_prompts_can_be_refused_naming_the_file_and_record(tiny_model_dir, tmp_path):
    refused = cli(tiny_model_dir, tmp_path / "a", "data.max_prompt_length=8", "data.overlong_prompts=error")
    assert refused.returncode == 2 and "longer than data.max_prompt_length=8" in refused.stderr
    assert "calm-prompts.jsonl" in refused.stderr and "record 1 (" in refused.stderr


def test_an_empty_prompt_file_is_refused(tiny_model_dir, tmp_path):
    empty = tmp_path / "prompts.jsonl"
    empty.write_text("")
    done = cli(tiny_model_dir, tmp_path / "run", f"data.train={empty}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "prompts.jsonl" in done.stderr
