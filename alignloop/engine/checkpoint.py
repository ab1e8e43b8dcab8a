"""Resumable checkpoints: trainable weights, optimizer, scheduler, RNG streams and the step.

Only the *trainable* tensors are written: for LoRA that is the adapter (megabytes, not the
whole base model), for full fine-tuning every weight. The data position needs no file of its
own: the sample order is a pure function of (seed, epoch), so the global step fixes it.

A checkpoint is written into a temporary folder and renamed into place once complete, so a
process killed mid-write never leaves a checkpoint that looks valid but is not. Every
process writes its own RNG state (dropout streams differ per rank); the main process writes
the rest — one writer for the shared files.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_PREFIX = "step-"
TRAINER_STATE = "trainer_state.json"


@dataclass(frozen=True)
class TrainerState:
    """What the loop needs to continue exactly where it stopped."""

    global_step: int
    total_steps: int
    tokens_seen: int
    extra: dict


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"{CHECKPOINT_PREFIX}{step:08d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first (temporary folders are ignored)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(CHECKPOINT_PREFIX) and (p / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state_dict(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [name for name, p in params.items() if p.requires_grad and name not in tensors]
    unexpected = [name for name in tensors if name not in params]
    if missing or unexpected:
        raise ValueError(
            "checkpoint does not match the model "
            f"(missing: {missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected: {unexpected[:3]})"
        )
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def staging_dir(root: Path, step: int) -> Path:
    return root / f".tmp-{CHECKPOINT_PREFIX}{step:08d}"


def write_rank_state(staging: Path, rank: int) -> None:
    """Each process's own RNG streams (called on every rank)."""
    torch.save(rng_state(), staging / f"rng-{rank}.pt")


def write_shared_state(staging: Path, model, optimizer, scheduler, state: TrainerState) -> None:
    """Weights, optimizer, scheduler and step (called on the main process only)."""
    save_file(trainable_state_dict(model), str(staging / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), staging / "optimizer.pt")
    torch.save(scheduler.state_dict(), staging / "scheduler.pt")
    (staging / TRAINER_STATE).write_text(json.dumps(asdict(state), indent=2))


def publish(staging: Path, final: Path, keep: int | None) -> None:
    """Atomically move a complete checkpoint into place, then prune the oldest beyond `keep`."""
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    if keep is not None:
        for old in list_checkpoints(final.parent)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def read_checkpoint(path: Path, model, optimizer, scheduler, rank: int) -> TrainerState:
    """Restore everything written by `write_*_state` into live objects; return the loop state."""
    load_trainable_state_dict(model, load_file(str(path / "trainable.safetensors")))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    rng_file = path / f"rng-{rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    data = json.loads((path / TRAINER_STATE).read_text())
    return TrainerState(**data)
