"""Progress where no terminal redraws a bar (a log file, CI, `nohup`): plain lines, rate-limited."""

from __future__ import annotations

import io

from rich.console import Console

from alignloop.engine.progress import PlainProgressLines, TrainingProgress, duration_text, plain_progress_line


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def log_console() -> tuple[Console, io.StringIO]:
    sink = io.StringIO()
    return Console(file=sink, width=200), sink  # a file: not a terminal


def run_steps(total: int, seconds_per_step: float, completed: int = 0) -> list[str]:
    console, sink = log_console()
    clock = FakeClock()
    lines = PlainProgressLines(console, "rl", total, completed, clock=clock)
    for _ in range(total - completed):
        clock.now += seconds_per_step
        lines.advance("reward 0.500")
    return sink.getvalue().splitlines()


def test_a_long_stage_prints_a_line_per_tenth_and_the_last():
    lines = run_steps(1000, 0.1)  # 100 s: a tenth every 10 s
    assert len(lines) == 10
    assert lines[0] == "rl: step 100/1000 (10 %), 10 s elapsed, ETA 1 min 30 s, reward 0.500"
    assert lines[-1] == "rl: step 1000/1000 (100 %), 1 min 40 s elapsed, reward 0.500"


def test_a_fast_stage_prints_only_its_last_line():
    assert run_steps(1000, 0.001) == ["rl: step 1000/1000 (100 %), 1 s elapsed, reward 0.500"]


def test_a_slow_stage_still_says_it_is_alive_between_tenths():
    lines = run_steps(200, 12.0)  # 40 min, a tenth every 4 min: a line once 30 s have passed
    steps = [int(line.split("step ")[1].split("/")[0]) for line in lines]
    assert all(later - earlier <= 3 for earlier, later in zip(steps, steps[1:])) and steps[-1] == 200
    assert len(lines) < 100  # not one per step
    assert lines[0].startswith("rl: step 3/200 (1 %), 36 s elapsed, ETA 39 min 24 s")


def test_a_resumed_stage_counts_its_eta_from_the_steps_run_now():
    lines = run_steps(10, 60.0, completed=5)
    assert lines[0] == "rl: step 6/10 (60 %), 1 min 0 s elapsed, ETA 4 min 0 s, reward 0.500"


def test_the_training_progress_writes_plain_lines_to_a_log_and_a_bar_to_a_terminal():
    console, sink = log_console()
    with TrainingProgress(20, 0, enabled=True, description="generating candidates", console=console) as progress:
        for _ in range(20):
            progress.advance({"train/loss": 1.5, "train/tokens_per_s": 1000.0})
    assert sink.getvalue().splitlines()[-1].startswith("generating candidates: step 20/20 (100 %), 0 s elapsed, loss 1.5000")
    terminal = io.StringIO()
    with TrainingProgress(3, 0, enabled=True, console=Console(file=terminal, force_terminal=True)) as progress:
        for _ in range(3):
            progress.advance({})
    assert "step 3/3" not in terminal.getvalue()
    quiet, quiet_sink = log_console()
    with TrainingProgress(3, 0, enabled=False, console=quiet) as progress:
        progress.advance({})
    assert quiet_sink.getvalue() == ""


def test_durations_read_at_a_glance():
    assert [duration_text(s) for s in (0.4, 41, 82, 3600 + 5 * 60 + 7)] == ["0 s", "41 s", "1 min 22 s", "1 h 05 min"]
    assert plain_progress_line("eval", 0, 0, 0.0) == "eval: step 0/0 (0 %), 0 s elapsed"
