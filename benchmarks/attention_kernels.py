"""Attention forward + backward time: PyTorch's fused SDPA kernel next to plain matmul attention.

    python benchmarks/attention_kernels.py                   # the dtype this CPU trains in
    python benchmarks/attention_kernels.py --dtype bfloat16  # another one

SmolLM2-135M's attention shape (9 query heads, 3 key/value heads, head size 64), causal mask
plus a padding mask as training batches have, batches of about 1,024 tokens; the median of 3
timed calls after a warm-up, the two kernels alternating. This is the probe that
`attn_implementation: auto` runs once per machine (`alignloop.hardware.probe_attention`), here
over every length rather than up to the crossover. Results: benchmarks/results/<cpu>/attention_kernels.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from alignloop import hardware

sys.path.insert(0, str(Path(__file__).resolve().parent))
from roofline import cpu_description, results_dir  # noqa: E402

LENGTHS = (64, 128, 192, 256, 512, 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="auto: the dtype `mixed_precision: auto` trains in on this CPU")
    args = parser.parse_args()
    dtype = hardware.auto_precision("cpu").dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    timings = {}
    for length in LENGTHS:  # one length at a time: the probe stops at the first loss
        timings.update(hardware.probe_attention(dtype, keys_list=(length,)))
    rows = [{"tokens": keys, "batch": max(1, hardware.ATTENTION_PROBE_TOKENS // keys),
             "matmul_ms": round(matmul * 1e3, 2), "sdpa_ms": round(sdpa * 1e3, 2)} for keys, (matmul, sdpa) in timings.items()]
    crossover = hardware.matmul_attention_max_keys_from(timings)
    table = Table(title=f"attention fwd+bwd, {str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} threads, "
                        f"{hardware.cpu_info().model}")
    for column in ("tokens", "batch", "sdpa ms", "matmul ms", "matmul / sdpa"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row["tokens"]), str(row["batch"]), f"{row['sdpa_ms']:.1f}", f"{row['matmul_ms']:.1f}",
                      f"{row['matmul_ms'] / row['sdpa_ms']:.2f}")
    console = Console()
    console.print(table)
    console.print(f"matmul attention faster up to {crossover} keys")
    out = results_dir() / "attention_kernels.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"torch": torch.__version__, "dtype": str(dtype).removeprefix("torch."),
                               "machine": cpu_description(), "matmul_attention_max_keys": crossover, "rows": rows},
                              indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
