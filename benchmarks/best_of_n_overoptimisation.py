"""Best-of-n against one reward model and against an ensemble's aggregates: gold and proxy vs KL.

    alignloop demo output_dir=runs/demo          # judgements from scripted annotators (toxicity gold)
    python benchmarks/best_of_n_overoptimisation.py runs/demo --samples 32 --seeds 0 1 2 --judgements 32

Best-of-n is the cheapest optimiser of a reward model, and the one whose KL is known exactly
(log n − (n − 1) / n). The starting model samples `--samples` N replies to each held-out prompt
of the loop, once; every arm then keeps, for n = 1, 2, 4, ... N, the reply its reward scores
highest, and the expected gold score, proxy score and ensemble disagreement of the kept reply are
computed exactly from the N samples (alignloop/evaluation/best_of_n.py), with no RL noise.

Per seed, a single reward model and a `--members`-member ensemble learn the loop's round-1
judgements (or `--judgements` of them, drawn per seed: a weaker proxy) with the loop's own
reward-model recipe, as benchmarks/overoptimisation.py trains them: heads on the frozen model's
features, or with `--adapters` each its own LoRA adapter on the one frozen base, so that the
members' features differ too (`--adapter-epochs`, `--adapter-lr`). Arms: `single`, and the
ensemble's `mean`, `min` and `mean_minus_std` (λ = `--penalty`). The gold scorer is the one the
loop's scripted annotators followed (for the demo, 1 − alt-profanity-check's toxicity).
`--watch M` trains one more ensemble of M members with a seed of its own, and the alarm of every
arm reads its disagreement instead of the ensemble's: members no arm optimises, so a conservative
aggregate cannot hide its errors by choosing replies its own members agree on.

Per arm and seed: the peak gold and the KL at it, whether gold then fell by more than a tenth of
its gain (and at which n), and the n at which the over-optimisation alarm rings: the ensemble's
(or the watch ensemble's) mean disagreement on the kept replies at least `--bound` times its
disagreement on all samples (the starting model's) while the proxy is above its n = 1 value, the
rule RL uses (alignloop/evaluation/overoptimisation.py). Writes <name>.json / .png under
benchmarks/results/<cpu>/; the samples and reward models go under `--work`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overoptimisation import (  # noqa: E402
    add_member_arguments, gold_scorer, peak_fall_alarm, plot_gold_and_proxy, train_reward_models)
from roofline import cpu_description, results_dir  # noqa: E402

ARMS = ("single", "mean", "min", "mean_minus_std")


# ------------------------------------------------------------------ pure: the curves
def powers_of_two(samples: int) -> list[int]:
    """1, 2, 4, ... up to `samples` (and `samples` itself)."""
    ns = [1 << k for k in range(samples.bit_length()) if 1 << k <= samples]
    return ns if ns[-1] == samples else [*ns, samples]


def disagreement_ratios(reward, disagreement, ns: list[int]) -> list[float]:
    """For each n, the mean disagreement (P, N) on the reply best-of-n by `reward` keeps over its
    mean on all samples."""
    from alignloop.evaluation.best_of_n import expected_best_of_n

    reference = float(disagreement.double().mean())
    return [float(expected_best_of_n(reward, disagreement, n).mean()) / reference for n in ns]


def arm_curve(reward, gold, disagreement, ns: list[int], bound: float) -> list[dict[str, float]]:
    """{n, kl, gold, proxy, disagreement_ratio, alarm} of best-of-n by `reward` (P, N) for each n;
    gold and disagreement (P, N) of the same samples."""
    from alignloop.evaluation.best_of_n import best_of_n_kl, expected_best_of_n
    from alignloop.evaluation.overoptimisation import overoptimisation_alarm

    rows, first_proxy = [], None
    for n, ratio in zip(ns, disagreement_ratios(reward, disagreement, ns)):
        proxy = float(expected_best_of_n(reward, reward, n).mean())
        first_proxy = proxy if first_proxy is None else first_proxy
        # the ratio is already relative to all samples' disagreement: the reference's is 1
        alarm = overoptimisation_alarm(ratio, proxy, 1.0, first_proxy, bound)
        rows.append({"n": n, "kl": best_of_n_kl(n), "gold": float(expected_best_of_n(reward, gold, n).mean()),
                     "proxy": proxy, "disagreement_ratio": ratio, "alarm": alarm is not None})
    return rows


def curve_summary(rows: list[dict[str, float]]) -> dict[str, Any]:
    """Peak, fall and alarm of one arm's curve (no smoothing: the estimates carry no sampling noise
    across n beyond that of the one set of samples)."""
    found = peak_fall_alarm([row["gold"] for row in rows], rows)
    peak, fell_at, alarm_at = found.pop("peak"), found.pop("fell_at"), found.pop("alarm_at")
    return {**found, "peak_n": rows[peak]["n"], "fell_n": None if fell_at is None else rows[fell_at]["n"],
            "alarm_n": None if alarm_at is None else rows[alarm_at]["n"]}


# ------------------------------------------------------------------ the samples and reward models
def sample_replies(loop: Any, count: int, seed: int, console: Console) -> dict[str, Any]:
    """{prompts, texts}: `count` replies of the starting model to each held-out prompt, drawn with
    `seed`, the prompts' replies one after another."""
    import torch

    from alignloop.data.prompts import PromptDataConfig, read_prompts
    from alignloop.engine.progress import TrainingProgress
    from alignloop.engine.rollout import SamplingConfig
    from alignloop.evaluation.policy_eval import prompt_text, sample
    from alignloop.hardware import resolve_weight_dtype
    from alignloop.models import ModelConfig, load_model_and_tokenizer

    dtype, why = resolve_weight_dtype("auto", "cpu")
    console.print(f"sampling {count} replies per held-out prompt (seed {seed}); precision: {why}")
    model, tokenizer = load_model_and_tokenizer(ModelConfig(name=loop.model.name, dtype=dtype))
    model.eval()
    data = PromptDataConfig(train=loop.prompts.eval, max_prompt_length=loop.prompts.max_prompt_length)
    items = read_prompts(loop.prompts.eval, tokenizer, data)
    sampling = SamplingConfig.model_validate(loop.eval.get("sampling", {}))
    rows = [item for item in items for _ in range(count)]
    batches = -(-len(rows) // sampling.batch_size)
    with torch.no_grad(), TrainingProgress(batches, 0, True, "sampling") as progress:
        rollout = sample(model, tokenizer, [item.prompt_ids for item in rows], sampling, seed, progress)
    return {"prompts": [prompt_text(item.prompt) for item in items], "texts": rollout.texts}


def merged_per_prompt(first: list[str], first_count: int, second: list[str], second_count: int) -> list[str]:
    """Each prompt's `first_count` replies of `first`, then its `second_count` of `second`."""
    prompts = len(first) // first_count
    return [text for p in range(prompts) for text in (first[p * first_count:(p + 1) * first_count]
                                                      + second[p * second_count:(p + 1) * second_count])]


def cached_sample_counts(work: Path) -> list[int]:
    """The counts N of the samples-<N>.json files under `work`."""
    suffixes = (file.stem.removeprefix("samples-") for file in work.glob("samples-*.json"))
    return [int(suffix) for suffix in suffixes if suffix.isdigit()]


def draw_samples(loop: Any, count: int, seed: int, work: Path, console: Console) -> dict[str, Any]:
    """{prompts, count, texts, draws} of `count` replies of the starting model to each held-out
    prompt, cached under `work` as samples-<count>.json. Where a smaller count is cached, only the
    missing replies are drawn, with the next seed (`draws`: [{count, seed}, ...] in order), so a
    larger N costs only its new samples (384 replies a prompt: 42 min on a 2-core CPU)."""
    path = work / f"samples-{count}.json"
    if path.is_file():
        return json.loads(path.read_text())
    smaller = [cached for cached in cached_sample_counts(work) if cached < count]
    if smaller:
        source = work / f"samples-{max(smaller)}.json"
        before = json.loads(source.read_text())
        draws = before.get("draws", [{"count": before["count"], "seed": seed}])
        missing, next_seed = count - before["count"], seed + len(draws)
        more = sample_replies(loop, missing, next_seed, console)
        if more["prompts"] != before["prompts"]:
            raise SystemExit(f"{source}: its prompts are not the loop's held-out prompts; remove it")
        samples = {"prompts": before["prompts"], "count": count,
                   "texts": merged_per_prompt(before["texts"], before["count"], more["texts"], missing),
                   "draws": [*draws, {"count": missing, "seed": next_seed}]}
    else:
        samples = {**sample_replies(loop, count, seed, console), "count": count,
                   "draws": [{"count": count, "seed": seed}]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(samples))
    return samples


def has_frozen_backbone(folder: str) -> bool:
    """Whether the reward model at `folder` trained its head alone (`reward.backbone: frozen`)."""
    from alignloop.models import read_reward_metadata

    return read_reward_metadata(folder).get("extra", {}).get("backbone") == "frozen"


def score_samples(samples: dict[str, Any], models: dict[str, str], features) -> dict[str, Any]:
    """{name: (P, N, K) its members' scores of the samples} for each of `models`."""
    from alignloop.models import load_reward_model
    from alignloop.models.reward_scoring import RewardScorer

    count, prompts = samples["count"], samples["prompts"]
    flat_prompts = [prompt for prompt in prompts for _ in range(count)]
    scores = {}
    for name, folder in models.items():
        model, tokenizer = load_reward_model(folder)
        if has_frozen_backbone(folder):
            model.features = features  # the frozen backbone's features of each reply, computed once for every model
        scores[name] = RewardScorer(model, tokenizer, batch_size=count).member_scores(flat_prompts, samples["texts"])
    return {name: members.reshape(len(prompts), count, -1) for name, members in scores.items()}


def shared_features(folder: str):
    """`RewardModel.features` of the reward model at `folder`, cached per reply: reward models
    trained with one recipe on the frozen built-in read the same features (FrozenFeatures)."""
    from alignloop.models import load_reward_model
    from alignloop.models.frozen_features import FrozenFeatures

    model, _ = load_reward_model(folder)
    cache = FrozenFeatures()
    return lambda ids, mask, groups=None, response_mask=None: cache(model, ids, mask, groups, response_mask)


def gold_scores(loop: Any, samples: dict[str, Any]):
    """(P, N) the gold scorer's scores of the samples."""
    import torch

    from alignloop.rewards import RewardSourceConfig, build_reward_source

    count, prompts = samples["count"], samples["prompts"]
    config = {key: value for key, value in gold_scorer(loop).items() if key not in ("name", "weight")}
    scores = build_reward_source(RewardSourceConfig.model_validate(config))(
        [prompt for prompt in prompts for _ in range(count)], samples["texts"])
    return torch.tensor(scores).reshape(len(prompts), count)


def run_seed(loop, loop_dir: Path, samples: dict[str, Any], gold, seed: int, args: argparse.Namespace,
             console: Console, features: list) -> dict:
    """`features`: [] or [the shared feature function], filled by the first seed."""
    from alignloop.models.reward_ensemble import aggregate_members, disagreement

    started = time.perf_counter()
    models, timings = train_reward_models(loop, loop_dir, args.work / f"seed-{seed}", seed, args)
    if not features and has_frozen_backbone(models["single"]):
        features.append(shared_features(models["single"]))
    scoring_started = time.perf_counter()
    scores = score_samples(samples, models, features[0] if features else None)
    timings["scoring_s"] = time.perf_counter() - scoring_started
    spread = disagreement(scores.get("watch", scores["ensemble"]))  # (P, N)
    rewards = {"single": scores["single"][..., 0],
               **{arm: aggregate_members(scores["ensemble"], arm, args.penalty) for arm in ARMS[1:]}}
    own_spread = disagreement(scores["ensemble"]) if "watch" in scores else None
    ns = powers_of_two(samples["count"])
    arms = {}
    for arm in args.arms:
        rows = arm_curve(rewards[arm], gold, spread, ns, args.bound)
        if own_spread is not None:  # the arm's own ensemble's ratio too, for comparison with the watch's
            for row, ratio in zip(rows, disagreement_ratios(rewards[arm], own_spread, ns)):
                row["ensemble_disagreement_ratio"] = ratio
        arms[arm] = {"curve": rows, **curve_summary(rows)}
        console.print(f"seed {seed} {arm}: " + json.dumps({k: v for k, v in arms[arm].items() if k != "curve"}))
    return {"arms": arms, "seconds": time.perf_counter() - started, "timings_s": timings}


# ------------------------------------------------------------------ output
def plot(results: dict[str, Any], path: Path) -> None:
    plot_gold_and_proxy(results, path, points="curve", gold_of=list, kl_label="KL of best-of-n (nats)",
                        titles=("gold of the kept reply (x = alarm)", "proxy (its own reward)"))


def print_table(results: dict[str, Any], console: Console) -> None:
    table = Table(title="best-of-n: gold peak and the alarm, per seed and arm")
    for column in ("seed", "arm", "gold n=1", "gold peak", "peak n (KL)", "gold at N", "fell at n", "alarm n", "in time"):
        table.add_column(column)
    for seed, entry in results["seeds"].items():
        for arm, s in entry["arms"].items():
            table.add_row(str(seed), arm, f"{s['gold_start']:.4f}", f"{s['gold_peak']:.4f}",
                          f"{s['peak_n']} ({s['kl_at_peak']:.2f})", f"{s['gold_end']:.4f}", str(s["fell_n"]),
                          str(s["alarm_n"]), str(s["alarm_in_time"]))
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("loop_dir", type=Path, help="a finished loop folder (alignloop demo's)")
    parser.add_argument("--samples", type=int, default=32, help="N replies per held-out prompt")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    add_member_arguments(parser)
    parser.add_argument("--penalty", type=float, default=1.0, help="λ of mean_minus_std")
    parser.add_argument("--bound", type=float, default=1.5, help="the alarm's bound on the disagreement ratio")
    parser.add_argument("--judgements", type=int, default=None, help="train on this many judgements, drawn per seed")
    parser.add_argument("--name", default="best_of_n_overoptimisation")
    parser.add_argument("--work", type=Path, default=Path("runs/best-of-n"))
    args = parser.parse_args()
    if not (args.loop_dir / "config.yaml").is_file():
        parser.error(f"{args.loop_dir}: expected a finished loop folder (config.yaml, state.json), e.g. alignloop demo's")

    from alignloop.loop.config import LoopConfig

    console = Console()
    loop = LoopConfig.model_validate(yaml.safe_load((args.loop_dir / "config.yaml").read_text()))
    samples = draw_samples(loop, args.samples, loop.seed, args.work, console)
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {**cpu_description(), "settings": vars(args) | {"loop_dir": str(args.loop_dir),
                                                                              "work": str(args.work)},
                               "sample_draws": samples.get("draws"), "seeds": {}}
    gold, features = gold_scores(loop, samples), []
    for seed in args.seeds:
        results["seeds"][seed] = run_seed(loop, args.loop_dir, samples, gold, seed, args, console, features)
        (out / f"{args.name}.json").write_text(json.dumps(results, indent=1))
        plot(results, out / f"{args.name}.png")
    print_table(results, console)
    console.print(f"wrote {out / args.name}.json and .png")


if __name__ == "__main__":
    main()
