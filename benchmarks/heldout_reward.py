"""Held-out reward and KL of trained policies next to their starting model, on one protocol.

    python benchmarks/heldout_reward.py --adapter runs/ppo-smollm2-sentiment/final \
        --adapter runs/grpo-smollm2-sentiment/final --samples 4

Every policy (the base model, then each LoRA adapter on it) answers every prompt of `--prompts`
`--samples` times with the same sampling settings and the same seed, so the policies differ by
their weights alone. Each response is scored by `--reward` (default: the offline VADER
sentiment scorer) and its KL to the base model is measured as the summed per-token
log π − log π_base of the sampled tokens (a sample of KL(π || π_base) per sequence). The table
gives the mean with its standard error over responses; results go to `--out` as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="the base model (built-in name or folder)")
    parser.add_argument("--adapter", action="append", default=[], help="a LoRA adapter folder (repeatable)")
    parser.add_argument("--prompts", default=str(ROOT / "recipes/data/calm-prompts-eval.jsonl"))
    parser.add_argument("--samples", type=int, default=4, help="responses per prompt")
    parser.add_argument("--reward", default="sentiment", help="reward source type (sentiment, toxicity)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/heldout_reward.json")
    return parser.parse_args(argv)


def mean_and_se(values: list[float]) -> tuple[float, float]:
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return statistics.fmean(values), se


@torch.no_grad()
def evaluate_policy(policy, tokenizer, prompts, args, reward_source) -> dict:
    from alignloop.engine.rollout import rollout_batch
    from alignloop.engine.rollout import HFRolloutEngine, SamplingConfig
    from alignloop.models import adapters_disabled
    from alignloop.models.forward import response_token_logps

    sampling = SamplingConfig(temperature=args.temperature, max_new_tokens=args.max_new_tokens, batch_size=32)
    rows = [item for item in prompts for _ in range(args.samples)]
    rollout = HFRolloutEngine(policy, tokenizer, sampling).generate([p.prompt_ids for p in rows], seed=args.seed)
    rewards = reward_source([p.prompt for p in rows], rollout.texts)
    tokens = rollout_batch(rollout, tokenizer.pad_token_id)
    kls = []
    for start in range(0, len(rows), 16):
        chunk = {k: v[start : start + 16] for k, v in tokens.items()}
        logps, mask, _ = response_token_logps(policy, chunk, sampling.temperature or 1.0)
        with adapters_disabled(policy):
            base_logps, _, _ = response_token_logps(policy, chunk, sampling.temperature or 1.0)
        kls.extend(((logps - base_logps) * mask).sum(-1).tolist())
    reward, reward_se = mean_and_se(rewards)
    kl, kl_se = mean_and_se(kls)
    lengths = [len(r) for r in rollout.response_ids]
    return {"reward": reward, "reward_se": reward_se, "kl": kl, "kl_se": kl_se,
            "length": statistics.fmean(lengths), "eos_rate": statistics.fmean(rollout.finished),
            "responses": len(rows), "examples": [{"prompt": str(rows[i].prompt), "response": rollout.texts[i]}
                                                 for i in range(0, len(rows), args.samples)][:4]}


def load_policy(model_name: str, adapter: str | None):
    from peft import PeftModel

    from alignloop.models import LoraSettings, ModelConfig, apply_lora, disable_dropout, load_model_and_tokenizer

    base, tokenizer = load_model_and_tokenizer(ModelConfig(name=model_name))
    disable_dropout(base.eval())
    if adapter is None:
        # A fresh LoRA is zero (B = 0), so the outputs are the base model's, measured by the same
        # code path (adapters on vs off) as the trained policies.
        return apply_lora(base, LoraSettings(r=1, alpha=1, dropout=0.0)).eval(), tokenizer
    return PeftModel.from_pretrained(base, adapter).eval(), tokenizer


def main(argv=None) -> None:
    from alignloop.data.prompts import PromptDataConfig, read_prompts
    from alignloop.rewards import RewardSourceConfig, build_reward_source

    args = parse_args(argv)
    reward_source = build_reward_source(RewardSourceConfig(type=args.reward))
    results = {}
    for adapter in [None, *args.adapter]:
        policy, tokenizer = load_policy(args.model, adapter)
        prompts = read_prompts(args.prompts, tokenizer, PromptDataConfig(train=args.prompts))
        name = adapter or "base"
        results[name] = r = evaluate_policy(policy, tokenizer, prompts, args, reward_source)
        print(f"{name:45s} reward {r['reward']:+.3f} ± {r['reward_se']:.3f}   KL {r['kl']:6.2f} ± {r['kl_se']:.2f}"
              f"   length {r['length']:.1f}   EOS {r['eos_rate']:.2f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"prompts": args.prompts, "samples_per_prompt": args.samples,
                                    "reward": args.reward, "temperature": args.temperature,
                                    "max_new_tokens": args.max_new_tokens, "seed": args.seed,
                                    "policies": results}, indent=2) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
