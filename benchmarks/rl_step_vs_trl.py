"""Wall time of one online-RL step: alignloop's GRPO, RLOO and PPO next to TRL's GRPOTrainer,
RLOOTrainer and (TRL 1.12) PPOTrainer, on the same model, prompts, batch, lengths and reward.

    pip install -r benchmarks/requirements-trl.txt     # optional, benchmarks only
    pip install --no-deps --target benchmarks/.trl-1.12 -r benchmarks/requirements-trl-ppo.txt  # for trl-ppo
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
- Reward: alignloop's offline VADER sentiment scorer, called by both (GRPO, RLOO). PPO: a reward
  model on the same backbone (135M, random head) on both sides, because TRL's PPOTrainer takes
  only a sequence-classification model as its reward; alignloop scores with its RewardModel.
- Left as each library does it: alignloop computes a prompt once for all its samples in the
  reference and update passes (`model.share_prefixes`, alignloop/models/padding_free.py) and
  keeps freed memory in the process (`train.retain_freed_memory`); TRL does neither.
- PPO runs the same number of sequences per step (prompts × group, one sample each), 2 epochs ×
  2 minibatches (4 updates), k1 KL in the reward, GAE γ 1 λ 0.95. TRL's PPOTrainer left TRL
  after 1.12 (trl.experimental.ppo there): `trl-ppo` imports it from benchmarks/.trl-1.12 (see
  the install line above; transformers, peft and torch stay the ones installed). Left as each
  library does it: TRL's critic is a separate sequence-classification model whose every weight
  trains (its default; LoRA goes to the policy only), alignloop's value head sits on the
  policy's LoRA backbone; TRL reads the old log-probs from the sampler's logits, alignloop
  recomputes them.

Each (library, method) runs in its own process, `--repeats` times, the order rotated on each
repeat so that slow spells of a shared machine hit every configuration alike. A step's time is
the wall time between the ends of consecutive optimizer steps (so step 1, with its warm-up, is
not counted); the table shows the median over all counted steps, the peak RSS of the process,
the ratio TRL / alignloop measured in this one run, and the share of the machine's bf16 matmul
peak (benchmarks/roofline.py) that the step's model FLOPs reach. Those count, with N the total
parameters and the batch's prompt + response tokens: 2·N per token for generation (prompt
prefill and each new token once, with the KV cache), 2·N per token for each forward-only pass
the method needs (the reference; RLOO's KL-in-reward also the policy at sampling time; PPO
also old log-probs with values and the reward model) and 6·N per token for each update pass (PPO: 2 epochs). Both
libraries are counted by the same rule, so extra passes a library makes count against it, and a
pass it avoids counts for it: in float32 alignloop's RLOO takes the policy's log-probs from the
sampler (alignloop/engine/rollout.py), so its share of the peak can pass 100 %.
Results: benchmarks/results/<cpu>/rl_step_vs_trl.{json,md,png} (or `--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # roofline.py, train_vs_trl.py
from roofline import results_dir, with_precision_resolved  # noqa: E402  (benchmarks/results/<cpu>/)

PROMPTS = ROOT / "recipes" / "data" / "calm-prompts.jsonl"
CONFIGS = ["alignloop-grpo", "trl-grpo", "alignloop-rloo", "trl-rloo", "alignloop-ppo", "trl-ppo"]
TRL_PPO_DIR = Path(__file__).resolve().parent / ".trl-1.12"  # pip install --target (see above)
LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
BETA = 0.05
LR = 2e-4
# Passes over the step's tokens besides generation: (forward-only, forward + backward); see above.
# PPO: reference, old log-probs with values, reward model; 2 epochs of updates.
PASSES = {"grpo": (1, 1), "rloo": (2, 1), "ppo": (3, 2)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random Llama instead of SmolLM2-135M")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--group", type=int, default=4, help="samples per prompt (GRPO / RLOO)")
    parser.add_argument("--new-tokens", type=int, default=48, help="exact response length")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per run (the first is not timed)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of every configuration")
    parser.add_argument("--precision", choices=["auto", "bf16", "no"], default="auto",
                        help="bf16 autocast or float32 on both sides; auto: what this CPU runs fast")
    parser.add_argument("--configs", nargs="+", default=CONFIGS, choices=CONFIGS)
    parser.add_argument("--out", type=Path, default=results_dir() / "rl_step_vs_trl.json")
    parser.add_argument("--roofline", type=Path, default=results_dir() / "roofline.json",
                        help="measured matmul peaks (benchmarks/roofline.py) for the %% of peak column")
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--reward-model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return with_precision_resolved(parser.parse_args(argv))


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
    reward = {"type": "reward_model", "path": args.reward_model_dir} if method == "ppo" else {"type": "sentiment"}
    common = {
        "model": {"name": args.model_dir, "lora": LORA},
        "data": {"train": str(prompts), "max_prompt_length": 256},
        "reward": reward,
        "sampling": {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "max_new_tokens": args.new_tokens,
                     "min_new_tokens": args.new_tokens, "batch_size": args.prompts * args.group},
        "train": {"output_dir": str(work / "run"), "max_steps": args.steps, "lr": LR, "schedule": "constant",
                  "batch_size": args.prompts * args.group // per_prompt, "mixed_precision": args.precision,
                  "progress": False, "report_to": ["jsonl"], "eval_on_start": False, "sample_every": None},
    }
    if method == "ppo":
        from alignloop.algorithms.ppo import PPOConfig, run_ppo

        ppo = {"epochs": 2, "num_minibatches": 2, "kl_coef": BETA, "kl_estimator": "k1", "gamma": 1.0, "lam": 0.95}
        run_ppo(PPOConfig.model_validate({**common, "ppo": ppo}))
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


def run_trl_ppo(args: argparse.Namespace, work: Path) -> list[float]:
    """TRL 1.12's PPOTrainer (trl.experimental.ppo), imported from TRL_PPO_DIR ahead of TRL 1.16."""
    if not (TRL_PPO_DIR / "trl").is_dir():
        raise SystemExit(f"trl-ppo needs TRL 1.12 in {TRL_PPO_DIR}: pip install --no-deps --target {TRL_PPO_DIR} "
                         "-r benchmarks/requirements-trl-ppo.txt")
    sys.path.insert(0, str(TRL_PPO_DIR))
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from alignloop.data import encode_prompt
    from alignloop.models import ModelConfig, load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(ModelConfig(name=args.model_dir))
    tokenizer.padding_side = "left"  # prompts are left-padded for generation
    ids = [encode_prompt(tokenizer, p, True) for p in prompt_texts(args.prompts) for _ in range(args.group)]
    dataset = Dataset.from_list([{"input_ids": i} for i in ids])
    critic, scorer = (AutoModelForSequenceClassification.from_pretrained(args.model_dir, num_labels=1)
                      for _ in range(2))
    scorer.requires_grad_(False)
    response_tokens: list[float] = []  # what the reward model scored, to check the exact length

    def count_response_tokens(_module, inputs, kwargs):
        input_ids = kwargs.get("input_ids", inputs[0] if inputs else None)
        width = input_ids.shape[1] - max(len(i) for i in ids)
        response_tokens.append(float(width))

    scorer.model.register_forward_pre_hook(count_response_tokens, with_kwargs=True)
    step_ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, *_, **__):
            step_ends.append(time.perf_counter())

    sequences = args.prompts * args.group
    config = PPOConfig(
        output_dir=str(work / "run"), per_device_train_batch_size=sequences, gradient_accumulation_steps=1,
        num_mini_batches=2, num_ppo_epochs=2, total_episodes=sequences * args.steps,
        local_rollout_forward_batch_size=sequences, response_length=args.new_tokens, stop_token=None,
        temperature=1.0, kl_coef=BETA, kl_estimator="k1", gamma=1.0, lam=0.95, learning_rate=LR,
        lr_scheduler_type="constant", num_sample_generations=0, logging_steps=1, save_strategy="no", report_to=[],
        bf16=args.precision == "bf16", use_cpu=True, seed=0, dataloader_num_workers=0,
        gradient_checkpointing=False,
    )
    lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    trainer = PPOTrainer(args=config, processing_class=tokenizer, model=model, ref_model=None, reward_model=scorer,
                         value_model=critic, train_dataset=dataset, peft_config=lora, callbacks=[StepClock()])
    trainer.train()
    if response_tokens and min(response_tokens) != args.new_tokens:
        raise SystemExit(f"trl-ppo sampled responses of {min(response_tokens):.0f} tokens, not {args.new_tokens}")
    return [b - a for a, b in zip(step_ends, step_ends[1:])]


