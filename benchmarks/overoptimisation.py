"""Reward-model over-optimisation: gold and proxy reward against KL, one reward model vs ensembles.

    alignloop demo output_dir=runs/demo          # judgements from scripted annotators (toxicity gold)
    python benchmarks/overoptimisation.py runs/demo --seeds 0 1 2 --steps 24

For each seed, a single reward model and a `--members`-member ensemble (`reward.ensemble`, each
member on its own bootstrap of the judgements) learn the loop's round-1 judgements with the loop's
own reward-model recipe. RLOO then trains the built-in model for `--steps` steps with a weak KL
penalty (`--kl-coef`) and no KL stop, once per arm:

  single          the single reward model (the ensemble rides along with weight 0, so that its
                  disagreement is watched as in the other arms)
  mean            the ensemble's mean
  min             its worst member
  mean_minus_std  its mean minus `--penalty` times its members' spread

Every arm's reward is a mix whose weight-0 part `gold` (1 - alt-profanity-check's toxicity, the
scorer the annotators followed) is logged each step and never trained on. Per step: the proxy (the
reward the arm trains on), gold, the KL to the start, the ensemble's disagreement ratio and the
over-optimisation alarm (alignloop.evaluation.overoptimisation).

The gold curve is smoothed by a centred 3-step mean before its peak is read (32 replies a step
are noisy). Per arm and seed: the peak gold and its KL, whether gold then fell by more than a
tenth of its gain (and the KL at the peak if so), and the step the alarm rang against the first
step gold was a tenth of its gain below the peak. Writes overoptimisation.json / .png under
benchmarks/results/<cpu>/ (or `--out`); the reward models and runs go under `--work`.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from roofline import cpu_description, results_dir  # noqa: E402

ARMS = ("single", "mean", "min", "mean_minus_std")
FALL = 0.1  # gold "has fallen" once it is this share of its gain below its peak


# ------------------------------------------------------------------ pure: reading the curves
def smoothed(values: list[float]) -> list[float]:
    """Centred 3-point mean (2 points at the ends)."""
    return [sum(values[max(0, i - 1):i + 2]) / len(values[max(0, i - 1):i + 2]) for i in range(len(values))]


def curve_summary(steps: list[dict[str, float]]) -> dict[str, Any]:
    """Peak, fall and alarm of one arm's per-step records ({step, gold, proxy, kl, alarm})."""
    gold = smoothed([row["gold"] for row in steps])
    peak = max(range(len(gold)), key=gold.__getitem__)
    gain = gold[peak] - gold[0]
    fell_at = next((i for i in range(peak + 1, len(gold)) if gold[i] < gold[peak] - FALL * gain), None)
    alarm_at = next((i for i, row in enumerate(steps) if row.get("alarm")), None)
    return {
        "gold_start": gold[0], "gold_peak": gold[peak], "peak_step": steps[peak]["step"], "kl_at_peak": steps[peak]["kl"],
        "gold_end": gold[-1], "kl_end": steps[-1]["kl"],
        "gold_fell": fell_at is not None, "fell_step": None if fell_at is None else steps[fell_at]["step"],
        "alarm_step": None if alarm_at is None else steps[alarm_at]["step"],
        # The goal: the alarm rang before gold lost a tenth of its gain (and it did ring if gold fell).
        "alarm_in_time": None if fell_at is None else alarm_at is not None and alarm_at <= fell_at,
    }


def step_records(metrics_file: Path) -> list[dict[str, float]]:
    """{step, proxy, gold, kl, disagreement_ratio, alarm} of every training step of an RL run."""
    rows = []
    for line in metrics_file.read_text().splitlines():
        record = json.loads(line)
        if "reward/gold" not in record:
            continue
        rows.append({"step": record["step"], "proxy": record["reward/proxy"], "gold": record["reward/gold"],
                     "kl": record["kl/sequence"], "disagreement_ratio": record.get("overoptimisation/disagreement_ratio"),
                     "alarm": bool(record.get("overoptimisation/alarm"))})
    return rows


# ------------------------------------------------------------------ the runs
def reward_model_recipe(loop: Any, loop_dir: Path, out: Path, seed: int, members: int) -> dict[str, Any]:
    from alignloop.loop.steps import stage_recipe

    model = {"name": loop.model.name, **loop.reward_model.get("model", {})}
    data = {"train": [str(next((loop_dir / "rounds" / "round-1" / "feedback").glob("*.jsonl")))], "eval_every_nth": 5,
            **loop.reward_model.get("data", {})}
    return stage_recipe(loop.reward_model, model=model, data=data, reward={"ensemble": members},
                        train={"output_dir": str(out), "seed": seed, "progress": False})


def arm_reward(arm: str, single: str, ensemble: str, penalty: float) -> dict[str, Any]:
    """The arm's mix: its proxy (weight 1), for `single` the ensemble as a watched weight-0 part, gold (weight 0)."""
    gold = {"type": "toxicity", "name": "gold", "weight": 0.0}
    if arm == "single":
        proxy = {"type": "reward_model", "path": single, "name": "proxy"}
        watched = {"type": "reward_model", "path": ensemble, "name": "ensemble", "weight": 0.0}
        return {"type": "mix", "sources": [proxy, watched, gold]}
    proxy = {"type": "reward_model", "path": ensemble, "name": "proxy", "aggregate": arm,
             **({"penalty": penalty} if arm == "mean_minus_std" else {})}
    return {"type": "mix", "sources": [proxy, gold]}


