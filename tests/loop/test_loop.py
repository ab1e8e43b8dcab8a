"""The whole loop on a tiny model, through the real feedback store and HTTP API: two rounds,
a loop killed mid-round that resumes at the step it stopped in, GRPO, RLOO and DPO rounds, and a
round that waits for people in the web app."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from alignloop.engine import KILL_AT_STEP_ENV
from alignloop.feedback.models import Campaign, Candidate, Item, Judgement, User
from alignloop.loop.config import STEPS
from cli_in_process import alignloop_in_process

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "loop-tiny-cpu.yaml"


def loop(tiny_model_dir, out: Path, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """`alignloop loop` in this process; in a fresh one with `env_extra` (a run killed at a step)."""
    command = ["loop", "--config", str(RECIPE), f"model.name={tiny_model_dir}", f"output_dir={out}", *args]
    if env_extra is None:
        return alignloop_in_process(*command)
    env = dict(os.environ, HF_HUB_OFFLINE="1", **env_extra)
    return subprocess.run([sys.executable, "-m", "alignloop", *command], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


def counts(out: Path) -> dict[str, tuple[int, int]]:
    """Per campaign: (candidates, judgements) of its regular (not gold) items in the loop's database."""
    engine = create_engine(f"sqlite:///{out / 'feedback.db'}")
    with Session(engine) as session:
        result = {}
        for campaign in session.scalars(select(Campaign)):
            regular = select(Item.id).where(Item.campaign_id == campaign.id, ~Item.is_gold)
            candidates = session.scalar(select(func.count()).where(Candidate.item_id.in_(regular))) or 0
            judged = session.scalar(select(func.count()).where(Judgement.item_id.in_(regular))) or 0
            result[campaign.name] = (candidates, judged)
    engine.dispose()
    return result


def test_two_rounds_run_end_to_end_through_the_real_store(tiny_model_dir, tmp_path):
    out = tmp_path / "loop"
    # Ranking tasks here; the resume test below runs pairwise ones.
    done = loop(tiny_model_dir, out, "feedback.task=ranking", "candidates.k=3")
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((out / "state.json").read_text())
    assert state["done"] == {"1": list(STEPS), "2": list(STEPS)}
    # 6 prompts x K=3 candidates, each item ranked by overlap=2 annotators, in both rounds.
    assert counts(out) == {"loop-round-1": (18, 12), "loop-round-2": (18, 12)}
    round1 = state["artifacts"]["1"]
    rankings = [json.loads(line) for line in Path(round1["preferences"]).open()]
    assert rankings and all(len(r["responses"]) == 3 for r in rankings)
    assert state["artifacts"]["2"]["preference_records"] > 0
    summary = json.loads((out / "rounds" / "round-2" / "summary.json").read_text())
    assert summary["round"] == 2 and summary["judgements"] >= 12 and summary["candidates"] == 18
    assert Path(round1["policy_adapter"], "adapter_config.json").is_file()
    rl2 = (out / "rounds" / "round-2" / "rl" / "config.yaml").read_text()
    assert f"adapter: {round1['policy_adapter']}" in rl2  # round 2 continued round 1's policy
    for number in ("1", "2"):
        evaluation = json.loads((out / "rounds" / f"round-{number}" / "eval.json").read_text())
        assert {"reward_model", "toxicity"} <= set(evaluation["sources"])
        assert "relative_reduction" in evaluation["toxicity"]
        annotators = json.loads((out / "rounds" / f"round-{number}" / "annotators.json").read_text())
        assert annotators["malicious"] == 1 and len(annotators["rows"]) == 4
    assert (out / "report.html").is_file()


