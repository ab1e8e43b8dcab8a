"""The command table (alignloop/cli/commands.py): one tree whose listing loads no torch, every
row pointing at a real config class and run function, one base class of input errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from alignloop.cli.commands import RECIPE_COMMANDS
from alignloop.errors import UserError
from cli_in_process import alignloop_in_process

HEAVY = ("torch", "transformers", "peft", "accelerate")


def modules_loaded_by(*args: str) -> list[str]:
    """The heavy packages a fresh `alignloop ARGS` process has imported when it exits."""
    code = (
        "import sys\n"
        f"sys.argv = ['alignloop', *{list(args)!r}]\n"
        "from alignloop.cli.main import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return eval(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [("--help",), ("serve", "--help"), ("rm", "--help")])
def test_listing_the_commands_imports_no_ml_stack(args):
    assert modules_loaded_by(*args) == []


def test_every_row_names_a_config_class_and_a_run_function():
    for name, row in RECIPE_COMMANDS.items():
        assert hasattr(row.config(), "model_fields"), name
        assert callable(row.run()), name


def test_a_rows_help_lists_its_config_keys_when_asked():
    done = alignloop_in_process("rm", "train", "--help")
    assert done.returncode == 0 and "--resume-from" in done.stdout
    assert "reward.ensemble" in done.stdout and "train.lr" in done.stdout
    loop_help = alignloop_in_process("loop", "--help")
    assert "--resume " in loop_help.stdout and "--resume-from" not in loop_help.stdout
    assert "rl.method" in loop_help.stdout


def test_rloo_is_grpo_with_the_leave_one_out_defaults_that_overrides_still_beat():
    row = RECIPE_COMMANDS["rloo"]
    assert row.defaults == ("group.advantage=rloo", "group.kl_in=reward")
    assert (row.module, row.config_class) == (RECIPE_COMMANDS["grpo"].module, RECIPE_COMMANDS["grpo"].config_class)


def test_the_errors_shown_as_one_line_share_one_base_and_keep_their_own():
    from alignloop.config import ConfigError
    from alignloop.data import DataError
    from alignloop.engine import NonFiniteLossError, ResumeError
    from alignloop.feedback import service
    from alignloop.feedback.export import ExportError
    from alignloop.loop import LoopStateError
    from alignloop.models import ModelLoadError
    from alignloop.report import ReportError
    from alignloop.report.push import PushError
    from alignloop.rewards import RewardSourceError

    own_bases = {ConfigError: ValueError, DataError: ValueError, ModelLoadError: ValueError, ResumeError: RuntimeError,
                 NonFiniteLossError: RuntimeError, RewardSourceError: RuntimeError, ExportError: ValueError,
                 LoopStateError: RuntimeError, PushError: ValueError, ReportError: ValueError,
                 service.NotFound: LookupError, service.InvalidRequest: ValueError, service.Forbidden: PermissionError}
    for error, base in own_bases.items():
        assert issubclass(error, UserError) and issubclass(error, base), error


def test_an_input_error_of_any_layer_is_one_line_with_status_2(tmp_path):
    done = alignloop_in_process("loop", "--config", tmp_path / "missing.yaml")
    assert done.returncode == 2 and "recipe file not found" in done.stderr and "Traceback" not in done.stderr
    done = alignloop_in_process("report", tmp_path / "nowhere")
    assert done.returncode == 2 and "not a folder" in done.stderr
