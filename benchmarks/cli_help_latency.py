"""How long `alignloop --help`, `alignloop serve --help` and `alignloop sft --help` take in a
fresh process: what a person waits for before the first line. The listing and `serve` should
stay under a second (they import no torch); a method's help lists its config keys, which live
next to the method, so it loads the ML stack.

Each command runs `--repeats` times in its own `python -m alignloop` process, commands
alternating so that machine noise hits them alike; the report gives the median and the range.
`--checkout DIR` measures another working tree (e.g. the main branch, for a before / after).

    python benchmarks/cli_help_latency.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from alignloop.hardware import cpu_info

RESULTS = Path(__file__).parent / "results" / cpu_info().slug  # one folder per CPU
ROOT = Path(__file__).resolve().parents[1]
COMMANDS = (("--help",), ("serve", "--help"), ("sft", "--help"))


def seconds_of(args: tuple[str, ...], checkout: Path) -> float:
    """Wall time of one fresh `python -m alignloop ARGS` with `checkout` first on the path."""
    env = dict(os.environ, PYTHONPATH=str(checkout), HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "alignloop", *args], cwd=checkout, env=env, capture_output=True,
                          text=True, timeout=300)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"alignloop {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return elapsed


def measure(checkout: Path, repeats: int) -> dict[str, dict[str, float]]:
    times: dict[str, list[float]] = {" ".join(args): [] for args in COMMANDS}
    for _ in range(repeats):
        for args in COMMANDS:
            times[" ".join(args)].append(seconds_of(args, checkout))
    return {f"alignloop {name}": {"median_s": round(statistics.median(values), 3), "min_s": round(min(values), 3),
                                  "max_s": round(max(values), 3)}
            for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per command")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the working tree to measure")
    parser.add_argument("--label", default="", help="added to the file name, e.g. 'before'")
    args = parser.parse_args()
    cpu = cpu_info()
    report = {"cpu": cpu.model, "cpu_flags": cpu.reported_flags, "threads": cpu.threads, "repeats": args.repeats,
              "checkout": str(args.checkout.resolve()), "python": sys.version.split()[0],
              "commands": measure(args.checkout.resolve(), args.repeats)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"cli_help_latency{'-' + args.label if args.label else ''}.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
