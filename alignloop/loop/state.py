"""Where a loop stands: which steps of which round are done, and what they produced.

`state.json` is rewritten atomically (temporary file + rename) after every step, so a loop
killed at any moment resumes at the first step not recorded as done. Steps are written to be
safe to run again when they were interrupted half-way (generation tops up, feedback counts
what is stored, training resumes from its checkpoints).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alignloop.errors import UserError

STATE_FILE = "state.json"


class LoopStateError(RuntimeError, UserError):
    """A fresh loop would overwrite an existing one, or a resume has nothing to resume."""


@dataclass
class LoopState:
    rounds: int
    done: dict[str, list[str]] = field(default_factory=dict)  # round -> completed steps, in order
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)  # round -> {name: path or value}

    def is_done(self, round_number: int, step: str) -> bool:
        return step in self.done.get(str(round_number), [])

    def mark_done(self, round_number: int, step: str, **artifacts: Any) -> None:
        self.done.setdefault(str(round_number), []).append(step)
        self.artifacts.setdefault(str(round_number), {}).update(artifacts)

    def artifact(self, round_number: int, name: str, default: Any = None) -> Any:
        return self.artifacts.get(str(round_number), {}).get(name, default)


def load_state(loop_dir: Path, rounds: int, resume: bool) -> LoopState:
    path = loop_dir / STATE_FILE
    if not resume:
        if path.exists():
            raise LoopStateError(f"{loop_dir} already holds a loop ({STATE_FILE}); pass --resume to continue it, "
                                 "or set output_dir to a new folder")
        return LoopState(rounds)
    if not path.is_file():
        raise LoopStateError(f"nothing to resume: no {STATE_FILE} in {loop_dir}")
    data = json.loads(path.read_text(encoding="utf-8"))
    return LoopState(rounds, data.get("done", {}), data.get("artifacts", {}))


def save_state(loop_dir: Path, state: LoopState) -> None:
    loop_dir.mkdir(parents=True, exist_ok=True)
    staging = loop_dir / f".{STATE_FILE}.tmp"
    staging.write_text(json.dumps(asdict(state), indent=2), encoding="utf-8")
    os.replace(staging, loop_dir / STATE_FILE)