def worker(args: argparse.Namespace) -> None:
    library, method = args.worker.split("-")
    with tempfile.TemporaryDirectory() as tmp:
        if args.worker == "trl-ppo":
            times = run_trl_ppo(args, Path(tmp))
            run = None
        else:
            run = run_alignloop if library == "alignloop" else run_trl
        if run is not None:
            times = run(args, method, Path(tmp))
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    args.result.write_text(json.dumps({"step_seconds": times, "peak_rss_mb": peak_rss_mb}))


# ----------------------------------------------------------------------------- driver
def prepare_model_dir(args: argparse.Namespace, tmp: Path) -> str:
    from alignloop.models import load_builtin_tokenizer, prepare_builtin, save_tiny_model

    if args.tiny:
        return str(save_tiny_model(tmp / "tiny-llama", tokenizer=load_builtin_tokenizer("smollm2-135m-instruct")))
    return str(prepare_builtin("smollm2-135m-instruct"))


def trl_ppo_version() -> str:
    """The TRL in TRL_PPO_DIR (the trl-ppo worker's), from its dist-info folder's name."""
    found = sorted(TRL_PPO_DIR.glob("trl-*.dist-info"))
    return found[0].name.removeprefix("trl-").removesuffix(".dist-info") if found else "not installed"


def prepare_reward_model_dir(model_dir: str, tmp: Path) -> str:
    """An alignloop reward model on the policy's backbone (seeded random head) for alignloop PPO."""
    import torch

    from alignloop.models import build_reward_model, save_reward_model

    torch.manual_seed(0)
    reward_model, tokenizer = build_reward_model(model_dir)
    return str(save_reward_model(reward_model, tmp / "reward-model", tokenizer=tokenizer))


