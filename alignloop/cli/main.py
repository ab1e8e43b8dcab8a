"""`alignloop` command line: each training command reads a YAML recipe plus `key.sub=value`
overrides into its typed config; bad input ends with one clear line, never a traceback."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from alignloop.config import ConfigError, field_help

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

app = typer.Typer(
    help="alignloop: reinforcement learning from human feedback for language models.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Built-in offline models: list them, prepare (convert) them.", no_args_is_help=True)
data_app = typer.Typer(help="Check and convert datasets.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by input (config, data, model name, resume, NaN): shown as one message."""
    from alignloop.data import DataError
    from alignloop.engine import NonFiniteLossError, ResumeError
    from alignloop.models import ModelLoadError

    return (ConfigError, DataError, ModelLoadError, ResumeError, NonFiniteLossError, FileNotFoundError)


def friendly_errors(command: Callable) -> Callable:
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except user_errors() as error:
            err.print(f"[bold red]error[/]: {error}", markup=True, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def options_epilog(config_class) -> str:
    """Every config key with its default and one line of help, for the command's --help."""
    rows = [f"  {key} = {escape(default)}  —  {escape(text)}" for key, default, text in field_help(config_class)]
    return "Config keys (set in the recipe or as KEY=VALUE overrides):\n\n" + "\n\n".join(rows)


CONFIG_OPTION = typer.Option(None, "--config", "-c", help="YAML recipe; overrides follow as KEY=VALUE", exists=False)
OVERRIDES_ARG = typer.Argument(None, help="overrides such as train.lr=1e-4 model.lora.r=16", show_default=False)
RESUME_OPTION = typer.Option(False, "--resume", help="continue from the newest checkpoint in train.output_dir")
RESUME_FROM_OPTION = typer.Option(None, "--resume-from", help="continue from this checkpoint folder instead")


def _resume_value(resume: bool, resume_from: Optional[Path]) -> bool | str:
    return str(resume_from) if resume_from is not None else resume


def _sft_epilog() -> str:
    from alignloop.algorithms.sft import SFTConfig

    return options_epilog(SFTConfig)


@app.command(epilog=_sft_epilog())
@friendly_errors
def sft(
    config: Optional[Path] = CONFIG_OPTION,
    overrides: Optional[list[str]] = OVERRIDES_ARG,
    resume: bool = RESUME_OPTION,
    resume_from: Optional[Path] = RESUME_FROM_OPTION,
) -> None:
    """Supervised fine-tuning on prompt → response pairs (completion-only loss, LoRA or full)."""
    from alignloop.algorithms.sft import SFTConfig, run_sft
    from alignloop.config import load_config

    run_sft(load_config(SFTConfig, config, overrides or []), resume=_resume_value(resume, resume_from))


@models_app.command("list")
def models_list() -> None:
    """Show the built-in models and whether each is ready to load offline."""
    from alignloop.models import builtin_status

    table = Table("name", "parameters", "package installed", "ready", "description", "cache folder")
    for row in builtin_status():
        table.add_row(row.name, row.params, _yes(row.installed), _yes(row.ready), row.description, str(row.path))
    out.print(table)


def _yes(flag: bool) -> str:
    return "[green]yes[/]" if flag else "[red]no[/]"


@models_app.command("prepare")
@friendly_errors
def models_prepare(
    name: str = typer.Argument(..., help="built-in model name (see `alignloop models list`)"),
    force: bool = typer.Option(False, "--force", help="convert again even if already prepared"),
) -> None:
    """Convert a built-in model once into the cache ($ALIGNLOOP_HOME) as float safetensors."""
    from alignloop.models import prepare_builtin

    out.print(f"prepared {name} in {prepare_builtin(name, force=force)}")


@data_app.command("convert-hh")
@friendly_errors
def data_convert_hh(
    source: Path = typer.Argument(..., help="HH-RLHF style JSONL(.gz) with chosen/rejected dialogues"),
    target: Path = typer.Argument(..., help="output JSONL of preference pairs (prompt as chat messages)"),
) -> None:
    """Convert HH-RLHF dialogues into prompt + chosen + rejected preference pairs."""
    from alignloop.data import convert_hh_file

    report = convert_hh_file(source, target)
    out.print(f"wrote {report.written} pairs to {target}; skipped {sum(report.skipped.values())}: {dict(report.skipped)}")


@data_app.command("check")
@friendly_errors
def data_check(
    path: Path = typer.Argument(..., help="a JSONL / JSON / CSV / Parquet file or a datasets folder"),
    kind: str = typer.Option("sft", "--kind", help="record kind: sft, preference, ranking, rating, binary, prompt"),
) -> None:
    """Validate a dataset against its schema and report every problem with file:line:field."""
    from alignloop.data import RECORD_SCHEMAS, read_records

    if kind not in RECORD_SCHEMAS:
        raise ConfigError(f"--kind {kind!r}: expected one of {', '.join(RECORD_SCHEMAS)}")
    records = read_records(path, RECORD_SCHEMAS[kind])
    out.print(f"{path}: {len(records)} valid {kind} records")


def main() -> None:
    # transformers' own per-file tqdm bars ("Loading weights") would interleave with ours.
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    app(prog_name="alignloop")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