def rl_recipe(loop: Any, reward: dict[str, Any], out: Path, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from alignloop.loop.steps import stage_recipe

    recipe = loop.rl.recipe
    data = {"train": loop.prompts.train, "max_prompt_length": loop.prompts.max_prompt_length}
    group = {"advantage": "rloo", "kl_coef": args.kl_coef, "kl_stop": None}
    train = {"output_dir": str(out), "seed": seed, "max_steps": args.steps, "save_every": args.steps, "progress": False}
    return stage_recipe(recipe, model=loop.model.model_dump(), data=data, reward=reward, group=group, train=train)


def run_seed(loop: Any, loop_dir: Path, out: Path, seed: int, args: argparse.Namespace, console: Console) -> dict:
    from alignloop.algorithms.grpo import GRPOConfig, run_grpo
    from alignloop.algorithms.reward import RewardConfig, run_reward

    timings: dict[str, float] = {}
    models = {}
    for name, members in (("single", 1), ("ensemble", args.members)):
        started = time.perf_counter()
        recipe = reward_model_recipe(loop, loop_dir, out / f"rm-{name}", seed, members)
        models[name] = str(run_reward(RewardConfig.model_validate(recipe)).final_model_dir)
        timings[f"rm_{name}_s"] = time.perf_counter() - started
    arms = {}
    for arm in args.arms:
        started = time.perf_counter()
        recipe = rl_recipe(loop, arm_reward(arm, models["single"], models["ensemble"], args.penalty), out / arm, seed, args)
        run_grpo(GRPOConfig.model_validate(recipe))
        timings[f"rl_{arm}_s"] = time.perf_counter() - started
        steps = step_records(out / arm / "metrics.jsonl")
        arms[arm] = {"steps": steps, **curve_summary(steps)}
        console.print(f"seed {seed} {arm}: {json.dumps({k: v for k, v in arms[arm].items() if k != 'steps'})}")
    return {"arms": arms, "timings_s": timings}


# ------------------------------------------------------------------ output
def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = list(results["seeds"])
    figure, axes = plt.subplots(len(seeds), 2, figsize=(11, 3.6 * len(seeds)), squeeze=False)
    for row, seed in zip(axes, seeds):
        for arm, entry in results["seeds"][seed]["arms"].items():
            kl = [step["kl"] for step in entry["steps"]]
            line, = row[0].plot(kl, smoothed([step["gold"] for step in entry["steps"]]), marker=".", label=arm)
            row[1].plot(kl, [step["proxy"] for step in entry["steps"]], marker=".", label=arm, color=line.get_color())
            if entry["alarm_step"] is not None:
                at = next(i for i, step in enumerate(entry["steps"]) if step["step"] == entry["alarm_step"])
                row[0].plot(kl[at], smoothed([s["gold"] for s in entry["steps"]])[at], "x", ms=12, color=line.get_color())
        row[0].set(title=f"seed {seed}: gold (1 - toxicity, 3-step mean; x = alarm)", xlabel="KL (nats per reply)")
        row[1].set(title=f"seed {seed}: proxy (the reward trained on)", xlabel="KL (nats per reply)")
        row[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def print_table(results: dict[str, Any], console: Console) -> None:
    table = Table(title="gold peak and the alarm, per seed and arm")
    for column in ("seed", "arm", "gold start", "gold peak", "KL at peak", "gold fell", "KL end", "peak step",
                   "fell step", "alarm step", "alarm in time"):
        table.add_column(column)
    for seed, entry in results["seeds"].items():
        for arm, s in entry["arms"].items():
            table.add_row(str(seed), arm, f"{s['gold_start']:.3f}", f"{s['gold_peak']:.3f}", f"{s['kl_at_peak']:.2f}",
                          str(s["gold_fell"]), f"{s['kl_end']:.2f}", str(s["peak_step"]), str(s["fell_step"]),
                          str(s["alarm_step"]), str(s["alarm_in_time"]))
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("loop_dir", type=Path, help="a finished loop folder (alignloop demo's): its config.yaml and round-1 feedback")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--penalty", type=float, default=1.0, help="λ of mean_minus_std")
    parser.add_argument("--kl-coef", type=float, default=0.02, help="β: weak, so that the policy can over-optimise")
    parser.add_argument("--out", type=Path, default=None, help="the json and png (default: benchmarks/results/<cpu>/)")
    parser.add_argument("--work", type=Path, default=Path("runs/overoptimisation"), help="the reward models and RL runs")
    args = parser.parse_args()

    from alignloop.loop.config import LoopConfig

    console = Console()
    loop = LoopConfig.model_validate(yaml.safe_load((args.loop_dir / "config.yaml").read_text()))
    out = args.out or results_dir()
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {**cpu_description(), "loop_dir": str(args.loop_dir), "settings": vars(args) | {
        "loop_dir": str(args.loop_dir), "out": str(out), "work": str(args.work)}, "seeds": {}}
    for seed in args.seeds:
        results["seeds"][seed] = run_seed(loop, args.loop_dir, args.work / f"seed-{seed}", seed, args, console)
        results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        (out / "overoptimisation.json").write_text(json.dumps(results, indent=1))
        plot(results, out / "overoptimisation.png")
    print_table(results, console)
    console.print(f"wrote {out / 'overoptimisation.json'} and {out / 'overoptimisation.png'}")


if __name__ == "__main__":
    main()