def run_worker(args: argparse.Namespace, config: str, model_dir: str, reward_model_dir: str, tmp: Path) -> dict:
    result = tmp / f"{config}.json"
    command = [sys.executable, __file__, "--worker", config, "--model-dir", model_dir, "--result", str(result),
               "--reward-model-dir", reward_model_dir,
               "--prompts", str(args.prompts), "--group", str(args.group), "--new-tokens", str(args.new_tokens),
               "--steps", str(args.steps), "--precision", args.precision]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if done.returncode != 0:
        raise SystemExit(f"{config} failed:\n{done.stderr[-4000:]}")
    return json.loads(result.read_text())


def step_shape(args: argparse.Namespace, model_dir: str) -> dict:
    """Sequences, prompt and total tokens of one step, and the model's parameter count (with LoRA)."""
    from alignloop.data import encode_prompt
    from alignloop.models import LoraSettings, apply_lora, count_trainable_parameters, load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(model_dir)
    _, params = count_trainable_parameters(apply_lora(model, LoraSettings(**LORA)))
    prompt_tokens = sum(len(encode_prompt(tokenizer, p, True)) for p in prompt_texts(args.prompts)) * args.group
    sequences = args.prompts * args.group
    return {"sequences": sequences, "prompt_tokens": prompt_tokens, "params": params,
            "tokens": prompt_tokens + sequences * args.new_tokens}


def step_flops(method: str, shape: dict) -> float:
    forward_passes, train_passes = PASSES[method]
    return 2 * shape["params"] * shape["tokens"] * (1 + forward_passes + 3 * train_passes)


def summarize(runs: dict[str, list[dict]], shape: dict, args: argparse.Namespace, peak: float | None) -> dict:
    summary = {}
    for config, results in runs.items():
        seconds = [t for r in results for t in r["step_seconds"]]
        if not seconds:
            continue
        median = statistics.median(seconds)
        generated = shape["sequences"] * args.new_tokens
        entry = {"median_step_seconds": median, "generated_tokens_per_s": generated / median,
                 "tokens_per_s": shape["tokens"] / median, "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
                 "counted_steps": len(seconds)}
        if peak:
            entry["fraction_of_peak"] = step_flops(config.split("-")[1], shape) / median / peak
        summary[config] = entry
    return summary


