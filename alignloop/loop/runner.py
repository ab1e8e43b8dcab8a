"""`alignloop loop`: rounds of generate → feedback → export → reward model → RL → evaluate → report,
checkpointed step by step (see `state.py`)."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from alignloop.config import config_to_yaml
from alignloop.loop.config import STEPS, LoopConfig
from alignloop.loop.state import LoopState, load_state, save_state
from alignloop.loop.steps import STEP_FUNCTIONS, RoundContext
from alignloop.loop.summary import loop_summary, print_summary


def run_loop(config: LoopConfig, resume: bool = False, console: Console | None = None) -> Path:
    """Run (or resume) every round; returns the loop folder."""
    console = console or Console(highlight=False)
    loop_dir = Path(config.output_dir)
    state = load_state(loop_dir, config.rounds, resume)
    loop_dir.mkdir(parents=True, exist_ok=True)
    (loop_dir / "config.yaml").write_text(config_to_yaml(config), encoding="utf-8")
    for number in range(1, config.rounds + 1):
        ctx = RoundContext(config, state, number, console)
        for step in STEPS:
            if state.is_done(number, step):
                continue
            console.rule(f"round {number} of {config.rounds}: {step}")
            started = time.perf_counter()
            produced = STEP_FUNCTIONS[step](ctx)
            state.mark_done(number, step, **produced, **{f"seconds_{step}": round(time.perf_counter() - started, 1)})
            save_state(loop_dir, state)
    print_summary(loop_summary(loop_dir, time_spent(state)), console)
    return loop_dir


def time_spent(state: LoopState) -> float:
    """Seconds of every step of every round, across interruptions and resumes."""
    return sum(v for steps in state.artifacts.values() for k, v in steps.items() if k.startswith("seconds_"))
