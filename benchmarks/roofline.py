"""The machine's peak matrix-multiply throughput, as a yardstick for training throughput.

    python benchmarks/roofline.py                               # sizes 1024, 2048, 4096; float32 and bfloat16
    python benchmarks/roofline.py --sizes 512,1024 --repeats 3  # quick look

For every dtype and size n, `torch.matmul` of two random n × n matrices runs `--warmup` times
untimed, then `--repeats` times timed; the rate of a size is 2·n³ FLOPs divided by the median
time. The peak of a dtype is its best size. This is what a dense GEMM reaches on this machine
with torch's default kernels and thread count (oneDNN / MKL on CPU; bfloat16 uses AMX tiles
where the CPU has them), not the vendor's theoretical number: it is the ceiling a training step
could approach if it were nothing but large matmuls.

`achieved_fraction(params, tokens_per_s, peak_flops)` turns a measured training throughput into
a fraction of that peak with the usual 6·N FLOPs per token rule for a dense N-parameter network
(Kaplan et al. 2020): the forward pass is one multiply-add (2 FLOPs) per weight per token, the
backward pass twice that (gradients of the activations and of the weights); 2·N for a
forward-only pass. It is a rough guide, not an exact count: it ignores attention's T² term (small at a few
hundred tokens), counts every parameter as a matmul weight (embeddings are only a lookup on the
input side), and with LoRA the frozen weights need no weight gradient (about 4·N, not 6·N, of
real work); train_vs_trl.py uses the TOTAL parameter count for both libraries and says so.

Results: benchmarks/results/<cpu>/roofline.json (or `--out`), which train_vs_trl.py reads if
present. Each CPU keeps its own folder (`results_dir`): one Xeon with AMX multiplies bf16 ~6x
faster than float32, an AVX2-only EPYC ~40x slower, and their figures belong side by side, not
on top of each other. Where a dtype is that slow, a size whose product would take longer than
`--slow-budget-s` (extrapolated as n³ from the last size) is skipped: a 4096² bf16 product
would take minutes there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

RESULTS_ROOT = Path(__file__).resolve().parent / "results"


def cpu_slug() -> str:
    """This CPU's folder name under benchmarks/results ('amd-epyc-avx2', 'intel-r-xeon-r-processor-amx')."""
    from alignloop.hardware import cpu_info

    return cpu_info().slug


def results_dir() -> Path:
    """benchmarks/results/<cpu>/: where this machine's results go."""
    return RESULTS_ROOT / cpu_slug()


def with_precision_resolved(args):
    """`args.precision` 'auto' as this CPU's choice ('bf16' or 'no'), the same for both libraries."""
    if args.precision == "auto":
        from alignloop.hardware import resolve_mixed_precision

        args.precision = resolve_mixed_precision("auto", "cpu").precision
    return args


RESULTS = results_dir()
DEFAULT_OUT = RESULTS / "roofline.json"
DTYPES = ("float32", "bfloat16")

# FLOPs per token of a dense network with N parameters.
TRAIN_FLOPS_PER_PARAM = 6  # forward 2·N + backward 4·N
FORWARD_FLOPS_PER_PARAM = 2


def achieved_fraction(params: int, tokens_per_s: float, peak_flops: float, forward_only: bool = False) -> float:
    """Fraction of `peak_flops` (FLOP/s) that a run processing `tokens_per_s` reaches.

    Model FLOPs are 6 × params × tokens for training (forward + backward), 2 × params × tokens
    for a forward-only pass (`forward_only=True`, e.g. scoring or reference log-probs). Pass the
    parameter count whose matmuls run per token; see the module docstring for what the rule leaves out.
    """
    if peak_flops <= 0:
        raise ValueError(f"peak_flops must be positive, got {peak_flops}")
    per_param = FORWARD_FLOPS_PER_PARAM if forward_only else TRAIN_FLOPS_PER_PARAM
    return per_param * params * tokens_per_s / peak_flops


