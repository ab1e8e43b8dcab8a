"""`alignloop ARGS` run inside the test process, through the same Typer app the executable runs.

A fresh `python -m alignloop` spends ~10 s importing torch, transformers and peft on a 2-core
CPU before it reads its arguments; the suite had a dozen such calls whose point is a command's
parsing, its named errors or its output files, not the process. Those run here, where the
imports are already paid. What needs a real process (a kill and resume, DDP under
`accelerate launch`, the README's demo) still starts one.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def alignloop_in_process(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Exit code, stdout and stderr of `alignloop ARGS` (run from `cwd`, offline as the
    subprocesses are), as `subprocess.run` gives them. An exception that the command lets escape
    fails the test with its traceback."""
    import datasets
    import huggingface_hub
    import pytest
    from typer.testing import CliRunner

    from alignloop.cli.main import app

    with contextlib.chdir(cwd), pytest.MonkeyPatch.context() as patch:
        # huggingface_hub and datasets read HF_HUB_OFFLINE once, at import: set their copies too.
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        patch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        result = CliRunner().invoke(app, [str(arg) for arg in args], prog_name="alignloop", catch_exceptions=False)
    return subprocess.CompletedProcess(["alignloop", *args], result.exit_code, result.stdout, result.stderr)