def write_plot(path: Path, ratios: dict[str, float], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.4))
    bars = ax.bar(list(ratios), list(ratios.values()), width=0.5)
    for bar, value in zip(bars, ratios.values()):
        ax.annotate(f"{value:.2f}x", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom", fontsize=8)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_ylabel("TRL s/step / alignloop s/step")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown_report(report: dict) -> str:
    columns = ["config", "median s/step", "generated tok/s", "tokens/s", "peak RSS MB", "% of matmul peak",
               "TRL / alignloop"]
    lines = [f"# One online-RL step: alignloop vs TRL {report['versions']['trl']} "
             f"(PPO: TRL {report['versions'].get('trl_ppo', 'not installed')})", "", report["headline"] + ".", "",
             f"Machine: {report['machine']['cpu_model']}, {report['machine']['cpu_count']} cores, "
             f"{report['machine']['ram_gib']} GiB RAM; torch {report['versions']['torch']}, transformers "
             f"{report['versions']['transformers']}, peft {report['versions']['peft']}; alignloop "
             f"{report['versions']['alignloop_git_commit']}"
             f"{' (uncommitted changes)' if report['versions']['alignloop_git_dirty'] else ''}.", "",
             "| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]
    for config, entry in report["summary"].items():
        ratio = report["ratio_trl_over_alignloop"].get(config.split("-")[1]) if config.startswith("alignloop") else None
        fraction = entry.get("fraction_of_peak")
        lines.append(f"| {config} | {entry['median_step_seconds']:.2f} | {entry['generated_tokens_per_s']:.1f} | "
                     f"{entry['tokens_per_s']:.0f} | {entry['peak_rss_mb']:.0f} | "
                     f"{'-' if fraction is None else f'{100 * fraction:.1f}%'} | "
                     f"{f'{ratio:.2f}x' if ratio else ''} |")
    lines += ["", "TRL / alignloop: ratio of median step times (> 1: alignloop is faster). % of matmul peak: model "
              "FLOPs of the step (see the script's docstring: 2·N per generated or prompt token, 2·N per token of each "
              "forward-only pass, 6·N per token of each update) over the measured matmul peak of the precision it ran "
              "in. trl-ppo: TRL 1.12's PPOTrainer (trl.experimental.ppo; TRL 1.16 has none), whose critic is a "
              "separate model that trains every weight; alignloop's value head shares the policy's LoRA backbone."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    from roofline import load_peaks
    from train_vs_trl import machine, versions

    runs: dict[str, list[dict]] = {c: [] for c in args.configs}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = prepare_model_dir(args, Path(tmp))
        reward_model_dir = prepare_reward_model_dir(model_dir, Path(tmp))
        shape = step_shape(args, model_dir)
        for repeat in range(args.repeats):
            order = args.configs[repeat % len(args.configs):] + args.configs[: repeat % len(args.configs)]
            for config in order:
                result = run_worker(args, config, model_dir, reward_model_dir, Path(tmp))
                runs[config].append(result)
                steps = ", ".join(f"{t:.2f}" for t in result["step_seconds"])
                print(f"repeat {repeat + 1}: {config:15s} steps {steps} s; peak RSS {result['peak_rss_mb']:.0f} MB",
                      flush=True)
    peak = (load_peaks(args.roofline) or {}).get("bfloat16" if args.precision == "bf16" else "float32")
    summary = summarize(runs, shape, args, peak)
    ratios = {m: summary[f"trl-{m}"]["median_step_seconds"] / summary[f"alignloop-{m}"]["median_step_seconds"]
              for m in ("grpo", "rloo", "ppo") if f"alignloop-{m}" in summary and f"trl-{m}" in summary}
    model = "tiny random Llama" if args.tiny else "smollm2-135m-instruct"
    headline = (f"{model} + LoRA r={LORA['r']}, {'bf16 autocast' if args.precision == 'bf16' else 'float32'}, "
                f"{args.prompts} prompts x {args.group} samples = {shape['sequences']} sequences of exactly "
                f"{args.new_tokens} new tokens per step ({shape['prompt_tokens']} prompt tokens), "
                f"{args.steps} steps x {args.repeats} repeats (step 1 not timed)")
    print(f"\n{headline}")
    for config, entry in summary.items():
        fraction = entry.get("fraction_of_peak")
        print(f"  {config:15s} {entry['median_step_seconds']:7.2f} s  {entry['generated_tokens_per_s']:6.1f} "
              f"generated tok/s  peak RSS {entry['peak_rss_mb']:5.0f} MB"
              + (f"  {100 * fraction:4.1f}% of matmul peak" if fraction else ""))
    for method, ratio in ratios.items():
        print(f"  {method}: TRL / alignloop = {ratio:.2f}x")
    report = {
        "benchmark": "rl_step_vs_trl", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])], "headline": headline,
        "model": model, "lora": LORA, "precision": args.precision, "prompts_per_step": args.prompts,
        "group": args.group, "new_tokens": args.new_tokens, "steps_per_run": args.steps, "repeats": args.repeats,
        "step_shape": shape, "passes": PASSES, "peak_flops": peak, "peak_dtype": "bfloat16" if args.precision == "bf16" else "float32",
        "machine": machine(), "versions": {**versions(), "trl_ppo": trl_ppo_version()},
        "summary": summary, "ratio_trl_over_alignloop": ratios, "runs": runs,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown_report(report))
    if ratios:
        write_plot(args.out.with_suffix(".png"), ratios, headline.split(", ")[0] + ", one RL step")
    print(f"results: {args.out} (+ .md, .png)")


if __name__ == "__main__":
    main()
