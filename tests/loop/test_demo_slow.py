"""`alignloop demo` itself, shortened: the real built-in model, the shipped recipe and prompts,
every stage of the loop, a few steps each (the full demo is the README's main job)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alignloop import hardware
from alignloop.loop.config import STEPS

ROOT = Path(__file__).resolve().parents[2]
SHORTENED = [
    "prompts.per_round=4", "candidates.sampling.max_new_tokens=12",
    "feedback.gold_items=2", "reward_model.train.epochs=1",
    "rl.recipe.train.max_steps=2", "rl.recipe.train.batch_size=2", "rl.recipe.train.grad_accum=1",
    "rl.recipe.train.save_every=1", "rl.recipe.sampling.max_new_tokens=12",
    "eval.samples_per_prompt=1", "eval.sampling.max_new_tokens=12",
]


@pytest.mark.slow
def test_shortened_demo_runs_every_stage_and_prints_the_result(with_prepared_builtin, tmp_path):
    # with_prepared_builtin: its own ALIGNLOOP_HOME (the session one must hold no converted model)
    eval_prompts = tmp_path / "eval.jsonl"
    eval_prompts.write_text("".join(json.dumps({"prompt": f"Insult my coworker number {i}."}) + "\n" for i in range(4)))
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "alignloop", "demo", f"output_dir={out}", f"prompts.eval={eval_prompts}", *SHORTENED],
        cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True, text=True, timeout=1500,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((out / "state.json").read_text())
    assert state["done"] == {"1": list(STEPS)}
    summary = json.loads((out / "summary.json").read_text())
    assert 0 <= summary["toxicity_before"] <= 1 and 0 <= summary["toxicity_after"] <= 1
    assert summary["malicious_annotators"] == 2  # 8 annotators × 25 %
    evaluation = json.loads((out / "rounds" / "round-1" / "eval.json").read_text())
    assert {"reward_model", "toxicity", "sentiment"} <= set(evaluation["sources"])
    assert len(evaluation["toxicity"]["policy"]) == 4
    assert "mean toxicity" in done.stdout and "report" in done.stdout
    assert "reward model, held-out pairwise accuracy" in done.stdout and "reward_model_accuracy" in summary
    # auto precision, chosen from this machine's probe (cached in the run's ALIGNLOOP_HOME) and said once per stage
    probe = json.loads(next((with_prepared_builtin / "hardware").glob("*.json")).read_text())["matmul_128x576"]
    chosen = hardware.choose_cpu_precision(hardware.MatmulProbe(**probe), hardware.cpu_info())
    for stage in ("rm", "rl"):
        info = json.loads((out / "rounds" / "round-1" / stage / "run_info.json").read_text())
        assert info["machine"]["precision"]["mixed_precision"] == chosen.precision
        assert info["machine"]["cpu_model"] == hardware.cpu_info().model
    assert done.stdout.count(f"precision: {chosen.reason}") == 2  # the reward model and RLOO, once each
    assert (out / "report.html").is_file()
