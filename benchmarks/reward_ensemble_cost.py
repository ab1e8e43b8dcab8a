"""What K reward-model members cost: training step time, scoring time and peak memory.

    python benchmarks/reward_ensemble_cost.py                     # lora-1 lora-3 lora-5 heads-5
    python benchmarks/reward_ensemble_cost.py --arms lora-1 lora-3 --steps 8

Each arm trains the built-in model's reward model on HH-RLHF harmless pairs from
../shared/data (`recipes/rm-hh-smollm2.yaml`: LoRA r = 16, batch 8, `mixed_precision: auto`) for
`--steps` steps, in a process of its own so that its peak RSS is its own:

  lora-K   K members, each its own LoRA adapter on the one shared base, with its own head
           (reward.ensemble: K on a backbone that trains; lora-1 is the plain LoRA reward model)
  heads-K  K heads on the frozen base's features (reward.backbone: frozen); its step time counts
           the features computed in the first epoch, so it is the time of an epoch's first steps

Then it scores `--replies` replies (the pairs' chosen replies, to several prompts), the way the
RL step does (`RewardScorer`, every member), median of 3 calls. Step time: the median over
steps 2..N of the interval between logged steps. Writes reward_ensemble_cost.json / .md under
benchmarks/results/<cpu>/.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from roofline import cpu_description, results_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "rm-hh-smollm2.yaml"


def arm_overrides(arm: str) -> list[str]:
    """Config overrides of an arm named lora-K or heads-K."""
    kind, _, count = arm.partition("-")
    if kind not in ("lora", "heads") or not count.isdigit() or int(count) < 1:
        raise SystemExit(f"an arm is lora-K or heads-K, got {arm!r}")
    backbone = "frozen" if kind == "heads" else "trained"
    return [f"reward.ensemble={int(count)}", f"reward.backbone={backbone}"]


def run_arm(arm: str, steps: int, replies: int, work: Path) -> dict:
    """Train and score one arm in this process; its figures."""
    import torch

    from alignloop.algorithms.reward import RewardConfig, run_reward
    from alignloop.config import load_config
    from alignloop.data import read_preference_data
    from alignloop.models.reward_scoring import RewardScorer

    config = load_config(RewardConfig, RECIPE, [
        *arm_overrides(arm), f"train.output_dir={work / arm}", f"train.max_steps={steps}", "train.log_every=1",
        "train.eval_on_start=false", "train.save_every=null", "train.progress=false",
        "data.eval_every_nth=100", "reward.normalization_samples=32"])
    result = run_reward(config)
    times = [json.loads(line)["time"] for line in (work / arm / "metrics.jsonl").read_text().splitlines()
             if '"train/loss"' in line]
    step_seconds = statistics.median(b - a for a, b in zip(times, times[1:]))
    pairs = read_preference_data(config.data).train.pairs[:replies]
    scorer = RewardScorer.load(str(result.final_model_dir), dtype="float32", batch_size=16)
    prompts, answers = [pair.prompt for pair in pairs], [pair.chosen for pair in pairs]
    calls = []
    for _ in range(3):
        start = time.perf_counter()
        scorer.member_scores(prompts, answers)
        calls.append(time.perf_counter() - start)
    parameters = sum(p.numel() for p in scorer.model.parameters())
    return {"arm": arm, "steps": steps, "step_seconds": step_seconds, "score_seconds": statistics.median(calls),
            "replies": len(pairs), "parameters": parameters, "threads": torch.get_num_threads(),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def markdown(results: dict) -> str:
    base = next((row for row in results["arms"] if row["arm"] == "lora-1"), None)
    lines = [f"CPU: {results['cpu_model']} ({', '.join(results['cpu_flags'])}), {results['arms'][0]['threads']} threads",
             "", "| arm | train s/step | × lora-1 | score s / " + str(results["arms"][0]["replies"]) +
             " replies | × lora-1 | peak RSS (MiB) | parameters |", "|---|---:|---:|---:|---:|---:|---:|"]
    for row in results["arms"]:
        ratio = lambda key: f"{row[key] / base[key]:.2f}" if base else "–"  # noqa: E731
        lines.append(f"| {row['arm']} | {row['step_seconds']:.2f} | {ratio('step_seconds')} | {row['score_seconds']:.2f} "
                     f"| {ratio('score_seconds')} | {row['peak_rss_mib']:.0f} | {row['parameters'] / 1e6:.1f} M |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", nargs="+", default=["lora-1", "lora-3", "lora-5", "heads-5"])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--replies", type=int, default=64)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process: one arm, json to stdout
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_arm(args.one, args.steps, args.replies, args.work)))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="alignloop-ensemble-cost-") as work:
        for arm in args.arms:
            done = subprocess.run([sys.executable, __file__, "--one", arm, "--steps", str(args.steps), "--replies",
                                   str(args.replies), "--work", work], capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{arm}: {rows[-1]['step_seconds']:.2f} s/step, scoring {rows[-1]['score_seconds']:.2f} s, "
                  f"peak RSS {rows[-1]['peak_rss_mib']:.0f} MiB", flush=True)
    results = {**cpu_description(), "settings": vars(args) | {"work": None}, "arms": rows}
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    (out / "reward_ensemble_cost.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "reward_ensemble_cost.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