def test_a_killed_loop_resumes_at_the_step_it_stopped_in(tiny_model_dir, tmp_path):
    out = tmp_path / "loop"
    # The reward model's trainer is the first trainer of the loop: kill the whole process after its step 2.
    # Three judges per pair: with two, which annotators meet on which pair varies from run to run
    # (they work concurrently), and now and then every pair of the round has no majority.
    settings = ("rounds=1", "reward_model.train.save_every=1", "feedback.overlap=3")
    killed = loop(tiny_model_dir, out, *settings, env_extra={KILL_AT_STEP_ENV: "2"})
    assert killed.returncode == -signal.SIGKILL
    state = json.loads((out / "state.json").read_text())
    assert state["done"] == {"1": ["generate", "feedback", "export"]}
    before = counts(out)
    resumed = loop(tiny_model_dir, out, *settings, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((out / "state.json").read_text())["done"] == {"1": list(STEPS)}
    assert counts(out) == before  # nothing generated or judged twice
    rm_steps = [json.loads(line)["step"] for line in (out / "rounds" / "round-1" / "rm" / "metrics.jsonl").open()
                if "train/loss" in line]
    assert rm_steps == [1, 2, 3]  # resumed from the checkpoint of step 2


def test_a_fresh_loop_refuses_to_overwrite_an_existing_one(tiny_model_dir, tmp_path):
    out = tmp_path / "loop"
    out.mkdir()
    (out / "state.json").write_text('{"done": {}, "artifacts": {}}')
    done = loop(tiny_model_dir, out)
    assert done.returncode == 2 and "pass --resume" in done.stderr and "Traceback" not in done.stderr


TINY_TRAIN = "{max_steps: 1, batch_size: 2, lr: 1.0e-3, progress: false, eval_on_start: false}"


def test_grpo_rloo_and_dpo_rounds_update_the_policy(tiny_model_dir, tmp_path):
    group_recipe = f"rl.recipe={{group: {{group_size: 2}}, sampling: {{max_new_tokens: 8, batch_size: 16}}, train: {TINY_TRAIN}}}"
    recipes = {"grpo": group_recipe, "rloo": group_recipe, "dpo": f"rl.recipe={{train: {TINY_TRAIN}}}"}
    method_settings = {"grpo": ["group_size: 2", "advantage: grpo"], "rloo": ["group_size: 2", "advantage: rloo"],
                       "dpo": ["beta:"]}
    for method, recipe in recipes.items():
        out = tmp_path / method
        # aggregation=all: 6 items judged twice can all end without a majority, and this test is about the RL step.
        done = loop(tiny_model_dir, out, "rounds=1", f"rl.method={method}", recipe, "feedback.aggregation=all")
        assert done.returncode == 0, done.stderr[-3000:]
        state = json.loads((out / "state.json").read_text())
        assert state["done"] == {"1": list(STEPS)}
        run_config = (out / "rounds" / "round-1" / "rl" / "config.yaml").read_text()
        assert all(setting in run_config for setting in method_settings[method])  # the method's own recipe ran
        assert Path(state["artifacts"]["1"]["policy_adapter"], "adapter_model.safetensors").is_file()
        assert "reward_model" in json.loads((out / "rounds" / "round-1" / "eval.json").read_text())["sources"]


def test_a_campaign_round_waits_for_people_and_resumes_when_they_have_answered(tiny_model_dir, tmp_path):
    from alignloop.loop import annotators as scripted
    from alignloop.feedback import service
    from alignloop.feedback.database import make_engine, make_session_factory, transaction
    from alignloop.loop.server import feedback_server

    out = tmp_path / "loop"
    waiting = ("rounds=1", "feedback.source=campaign", "feedback.poll_seconds=0.2", "feedback.wait_timeout_s=1")
    timed_out = loop(tiny_model_dir, out, *waiting)
    assert timed_out.returncode != 0 and "Traceback" not in timed_out.stderr
    assert "0 of 12 judgements" in timed_out.stderr and "resume the loop later" in timed_out.stderr
    assert json.loads((out / "state.json").read_text())["done"] == {"1": ["generate"]}

    # People answer in the web app (here: two scripted evaluators through the same HTTP API).
    db_url = f"sqlite:///{out / 'feedback.db'}"
    store = make_session_factory(make_engine(db_url))
    settings = scripted.AnnotatorsConfig(count=2, preference={"type": "toxicity"}, noise=0.0)  # they agree
    with transaction(store) as session:
        campaign_id = service.campaign_by_name(session, "loop-round-1").id
        team = scripted.create_annotators(session, settings, prefix="person")
    with feedback_server(db_url) as base_url:
        stats = scripted.run_annotators(base_url, team, campaign_id, settings)
    assert stats.judgements == 12  # 6 prompts, one pair each, overlap 2

    resumed = loop(tiny_model_dir, out, *waiting, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    state = json.loads((out / "state.json").read_text())
    assert state["done"] == {"1": list(STEPS)}
    assert state["artifacts"]["1"]["preference_records"] == 6


def test_a_stage_recipe_merges_the_sections_both_give_with_the_loops_keys_winning():
    from alignloop.loop.recipes import stage_recipe

    base = {"group": {"group_size": 4, "advantage": "grpo"}, "train": {"lr": 1e-4, "seed": 7}, "sampling": {"top_k": 5}}
    recipe = stage_recipe(base, group={"advantage": "rloo"}, train={"seed": 1}, reward={"type": "reward_model"})
    assert recipe == {"group": {"group_size": 4, "advantage": "rloo"}, "train": {"lr": 1e-4, "seed": 1},
                      "sampling": {"top_k": 5}, "reward": {"type": "reward_model"}}
    assert base["group"]["advantage"] == "grpo"  # the loop's config is not changed


def test_a_round_with_a_reward_model_ensemble_watches_it_and_reports_its_disagreement(tiny_model_dir, tmp_path):
    out = tmp_path / "loop"
    group_recipe = (f"rl.recipe={{group: {{group_size: 2}}, reward: {{aggregate: mean_minus_std, penalty: 1.0}}, "
                    f"sampling: {{max_new_tokens: 8, batch_size: 16}}, train: {TINY_TRAIN}}}")
    done = loop(tiny_model_dir, out, "rounds=1", "rl.method=rloo", group_recipe, "rl.stop_on_overoptimisation=true",
                "reward_model.reward={ensemble: 3, backbone: frozen, normalization_samples: 8}",
                "feedback.aggregation=all")
    assert done.returncode == 0, done.stderr[-3000:]
    run_config = (out / "rounds" / "round-1" / "rl" / "config.yaml").read_text()
    assert "stop_on_overoptimisation: true" in run_config and "aggregate: mean_minus_std" in run_config
    metrics = [json.loads(line) for line in (out / "rounds" / "round-1" / "rl" / "metrics.jsonl").open()]
    assert any("overoptimisation/disagreement_ratio" in record for record in metrics)
    spread = json.loads((out / "rounds" / "round-1" / "eval.json").read_text())["sources"]["reward_model"]["disagreement"]
    assert spread["policy_mean"] > 0 and spread["reference_mean"] > 0  # three members never agree exactly
    assert "ensemble disagreement" in (out / "report.html").read_text()


def test_active_selection_keeps_the_items_the_last_ensemble_disagrees_on_most(tiny_model_dir, tmp_path):
    out = tmp_path / "loop"
    done = loop(tiny_model_dir, out, "feedback.selection=uncertainty", "feedback.selection_pool=2",
                "reward_model.reward={ensemble: 3, backbone: frozen, normalization_samples: 8}",
                "feedback.aggregation=all")
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((out / "state.json").read_text())["artifacts"]
    assert (state["1"]["selection"], state["1"]["pool_items"], state["1"]["selected_items"]) == ("uniform", 12, 6)
    assert "round 1 has none" in state["1"]["selection_reason"]
    assert state["2"]["selection"] == "uncertainty" and state["2"]["selected_items"] == 6
    engine = create_engine(f"sqlite:///{out / 'feedback.db'}")
    with Session(engine) as session:
        for number in (1, 2):
            campaign = session.scalar(select(Campaign).where(Campaign.name == f"loop-round-{number}"))
            items = [item for item in campaign.items if not item.is_gold]
            judged = set(session.scalars(select(Judgement.item_id).where(Judgement.campaign_id == campaign.id)))
            kept = [item for item in items if not item.held_back]
            assert len(items) == 12 and len(kept) == 6
            assert {item.id for item in items if item.held_back}.isdisjoint(judged)  # never shown to anyone
            assert {item.id for item in kept} <= judged
            scores = [item.selection_score for item in items]
            if number == 1:
                assert scores == [None] * 12
            else:  # greedy: every kept item scores at least as high as every held-back one
                assert min(item.selection_score for item in kept) >= max(
                    item.selection_score for item in items if item.held_back)
                assert state["2"]["selection_score_selected_mean"] > state["2"]["selection_score_held_back_mean"]
                summary = json.loads((out / "rounds" / "round-2" / "summary.json").read_text())
                assert summary["pool_items"] == 12 and summary["selected_items"] == 6
    engine.dispose()


def test_an_ai_judge_annotates_through_the_api_and_routing_splits_the_items_with_people(tiny_model_dir, tmp_path):
    out = tmp_path / "loop"
    done = loop(tiny_model_dir, out, "rounds=2", f"feedback.judges=[{{type: local, model: {tiny_model_dir}}}]",
                "feedback.route_to_people=4", "reward_model.reward={ensemble: 3, backbone: frozen, normalization_samples: 8}",
                "feedback.aggregation=all")
    assert done.returncode == 0, done.stderr[-3000:]
    engine = create_engine(f"sqlite:///{out / 'feedback.db'}")
    with Session(engine) as session:
        for number in (1, 2):
            campaign = session.scalar(select(Campaign).where(Campaign.name == f"loop-round-{number}"))
            audience = {item.id: item.audience for item in campaign.items if not item.is_gold}
            assert sorted(audience.values()) == ["judges"] * 2 + ["people"] * 4  # 6 prompts, 4 for people
            judge = session.scalar(select(User).where(User.username == f"loop-round-{number}-judge-1"))
            assert judge.is_ai_judge
            by_judge = set(session.scalars(select(Judgement.item_id).where(Judgement.evaluator_id == judge.id)))
            by_people = set(session.scalars(select(Judgement.item_id).where(Judgement.campaign_id == campaign.id,
                                                                             Judgement.evaluator_id != judge.id)))
            assert {i for i, a in audience.items() if a == "judges"} <= by_judge  # every judge item, judged
            assert not by_judge & {i for i, a in audience.items() if a == "people"}
            assert not by_people & {i for i, a in audience.items() if a == "judges"}
    engine.dispose()
    state = json.loads((out / "state.json").read_text())["artifacts"]
    assert state["1"]["judgements_by_loop-round-1-judge-1"] >= 2
    rows = json.loads((out / "rounds" / "round-2" / "annotators.json").read_text())["rows"]
    assert [row["kind"] for row in rows].count("judge") == 1
    assert "BALD over the reward model's members" in done.stdout
    summary = json.loads((out / "rounds" / "round-2" / "summary.json").read_text())
    assert summary["judgements_by_people"] + summary["judgements_by_ai_judges"] == summary["judgements"]
    assert summary["judgements_by_ai_judges"] >= 2
    report = (out / "report.html").read_text()  # per round: labels by people and by judges, the judge's row
    assert "judgements_by_ai_judges" in report and "loop-round-2-judge-1" in report


def test_a_dpo_round_refuses_to_stop_on_an_alarm_nothing_would_ring():
    from pydantic import ValidationError

    from alignloop.loop.config import RLSettings

    with pytest.raises(ValidationError, match="dpo trains without a reward model"):
        RLSettings(method="dpo", stop_on_overoptimisation=True)


def test_a_loop_refuses_to_stop_on_an_alarm_without_an_ensemble_to_ring_it():
    from alignloop.config import ConfigError, load_config
    from alignloop.loop.config import LoopConfig

    with pytest.raises(ConfigError, match="set reward_model.reward.ensemble to 2 or more"):
        load_config(LoopConfig, RECIPE, ["rl.stop_on_overoptimisation=true"])
