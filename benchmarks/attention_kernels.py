"""Attention forward + backward time: PyTorch's fused SDPA kernel next to plain matmul attention.

    python benchmarks/attention_kernels.py

SmolLM2-135M's attention shape (9 query heads, 3 key/value heads, head size 64), bf16 autocast,
causal mask plus a padding mask as training batches have, batches of about 2,048 tokens. The
median of 5 timed calls after 2 warm-ups, the two kernels alternating. This is where
`MATMUL_ATTENTION_MAX_KEYS` in alignloop/models/attention.py comes from. Results:
benchmarks/results/attention_kernels.json.
"""

from __future__ import annotations

import json
import statistics
import time
import types
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from alignloop.models.attention import matmul_attention

RESULTS = Path(__file__).resolve().parent / "results" / "attention_kernels.json"
HEADS, KV_HEADS, HEAD_SIZE = 9, 3, 64
MODULE = types.SimpleNamespace(is_causal=True, training=True, num_key_value_groups=HEADS // KV_HEADS)


def kernels():
    return {"sdpa": lambda q, k, v, mask: sdpa_attention_forward(MODULE, q, k, v, mask)[0],
            "matmul": lambda q, k, v, mask: matmul_attention(MODULE, q, k, v, mask)}


def inputs(batch: int, length: int):
    q = torch.randn(batch, HEADS, length, HEAD_SIZE, requires_grad=True)
    k, v = (torch.randn(batch, KV_HEADS, length, HEAD_SIZE, requires_grad=True) for _ in range(2))
    real = torch.arange(length) < torch.linspace(length // 2, length, batch).long()[:, None]  # (B, T)
    mask = (torch.ones(length, length, dtype=torch.bool).tril()[None] & real[:, None, :])[:, None]
    return q, k, v, mask


def timed(kernel, q, k, v, mask) -> float:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = kernel(q, k, v, mask)
    out.float().square().mean().backward()
    return time.perf_counter() - start


def main() -> None:
    torch.manual_seed(0)
    rows = []
    for length in (64, 128, 192, 256, 512, 1024):
        batch = max(1, 2048 // length)
        q, k, v, mask = inputs(batch, length)
        times: dict[str, list[float]] = {name: [] for name in kernels()}
        for call in range(7):
            for name, kernel in kernels().items():
                seconds = timed(kernel, q, k, v, mask)
                if call >= 2:
                    times[name].append(seconds)
        ms = {name: statistics.median(values) * 1000 for name, values in times.items()}
        rows.append({"tokens": length, "batch": batch, **{f"{name}_ms": round(v, 2) for name, v in ms.items()}})
    table = Table(title=f"attention fwd+bwd, bf16 autocast, {torch.get_num_threads()} threads")
    for column in ("tokens", "batch", "sdpa ms", "matmul ms", "matmul / sdpa"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row["tokens"]), str(row["batch"]), f"{row['sdpa_ms']:.1f}", f"{row['matmul_ms']:.1f}",
                      f"{row['matmul_ms'] / row['sdpa_ms']:.2f}")
    Console().print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows},
                                  indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
