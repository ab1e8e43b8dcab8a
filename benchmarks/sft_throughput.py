"""SFT throughput of the built-in model: float32 vs bf16 autocast, LoRA and full fine-tuning.

Each configuration runs in its own process (peak RSS is per process), configurations
alternate (fp32, bf16, fp32, bf16, ...) so that machine noise hits them alike, and the
report gives medians over steps after the first (warm-up) one. Also times loading the
converted built-in model from the cache.

    python benchmarks/sft_throughput.py --steps 8 --repeats 2
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

from alignloop.hardware import cpu_info

RESULTS = Path(__file__).parent / "results" / cpu_info().slug  # one folder per CPU


def measure_load_time(repeats: int = 3) -> float:
    from alignloop.models import load_model_and_tokenizer, prepare_builtin

    prepare_builtin("smollm2-135m-instruct")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        load_model_and_tokenizer("smollm2-135m-instruct")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def one_run(precision: str, lora: bool, steps: int, batch_size: int, max_length: int) -> dict:
    """Runs inside a child process: a short SFT run, then its step metrics and peak RSS."""
    from alignloop.algorithms.sft import SFTConfig, run_sft
    from alignloop.config import load_config
    from alignloop.engine import read_metrics

    with tempfile.TemporaryDirectory() as out:
        overrides = [
            f"train.output_dir={out}", f"train.max_steps={steps}", f"train.batch_size={batch_size}",
            f"train.mixed_precision={precision}", "train.progress=false", "train.report_to=[jsonl]",
            f"data.max_length={max_length}", "data.eval=null", "save_merged=false", "train.eval_every=null",
            "train.save_every=null",
        ]
        if not lora:
            overrides.append("model.lora=null")
        config = load_config(SFTConfig, Path(__file__).parents[1] / "recipes/sft-smollm2.yaml", overrides)
        run_sft(config)
        records = read_metrics(Path(out) / "metrics.jsonl")
    steady = [r for r in records if r["step"] > 1]
    return {
        "tokens_per_s": statistics.median(r["train/tokens_per_s"] for r in steady),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "losses": [r["train/loss"] for r in records],
    }


def run_child(precision: str, lora: bool, args) -> dict:
    code = (
        "import json, sys; sys.path.insert(0, %r); from sft_throughput import one_run; "
        "print('RESULT' + json.dumps(one_run(%r, %r, %d, %d, %d)))"
        % (str(Path(__file__).parent), precision, lora, args.steps, args.batch_size, args.max_length)
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = next(l for l in done.stdout.splitlines() if l.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--full", action="store_true", help="also measure full fine-tuning (no LoRA)")
    args = parser.parse_args()

    results: dict[str, list[dict]] = {}
    modes = [(p, True) for p in ("no", "bf16")] + ([(p, False) for p in ("no", "bf16")] if args.full else [])
    for _ in range(args.repeats):
        for precision, lora in modes:  # alternate configurations within each repeat
            key = f"{'lora' if lora else 'full'}-{'fp32' if precision == 'no' else 'bf16'}"
            results.setdefault(key, []).append(run_child(precision, lora, args))
            print(key, results[key][-1]["tokens_per_s"], flush=True)

    summary = {
        key: {
            "median_tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        }
        for key, runs in results.items()
    }
    summary["load_from_cache_s"] = measure_load_time()
    for kind in ("lora", "full"):
        if f"{kind}-fp32" in summary:
            summary[f"{kind}_bf16_over_fp32"] = (
                summary[f"{kind}-bf16"]["median_tokens_per_s"] / summary[f"{kind}-fp32"]["median_tokens_per_s"]
            )
    from alignloop.engine.run_dir import machine_description, package_versions

    report = {"args": vars(args), "machine": machine_description(), "versions": package_versions(), "summary": summary}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "sft_throughput.json"
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
