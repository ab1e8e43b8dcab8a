"""Wall time of one online-RL step: alignloop's GRPO, RLOO and PPO next to TRL's GRPOTrainer and
RLOOTrainer, on the same model, prompts, batch, lengths and reward.

    pip install -r benchmarks/requirements-trl.txt     # optional, benchmarks only
    python benchmarks/rl_step_vs_trl.py --tiny         # tiny random Llama, a couple of minutes
    python benchmarks/rl_step_vs_trl.py                # built-in SmolLM2-135M-Instruct + LoRA

The setup, identical on both sides:

- Model: the built-in SmolLM2-135M-Instruct in float32 (`--tiny`: a random 2-layer Llama with
  the SmolLM2 tokenizer), LoRA r=16, alpha=32, dropout 0, all linear layers, bf16 autocast
  (`--precision no` for float32). Both libraries load the model through alignloop's loader.
- Batch: `--prompts` prompts (the first ones of recipes/data/calm-prompts.jsonl, chat template)
  × `--group` samples each = one optimizer step; GRPO/RLOO one update per step (μ = 1);
  temperature 1, no top-k / top-p; β = 0.05 (so both run the reference forward pass).
- Lengths: every response is exactly `--new-tokens` tokens (min_new_tokens = max_new_tokens),
  so neither side can be faster by sampling shorter responses.
- Reward: alignloop's offline VADER sentiment scorer, called by both.
- alignloop PPO runs the same number of sequences per step (prompts × group, one sample each),
  2 epochs × 2 minibatches (4 updates) with its value head: there is no TRL PPO to compare
  with, TRL 1.x removed PPOTrainer. Its row shows what PPO's extra updates and value head cost.

Each (library, method) runs in its own process, `--repeats` times, the order rotated on each
repeat so that slow spells of a shared machine hit every configuration alike. A step's time is
the wall time between the ends of consecutive optimizer steps (so step 1, with its warm-up, is
not counted); the table shows the median over all counted steps and the ratio TRL / alignloop
measured in this one run. Results: benchmarks/results/rl_step_vs_trl.json (or `--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "recipes" / "data" / "calm-prompts.jsonl"
CONFIGS = ["alignloop-grpo", "trl-grpo", "alignloop-rloo", "trl-rloo", "alignloop-ppo"]
LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
BETA = 0.05
LR = 2e-4


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random Llama instead of SmolLM2-135M")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--group", type=int, default=4, help="samples per prompt (GRPO / RLOO)")
    parser.add_argument("--new-tokens", type=int, default=48, help="exact response length")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per run (the first is not timed)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of every configuration")
    parser.add_argument("--precision", choices=["bf16", "no"], default="bf16")
    parser.add_argument("--configs", nargs="+", default=CONFIGS, choices=CONFIGS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rl_step_vs_trl.json")
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def prompt_texts(count: int) -> list[str]:
    lines = PROMPTS.read_text(encoding="utf-8").splitlines()[:count]
    return [json.loads(line)["prompt"] for line in lines]


def sentiment_source():
    from alignloop.rewards import RewardSourceConfig, build_reward_source

    return build_reward_source(RewardSourceConfig(type="sentiment"))


# ----------------------------------------------------------------------------- alignloop
def run_alignloop(args: argparse.Namespace, method: str, work: Path) -> list[float]:
    from alignloop.engine import read_metrics

    prompts = work / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompt_texts(args.prompts)))
    per_prompt = 1 if method == "ppo" else args.group
    common = {
        "model": {"name": args.model_dir, "lora": LORA},
        "data": {"train": str(prompts), "max_prompt_length": 256},
        "reward": {"type": "sentiment"},
        "sampling": {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "max_new_tokens": args.new_tokens,
                     "min_new_tokens": args.new_tokens, "batch_size": args.prompts * args.group},
        "train": {"output_dir": str(work / "run"), "max_steps": args.steps, "lr": LR, "schedule": "constant",
                  "batch_size": args.prompts * args.group // per_prompt, "mixed_precision": args.precision,
                  "progress": False, "report_to": ["jsonl"], "eval_on_start": False, "sample_every": None},
    }
    if method == "ppo":
        from alignloop.algorithms.ppo import PPOConfig, run_ppo

        run_ppo(PPOConfig.model_validate({**common, "ppo": {"epochs": 2, "num_minibatches": 2, "kl_coef": BETA}}))
    else:
        from alignloop.algorithms.grpo import GRPOConfig, run_grpo

        group = {"advantage": method, "group_size": args.group, "kl_coef": BETA,
                 "kl_in": "loss" if method == "grpo" else "reward"}
        run_grpo(GRPOConfig.model_validate({**common, "group": group}))
    times = [r["time"] for r in read_metrics(work / "run" / "metrics.jsonl") if "train/loss" in r]
    return [b - a for a, b in zip(times, times[1:])]


# ----------------------------------------------------------------------------- TRL
def run_trl(args: argparse.Namespace, method: str, work: Path) -> list[float]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback

    from alignloop.models import ModelConfig, load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(ModelConfig(name=args.model_dir))
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompt_texts(args.prompts)])
    source = sentiment_source()

    def sentiment(prompts, completions, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return source([str(p) for p in prompts], texts)

    step_ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, *_, **__):
            step_ends.append(time.perf_counter())

    settings = dict(
        output_dir=str(work / "run"), per_device_train_batch_size=args.prompts * args.group,
        num_generations=args.group, max_completion_length=args.new_tokens,
        generation_kwargs={"min_new_tokens": args.new_tokens}, temperature=1.0, top_p=1.0, top_k=0,
        beta=BETA, num_iterations=1, learning_rate=LR, lr_scheduler_type="constant", max_steps=args.steps,
        logging_steps=1, save_strategy="no", report_to=[], bf16=args.precision == "bf16", use_cpu=True,
        disable_dropout=True, seed=0, dataloader_num_workers=0,
    )
    lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    if method == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        trainer = GRPOTrainer(model=model, reward_funcs=sentiment, args=GRPOConfig(loss_type="grpo", **settings),
                              train_dataset=dataset, processing_class=tokenizer, peft_config=lora,
                              callbacks=[StepClock()])
    else:
        from trl import RLOOConfig, RLOOTrainer

        trainer = RLOOTrainer(model=model, reward_funcs=sentiment, args=RLOOConfig(**settings),
                              train_dataset=dataset, processing_class=tokenizer, peft_config=lora,
                              callbacks=[StepClock()])
    trainer.train()
    return [b - a for a, b in zip(step_ends, step_ends[1:])]


def worker(args: argparse.Namespace) -> None:
    library, method = args.worker.split("-")
    with tempfile.TemporaryDirectory() as tmp:
        run = run_alignloop if library == "alignloop" else run_trl
        times = run(args, method, Path(tmp))
    args.result.write_text(json.dumps(times))


# ----------------------------------------------------------------------------- driver
def prepare_model_dir(args: argparse.Namespace, tmp: Path) -> str:
    from alignloop.models import load_builtin_tokenizer, prepare_builtin, save_tiny_model

    if args.tiny:
        return str(save_tiny_model(tmp / "tiny-llama", tokenizer=load_builtin_tokenizer("smollm2-135m-instruct")))
    return str(prepare_builtin("smollm2-135m-instruct"))


def run_worker(args: argparse.Namespace, config: str, model_dir: str, tmp: Path) -> list[float]:
    result = tmp / f"{config}.json"
    command = [sys.executable, __file__, "--worker", config, "--model-dir", model_dir, "--result", str(result),
               "--prompts", str(args.prompts), "--group", str(args.group), "--new-tokens", str(args.new_tokens),
               "--steps", str(args.steps), "--precision", args.precision]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if done.returncode != 0:
        raise SystemExit(f"{config} failed:\n{done.stderr[-4000:]}")
    return json.loads(result.read_text())


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    times: dict[str, list[float]] = {c: [] for c in args.configs}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = prepare_model_dir(args, Path(tmp))
        for repeat in range(args.repeats):
            order = args.configs[repeat % len(args.configs):] + args.configs[: repeat % len(args.configs)]
            for config in order:
                steps = run_worker(args, config, model_dir, Path(tmp))
                times[config].extend(steps)
                print(f"repeat {repeat + 1}: {config:15s} steps {', '.join(f'{t:.2f}' for t in steps)} s", flush=True)
    medians = {c: statistics.median(t) for c, t in times.items() if t}
    sequences = args.prompts * args.group
    print(f"\nmedian wall time of one step ({sequences} sequences x {args.new_tokens} new tokens):")
    for config, median in medians.items():
        print(f"  {config:15s} {median:7.2f} s   {sequences * args.new_tokens / median:7.1f} generated tok/s")
    ratios = {}
    for method in ("grpo", "rloo"):
        if f"alignloop-{method}" in medians and f"trl-{method}" in medians:
            ratios[method] = medians[f"trl-{method}"] / medians[f"alignloop-{method}"]
            print(f"  {method}: TRL / alignloop = {ratios[method]:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "model": "tiny-llama" if args.tiny else "smollm2-135m-instruct", "lora": LORA,
        "precision": args.precision, "prompts_per_step": args.prompts, "group": args.group,
        "sequences_per_step": sequences, "new_tokens": args.new_tokens, "steps_per_run": args.steps,
        "repeats": args.repeats, "step_seconds": times, "median_step_seconds": medians,
        "ratio_trl_over_alignloop": ratios,
        "versions": {p: metadata.version(p) for p in ("torch", "transformers", "peft", "trl", "accelerate")},
        "cpu_count": os.cpu_count(),
    }, indent=2) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
