"""Best-of-n sampling: the choice by hand, and `alignloop best-of-n` on a tiny model with a
reward-model ensemble's conservative aggregate choosing."""

from __future__ import annotations

import json

import pytest
import torch

from alignloop.algorithms.best_of_n import BestOfNConfig, best_indices, run_best_of_n
from alignloop.algorithms.reward import RewardConfig, run_reward
from alignloop.config import load_config
from alignloop.data import SFTExample, read_records
from alignloop.models.reward_scoring import RewardScorer
from cli_in_process import alignloop_in_process

PROMPTS = "recipes/data/calm-prompts-eval.jsonl"


def test_the_best_of_each_group_by_hand():
    assert best_indices([0.1, 0.9, 0.5, -1.0, -2.0, -0.5], 3) == [1, 5]
    assert best_indices([0.2, 0.2, 0.1, 0.3], 2) == [0, 3]  # equals: the first
    assert best_indices([0.4], 1) == [0]
    with pytest.raises(ValueError, match="5 rewards do not make groups of 2"):
        best_indices([0.0] * 5, 2)


def test_best_of_n_keeps_each_prompts_highest_reward_by_the_ensembles_worst_member(tiny_model_dir, tmp_path):
    rm = run_reward(load_config(RewardConfig, "recipes/rm-tiny-cpu.yaml", [
        f"model.name={tiny_model_dir}", f"train.output_dir={tmp_path / 'rm'}", "train.max_steps=4",
        "reward.backbone=frozen", "reward.ensemble=3"])).final_model_dir
    out = tmp_path / "best.jsonl"
    config = load_config(BestOfNConfig, None, [
        f"policy={tiny_model_dir}", f"prompts={PROMPTS}", "n=3", f"output={out}", "sampling.max_new_tokens=8",
        f"reward={{type: reward_model, path: {rm}, aggregate: min}}", "progress=false"])
    summary = run_best_of_n(config)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    prompts = [json.loads(line)["prompt"] for line in open(PROMPTS)]
    assert [row["prompt"] for row in rows] == prompts and summary["prompts"] == len(prompts)
    scorer = RewardScorer.load(str(rm))
    for row in rows:
        assert len(row["candidates"]) == 3 and row["n"] == 3
        rewards = [candidate["reward"] for candidate in row["candidates"]]
        assert row["reward"] == max(rewards) and row["response"] == row["candidates"][rewards.index(max(rewards))]["response"]
        # The reward is the members' minimum, and each candidate carries their spread.
        members = scorer.member_scores([row["prompt"]] * 3, [c["response"] for c in row["candidates"]])
        torch.testing.assert_close(torch.tensor(rewards), members.min(-1).values, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(torch.tensor([c["disagreement"] for c in row["candidates"]]),
                                   members.std(-1, correction=0), atol=1e-5, rtol=1e-5)
    assert summary["kept_reward_mean"] >= summary["candidate_reward_mean"]
    assert summary["kl_bound"] == pytest.approx(1.0986 - 2 / 3, abs=1e-4)  # log 3 - 2/3
    # The kept rows are SFT data as they stand.
    assert [record.response for record in read_records(out, SFTExample)] == [row["response"] for row in rows]


def test_the_command_runs_the_recipe_and_names_a_bad_key(tiny_model_dir, tmp_path):
    out = tmp_path / "best.jsonl"
    done = alignloop_in_process("best-of-n", f"policy={tiny_model_dir}", f"prompts={PROMPTS}", "n=2",
                                "reward.type=toxicity", f"output={out}", "sampling.max_new_tokens=4", "progress=false")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "best-of-2 on" in done.stdout and len(out.read_text().splitlines()) == len(open(PROMPTS).readlines())
    bad = alignloop_in_process("best-of-n", f"policy={tiny_model_dir}", f"prompts={PROMPTS}", "reward.type=toxicity",
                               "n=0")
    assert bad.returncode != 0 and "key 'n': Input should be greater than or equal to 1" in bad.stdout + bad.stderr