def load_peaks(path: str | Path = DEFAULT_OUT) -> dict[str, float] | None:
    """{dtype: peak FLOP/s} from a roofline.json, or None if there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    return {dtype: float(flops) for dtype, flops in json.loads(path.read_text())["peak_flops"].items()}


def time_matmul(n: int, dtype_name: str, warmup: int, repeats: int) -> list[float]:
    """Wall times (s) of `repeats` timed n × n @ n × n matmuls after `warmup` untimed ones."""
    import torch

    dtype = getattr(torch, dtype_name)
    generator = torch.Generator().manual_seed(n)
    a = torch.randn(n, n, generator=generator).to(dtype)
    b = torch.randn(n, n, generator=generator).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    for _ in range(warmup):
        torch.matmul(a, b, out=out)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b, out=out)
        times.append(time.perf_counter() - start)
    return times


def cpu_model() -> str:
    from alignloop.hardware import cpu_info

    return cpu_info().model


def cpu_description() -> dict:
    """What every benchmark json records of the CPU: model, ISA flags, the widest ISA, threads."""
    import torch

    from alignloop.hardware import cpu_info

    cpu = cpu_info()
    return {"cpu_model": cpu.model, "cpu_slug": cpu.slug, "cpu_flags": cpu.reported_flags, "isa": cpu.isa,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1024,2048,4096", help="comma-separated square matrix sizes")
    parser.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated: float32,bfloat16")
    parser.add_argument("--warmup", type=int, default=2, help="untimed matmuls per size and dtype")
    parser.add_argument("--repeats", type=int, default=5, help="timed matmuls per size and dtype (median taken)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--slow-budget-s", type=float, default=5.0,
                        help="skip a size whose product would take longer than this (n³ from the last size)")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    unknown = set(args.dtypes) - set(DTYPES)
    if unknown:
        parser.error(f"unknown dtypes {sorted(unknown)}; choose from {', '.join(DTYPES)}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=120)
    rows = []
    skipped = []
    for dtype in args.dtypes:
        for n in sorted(args.sizes):
            done = [r for r in rows if r["dtype"] == dtype]
            if done and done[-1]["min_s"] * (n / done[-1]["n"]) ** 3 > args.slow_budget_s:
                skipped.append({"dtype": dtype, "n": n})  # emulated: minutes per product, and no faster
                continue
            times = time_matmul(n, dtype, args.warmup, args.repeats)
            median = statistics.median(times)
            rows.append({"dtype": dtype, "n": n, "flops": 2 * n**3, "median_s": median, "min_s": min(times),
                         "times_s": times, "flops_per_s": 2 * n**3 / median})
    peaks = {dtype: max(r["flops_per_s"] for r in rows if r["dtype"] == dtype) for dtype in args.dtypes}

    table = Table(title=f"torch.matmul, n × n @ n × n, median of {args.repeats} after {args.warmup} warm-up "
                        f"({torch.get_num_threads()} threads)")
    for column in ("dtype", "n", "median ms", "GFLOP/s", ""):
        table.add_column(column, justify="right" if column not in ("dtype", "") else "left")
    for row in rows:
        peak = row["flops_per_s"] == peaks[row["dtype"]]
        table.add_row(row["dtype"], str(row["n"]), f"{row['median_s'] * 1e3:.2f}", f"{row['flops_per_s'] / 1e9:.1f}",
                      "[bold]peak" if peak else "")
    console.print(table)
    if "float32" in peaks and "bfloat16" in peaks:
        console.print(f"bfloat16 / float32 peak: {peaks['bfloat16'] / peaks['float32']:.2f}x")

    meminfo = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, value = line.split(":", 1)
            meminfo[key] = value.strip()
    except OSError:
        pass
    report = {
        "benchmark": "roofline",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])],
        "method": "torch.matmul of random n x n matrices; FLOPs = 2 n^3; rate = FLOPs / median time",
        "warmup": args.warmup, "repeats": args.repeats,
        "peak_flops": peaks,
        "measurements": rows,
        "skipped_sizes": skipped,
        "machine": {**cpu_description(), "mem_total": meminfo.get("MemTotal")},
        "versions": {"torch": metadata.version("torch")},
        "flops_rule": "achieved_fraction: 6 * params * tokens/s (training), 2 * params * tokens/s (forward only)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
