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

`--watch M` trains one more ensemble of M members with a seed of its own, which every arm carries
as a weight-0 part named `watch`: the alarm then reads the disagreement of members the policy does
not climb (a `min` or `mean_minus_std` reward drives its own members' spread down).

Every arm's reward is a mix whose weight-0 part `gold` (the scorer the loop's scripted annotators
followed: for the demo, 1 - alt-profanity-check's toxicity) is logged each step and never trained
on. `--judgements N` trains the reward models on N of the judgements, drawn per seed. Per step: the proxy (the
reward the arm trains on), gold, the KL to the start, the ensemble's disagreement ratio and the
over-optimisation alarm (alignloop.evaluation.overoptimisation). The proxy is the reward model's
score before the missing-EOS penalty; the alarm watches the reward with it, as training does.

The gold curve is smoothed by a centred 3-step mean before its peak is read (32 replies a step
are noisy). Per arm and seed: the peak gold and its KL, whether gold then fell by more than a
tenth of its gain (and the KL at the peak if so), and the step the alarm rang against the first
step gold was a tenth of its gain below the peak. Writes overoptimisation.json / .png under
benchmarks/results/<cpu>/ (or `--out`); the reward models and runs go under `--work`.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
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


def peak_fall_alarm(gold: list[float], points: list[dict[str, Any]]) -> dict[str, Any]:
    """What both over-optimisation benchmarks read from an arm's gold curve and its points'
    `alarm` flags: the peak, the first point a tenth of the gain below it (`fell_at`), the first
    alarm (`alarm_at`; indices), and whether the alarm rang in time."""
    peak = max(range(len(gold)), key=gold.__getitem__)
    gain = gold[peak] - gold[0]
    fell_at = None if gain <= 0 else next(
        (i for i in range(peak + 1, len(gold)) if gold[i] < gold[peak] - FALL * gain), None)
    alarm_at = next((i for i, point in enumerate(points) if point.get("alarm")), None)
    return {
        "peak": peak, "fell_at": fell_at, "alarm_at": alarm_at,
        "gold_start": gold[0], "gold_peak": gold[peak], "kl_at_peak": points[peak]["kl"], "gold_end": gold[-1],
        "gold_drop": gold[peak] - min(gold[peak:]), "gold_fell": fell_at is not None,
        # The goal: the alarm rang before gold lost a tenth of its gain (and it did ring if gold fell).
        "alarm_in_time": None if fell_at is None else alarm_at is not None and alarm_at <= fell_at,
    }


def curve_summary(steps: list[dict[str, float]]) -> dict[str, Any]:
    """Peak, fall and alarm of one arm's per-step records ({step, gold, proxy, kl, alarm})."""
    found = peak_fall_alarm(smoothed([row["gold"] for row in steps]), steps)
    peak, fell_at, alarm_at = found.pop("peak"), found.pop("fell_at"), found.pop("alarm_at")
    return {**found, "peak_step": steps[peak]["step"], "kl_end": steps[-1]["kl"],
            "fell_step": None if fell_at is None else steps[fell_at]["step"],
            "alarm_step": None if alarm_at is None else steps[alarm_at]["step"]}


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
def gold_scorer(loop: Any) -> dict[str, Any]:
    """The scorer the loop's scripted annotators followed, as a weight-0 part named gold."""
    preference = loop.feedback.annotators.get("preference") or {"type": "toxicity"}
    return {**preference, "name": "gold", "weight": 0.0}


def arm_reward(arm: str, models: dict[str, str], gold: dict[str, Any], penalty: float) -> dict[str, Any]:
    """The arm's mix: its proxy (weight 1), the ensemble it watches as a weight-0 part (`models`'
    watch ensemble if there is one, else for `single` the ensemble; the other arms' proxies report
    their own disagreement), gold (weight 0)."""
    if arm == "single":
        proxy = {"type": "reward_model", "path": models["single"], "name": "proxy"}
    else:
        proxy = {"type": "reward_model", "path": models["ensemble"], "name": "proxy", "aggregate": arm,
                 **({"penalty": penalty} if arm == "mean_minus_std" else {})}
    watched = "watch" if "watch" in models else "ensemble" if arm == "single" else None
    monitor = [] if watched is None else [{"type": "reward_model", "path": models[watched], "name": watched, "weight": 0.0}]
    return {"type": "mix", "sources": [proxy, *monitor, gold]}


def arm_recipe(loop: Any, reward: dict[str, Any], out: Path, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The loop's RLOO recipe from the starting model, with a weak β, no KL stop, `--steps` steps,
    every step logged (the alarm's flag is set on the one step it first rings)."""
    from alignloop.loop.recipes import rl_recipe, stage_recipe

    loop = loop.model_copy(update={"rl": loop.rl.model_copy(update={"method": "rloo"})})
    recipe = rl_recipe(loop, None, [], None, out, seed)
    recipe["reward"] = reward
    group = {"kl_coef": args.kl_coef, "kl_stop": None}
    train = {"max_steps": args.steps, "save_every": args.steps, "log_every": 1, "progress": False}
    return stage_recipe(recipe, group=group, train=train)


def subsample(feedback: Path, judgements: int | None, seed: int, copy: Path) -> str:
    """The feedback file, or `judgements` of its records drawn with `seed` (written to `copy`):
    fewer judgements, a less accurate proxy, over-optimised sooner (Gao et al. 2023)."""
    if judgements is None:
        return str(feedback)
    records = feedback.read_text(encoding="utf-8").splitlines()
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text("\n".join(random.Random(seed).sample(records, min(judgements, len(records)))) + "\n")
    return str(copy)


def fresh(folder: Path) -> Path:
    """`folder`, emptied: a rerun starts its runs again rather than resuming them."""
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def watch_members(value: str) -> int:
    """--watch's M: 0 (no watching ensemble) or at least 2 (one member has no disagreement)."""
    if not value.isdigit() or int(value) == 1:
        raise argparse.ArgumentTypeError(f"expected 0 or a whole number of members >= 2, got {value!r}")
    return int(value)


def add_member_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both over-optimisation benchmarks share: how the reward models are made."""
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--adapters", action="store_true",
                        help="the single model and every member train their own LoRA adapter (the loop recipe's "
                             "model.lora, reward.backbone: trained) instead of a head on the frozen features")
    parser.add_argument("--adapter-epochs", type=int, default=20, help="with --adapters: epochs (the head-only recipe's "
                                                                       "are too many for a backbone that trains)")
    parser.add_argument("--adapter-lr", type=float, default=3e-3, help="with --adapters: the learning rate")
    parser.add_argument("--watch", type=watch_members, default=0, metavar="M",
                        help="train one more ensemble of M members (its own seed) whose disagreement the alarm reads "
                             "in every arm: members the arm's reward does not use, so optimising cannot lower it")


def member_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Overrides of the loop's reward-model recipe for `--adapters` (none without)."""
    if not args.adapters:
        return {}
    return {"reward": {"backbone": "trained"}, "train": {"epochs": args.adapter_epochs, "lr": args.adapter_lr}}


WATCH_SEED_OFFSET = 1000  # the watch ensemble's seed: its members' bootstraps and starts differ from the ensemble's


def reward_models_to_train(args: argparse.Namespace) -> list[tuple[str, int, int]]:
    """(name, members, seed offset) of each reward model a seed trains."""
    watch = [("watch", args.watch, WATCH_SEED_OFFSET)] if args.watch else []
    return [("single", 1, 0), ("ensemble", args.members, 0), *watch]


def train_reward_models(loop: Any, loop_dir: Path, out: Path, seed: int, args: argparse.Namespace
                        ) -> tuple[dict[str, str], dict[str, float]]:
    """({single, ensemble[, watch]}: the seed's reward-model folders, trained afresh on the loop's
    round-1 judgements (or `args.judgements` of them) with the loop's recipe (`member_settings`
    applied); their seconds)."""
    from alignloop.algorithms.reward import RewardConfig, run_reward
    from alignloop.loop.recipes import reward_model_recipe, stage_recipe
    from alignloop.loop.state import load_state

    feedback = [subsample(Path(load_state(loop_dir, loop.rounds, resume=True).artifact(1, "preferences")),
                          args.judgements, seed, out / "feedback.jsonl")]
    models, timings = {}, {}
    for name, members, seed_offset in reward_models_to_train(args):
        started = time.perf_counter()
        recipe = reward_model_recipe(loop, feedback, fresh(out / f"rm-{name}"), seed + seed_offset)
        recipe = stage_recipe(recipe, **member_settings(args))
        recipe = stage_recipe(recipe, reward={"ensemble": members}, train={"progress": False})
        models[name] = str(run_reward(RewardConfig.model_validate(recipe)).final_model_dir)
        timings[f"rm_{name}_s"] = time.perf_counter() - started
    return models, timings


def run_seed(loop: Any, loop_dir: Path, out: Path, seed: int, args: argparse.Namespace, console: Console) -> dict:
    from alignloop.algorithms.grpo import GRPOConfig, run_grpo

    models, timings = train_reward_models(loop, loop_dir, out, seed, args)
    arms = {}
    for arm in args.arms:
        started = time.perf_counter()
        reward = arm_reward(arm, models, gold_scorer(loop), args.penalty)
        recipe = arm_recipe(loop, reward, fresh(out / arm), seed, args)
        run_grpo(GRPOConfig.model_validate(recipe))
        timings[f"rl_{arm}_s"] = time.perf_counter() - started
        steps = step_records(out / arm / "metrics.jsonl")
        arms[arm] = {"steps": steps, **curve_summary(steps)}
        console.print(f"seed {seed} {arm}: {json.dumps({k: v for k, v in arms[arm].items() if k != 'steps'})}")
    return {"arms": arms, "timings_s": timings}


# ------------------------------------------------------------------ output
def plot(results: dict[str, Any], path: Path) -> None:
    plot_gold_and_proxy(results, path, points="steps", gold_of=smoothed, kl_label="KL (nats per reply)",
                        titles=("gold (3-step mean; x = alarm)", "proxy (the reward trained on)"))


def plot_gold_and_proxy(results: dict[str, Any], path: Path, *, points: str, gold_of, kl_label: str,
                        titles: tuple[str, str]) -> None:
    """Per seed, gold (through `gold_of`, x where the alarm first rang) and proxy against KL for
    every arm; `points`: the key of an arm's records ({kl, gold, proxy, alarm})."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = list(results["seeds"])
    figure, axes = plt.subplots(len(seeds), 2, figsize=(11, 3.5 * len(seeds)), squeeze=False)
    for row, seed in zip(axes, seeds):
        for arm, entry in results["seeds"][seed]["arms"].items():
            records = entry[points]
            kl, gold = [r["kl"] for r in records], gold_of([r["gold"] for r in records])
            line, = row[0].plot(kl, gold, marker=".", label=arm)
            row[1].plot(kl, [r["proxy"] for r in records], marker=".", label=arm, color=line.get_color())
            alarm = next((i for i, r in enumerate(records) if r.get("alarm")), None)
            if alarm is not None:
                row[0].plot(kl[alarm], gold[alarm], "x", ms=12, color=line.get_color())
        row[0].set(title=f"seed {seed}: {titles[0]}", xlabel=kl_label)
        row[1].set(title=f"seed {seed}: {titles[1]}", xlabel=kl_label)
        row[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def print_table(results: dict[str, Any], console: Console) -> None:
    table = Table(title="gold peak and the alarm, per seed and arm")
    for column in ("seed", "arm", "gold start", "gold peak", "KL at peak", "drop after", "gold fell", "KL end",
                   "peak step", "fell step", "alarm step", "alarm in time"):
        table.add_column(column)
    for seed, entry in results["seeds"].items():
        for arm, s in entry["arms"].items():
            table.add_row(str(seed), arm, f"{s['gold_start']:.3f}", f"{s['gold_peak']:.3f}", f"{s['kl_at_peak']:.2f}",
                          f"{s['gold_drop']:.3f}", str(s["gold_fell"]), f"{s['kl_end']:.2f}", str(s["peak_step"]), str(s["fell_step"]),
                          str(s["alarm_step"]), str(s["alarm_in_time"]))
    console.print(table)


def resummarise(path: Path, console: Console) -> None:
    """An earlier run's json with its summaries read again from its per-step records, and its plot."""
    results = json.loads(path.read_text())
    for entry in results["seeds"].values():
        for arm, curve in entry["arms"].items():
            entry["arms"][arm] = {"steps": curve["steps"], **curve_summary(curve["steps"])}
    path.write_text(json.dumps(results, indent=1))
    plot(results, path.with_suffix(".png"))
    print_table(results, console)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("loop_dir", type=Path, nargs="?", help="a finished loop folder (alignloop demo's): its config.yaml "
                        "and round-1 feedback")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--steps", type=int, default=24)
    add_member_arguments(parser)
    parser.add_argument("--penalty", type=float, default=1.0, help="λ of mean_minus_std")
    parser.add_argument("--judgements", type=int, default=None,
                        help="train the reward models on this many of the loop's judgements, drawn per seed")
    parser.add_argument("--kl-coef", type=float, default=0.02, help="β: weak, so that the policy can over-optimise")
    parser.add_argument("--out", type=Path, default=None, help="the json and png (default: benchmarks/results/<cpu>/)")
    parser.add_argument("--name", default="overoptimisation", help="the json's and png's name")
    parser.add_argument("--summarise", type=Path, default=None,
                        help="read the per-step records of an earlier run's json, summarise and plot them again")
    parser.add_argument("--work", type=Path, default=Path("runs/overoptimisation"), help="the reward models and RL runs")
    args = parser.parse_args()

    console = Console()
    if args.summarise:
        resummarise(args.summarise, console)
        return
    if args.loop_dir is None or not (args.loop_dir / "config.yaml").is_file():
        parser.error(f"{args.loop_dir}: expected a finished loop folder (config.yaml, state.json), e.g. alignloop demo's")

    from alignloop.loop.config import LoopConfig

    loop = LoopConfig.model_validate(yaml.safe_load((args.loop_dir / "config.yaml").read_text()))
    out = args.out or results_dir()
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {**cpu_description(), "loop_dir": str(args.loop_dir), "settings": vars(args) | {
        "loop_dir": str(args.loop_dir), "out": str(out), "work": str(args.work)}, "seeds": {}}
    for seed in args.seeds:
        results["seeds"][seed] = run_seed(loop, args.loop_dir, args.work / f"seed-{seed}", seed, args, console)
        results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        (out / f"{args.name}.json").write_text(json.dumps(results, indent=1))
        plot(results, out / f"{args.name}.png")
    print_table(results, console)
    console.print(f"wrote {out / args.name}.json and .png")


if __name__ == "__main__":
    main()
