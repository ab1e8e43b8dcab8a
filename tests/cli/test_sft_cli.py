"""`alignloop sft` end to end: exact resume after a kill and 2-process DDP in real processes;
the named errors a user sees for bad input, and the help, through the same app in this process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from alignloop.engine import KILL_AT_STEP_ENV, read_metrics
from cli_in_process import alignloop_in_process

ROOT = Path(__file__).resolve().parents[2]
TINY_RECIPE = ROOT / "recipes" / "sft-tiny-cpu.yaml"


def alignloop(*args: str, env_extra: dict | None = None, launcher: list[str] | None = None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **(env_extra or {}))
    command = (launcher or [sys.executable, "-m", "alignloop"]) + list(args)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def sft(tiny_model_dir, out: Path, *overrides: str, **kwargs):
    return alignloop(
        "sft", "--config", str(TINY_RECIPE), f"model.name={tiny_model_dir}", f"train.output_dir={out}", *overrides, **kwargs
    )


def losses(out: Path) -> list[float]:
    return [r["train/loss"] for r in read_metrics(out / "metrics.jsonl") if "train/loss" in r]


def test_killed_run_resumes_with_identical_losses(tiny_model_dir, tmp_path):
    straight = sft(tiny_model_dir, tmp_path / "straight", "train.max_steps=6")
    assert straight.returncode == 0, straight.stderr

    out = tmp_path / "killed"
    killed = sft(tiny_model_dir, out, "train.max_steps=6", "train.save_every=3", env_extra={KILL_AT_STEP_ENV: "4"})
    assert killed.returncode == -signal.SIGKILL
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000003"]

    resumed = sft(tiny_model_dir, out, "train.max_steps=6", "train.save_every=3", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert losses(out) == pytest.approx(losses(tmp_path / "straight"), abs=1e-6)
    assert (out / "final" / "config.json").is_file()


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tiny_model_dir, tmp_path):
    single = sft(tiny_model_dir, tmp_path / "one", "train.batch_size=4", "train.max_steps=4", "train.save_every=4")
    assert single.returncode == 0, single.stderr
    # accelerate's `--cpu` launcher starts one process unless MPI is set up; `--multi_gpu` starts
    # torchrun, and with no CUDA device alignloop's Accelerator runs DDP over gloo on the CPU.
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "alignloop"]
    double = sft(tiny_model_dir, tmp_path / "two", "train.batch_size=2", "train.max_steps=4", "train.save_every=4",
                 launcher=launcher)
    assert double.returncode == 0, double.stderr[-3000:]
    info = json.loads((tmp_path / "two" / "run_info.json").read_text())
    assert info["world_size"] == 2
    # Same examples per step, loss normalised by the global token count: only the order of
    # floating-point reductions differs between one and two processes.
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), abs=1e-4)
    checkpoint = tmp_path / "two" / "checkpoints" / "step-00000004"
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "optimizer.pt", "rng-0.pt", "rng-1.pt", "scheduler.pt", "trainable.safetensors", "trainer_state.json"
    ]


def test_unknown_config_key_is_named_with_the_valid_ones(tmp_path):
    done = alignloop_in_process("sft", "--config", TINY_RECIPE, "train.lrr=0.1")
    assert done.returncode == 2
    assert "unknown key 'train.lrr' (did you mean 'lr'?)" in done.stderr
    assert "valid keys here:" in done.stderr and "Traceback" not in done.stderr


def test_unknown_model_name_lists_the_built_ins(tmp_path):
    done = alignloop_in_process("sft", "--config", TINY_RECIPE, "model.name=no-such-model", f"train.output_dir={tmp_path}")
    assert done.returncode == 2
    assert "smollm2-135m-instruct" in done.stderr and "Traceback" not in done.stderr


def test_bad_data_line_is_named_with_file_line_and_field(tiny_model_dir, tmp_path):
    data = tmp_path / "sft.jsonl"
    data.write_text('{"prompt": "hi", "response": "hello"}\n{"prompt": "x", "response": "y"}\n{"prompt": "q", "response": 5}\n')
    done = alignloop_in_process("sft", "--config", TINY_RECIPE, f"model.name={tiny_model_dir}",
                                f"train.output_dir={tmp_path / 'out'}", f"data.train={data}")
    assert done.returncode == 2
    assert "sft.jsonl:3" in done.stderr and "response" in done.stderr and "Traceback" not in done.stderr


def test_help_lists_every_config_key_with_its_help():
    done = alignloop_in_process("sft", "--help")
    assert done.returncode == 0
    for key in ("train.lr", "train.mixed_precision", "model.lora", "data.packing", "save_merged"):
        assert key in done.stdout
