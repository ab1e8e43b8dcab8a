"""The command table: every command that reads a recipe into a typed config and runs it.

`alignloop sft`, `dpo`, `kto`, `ppo`, `grpo`, `rloo`, `rm train`, `loop`, `eval` and `best-of-n` differ
only in which config class reads the recipe and which function runs it, so they are rows of
`RECIPE_COMMANDS` and one function builds each command from its row. Nothing here imports the
module a row names until that command runs or its `--help` is asked for: `alignloop --help`
lists the commands from the rows' summaries without loading torch.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.markup import escape
from typer.core import TyperCommand

from alignloop.cli.errors import friendly_errors

__all__ = ["RECIPE_COMMANDS", "Overrides", "RecipeCommand", "Resume", "add_recipe_commands"]

TRAINING_OPTIONS = ("config", "overrides", "resume", "resume_from")


@dataclass(frozen=True)
class RecipeCommand:
    """A command that reads `--config RECIPE KEY=VALUE ...` into `module.config_class` and
    calls `module.run_function(config, resume=...)` (without `resume` when the command has no
    --resume)."""

    module: str
    config_class: str
    run_function: str
    summary: str  # the one line of `alignloop --help`
    options: tuple[str, ...] = TRAINING_OPTIONS
    defaults: tuple[str, ...] = ()  # overrides applied before the person's own (theirs win)
    overrides_example: str = "train.lr=1e-4 model.lora.r=16"
    done: Callable[[Any], str] | None = None  # a sentence about what the run returned

    def config(self) -> type:
        return getattr(importlib.import_module(self.module), self.config_class)

    def run(self) -> Callable[..., Any]:
        return getattr(importlib.import_module(self.module), self.run_function)


def _loop_done(loop_dir: Path) -> str:
    return f"[bold green]done[/]: {loop_dir}; report {loop_dir / 'report.html'}"


RECIPE_COMMANDS: dict[str, RecipeCommand] = {
    "sft": RecipeCommand("alignloop.algorithms.sft", "SFTConfig", "run_sft",
                         "Supervised fine-tuning on prompt → response pairs (completion-only loss, LoRA or full)."),
    "dpo": RecipeCommand("alignloop.algorithms.dpo", "DPOConfig", "run_dpo",
                         "Direct preference optimisation (DPO, cDPO, rDPO, IPO, hinge, SimPO) on preference pairs."),
    "kto": RecipeCommand("alignloop.algorithms.kto", "KTOConfig", "run_kto",
                         "KTO on thumbs-up / thumbs-down feedback (preference pairs are split into one of each)."),
    "ppo": RecipeCommand("alignloop.algorithms.ppo", "PPOConfig", "run_ppo",
                         "PPO: value head, GAE, clipped updates, per-token KL penalty against the frozen reference."),
    "grpo": RecipeCommand("alignloop.algorithms.grpo", "GRPOConfig", "run_grpo",
                          "GRPO: K samples per prompt, group-normalised advantages, KL to the reference in the loss.",
                          defaults=("group.advantage=grpo",)),
    # RLOO is GRPO's loop with the leave-one-out baseline and the KL in the reward.
    "rloo": RecipeCommand("alignloop.algorithms.grpo", "GRPOConfig", "run_grpo",
                          "RLOO: K samples per prompt, leave-one-out baseline, KL to the reference in the reward.",
                          defaults=("group.advantage=rloo", "group.kl_in=reward")),
    "rm train": RecipeCommand("alignloop.algorithms.reward", "RewardConfig", "run_reward",
                              "Train a reward model (Bradley–Terry pairs, Plackett–Luce rankings, ratings)."),
    "loop": RecipeCommand("alignloop.loop", "LoopConfig", "run_loop",
                          "The RLHF loop: rounds of generate → feedback → reward model → RL → evaluate → report.",
                          options=("config", "overrides", "resume"), done=_loop_done),
    "eval": RecipeCommand("alignloop.cli.evaluate", "EvalConfig", "evaluate_and_print",
                          "Evaluate a policy against its reference on held-out prompts: scores, KL, win rates, diversity.",
                          options=("config", "overrides"),
                          overrides_example="policy=runs/ppo/final samples_per_prompt=8"),
    "best-of-n": RecipeCommand("alignloop.algorithms.best_of_n", "BestOfNConfig", "run_best_of_n",
                               "Best-of-n sampling: n replies per prompt, the one a reward (or an ensemble's "
                               "conservative aggregate) scores highest kept.",
                               options=("config", "overrides"),
                               overrides_example="policy=runs/ppo/final prompts=prompts.jsonl n=8 reward.type=toxicity"),
}


def options_epilog(config_class: type) -> str:
    """Every config key with its default and one line of help, for the command's --help."""
    from alignloop.config import field_help

    rows = [f"  {key} = {escape(default)}  —  {escape(text)}" for key, default, text in field_help(config_class)]
    return "Config keys (set in the recipe or as KEY=VALUE overrides):\n\n" + "\n\n".join(rows)


def overrides_argument(example: str) -> Any:
    return Annotated[Optional[list[str]], typer.Argument(help=f"overrides such as {example}", show_default=False)]


ConfigOption = Annotated[Optional[Path], typer.Option("--config", "-c", exists=False,
                                                      help="YAML recipe; overrides follow as KEY=VALUE")]
Overrides = overrides_argument(RecipeCommand.overrides_example)
Resume = Annotated[bool, typer.Option("--resume", help="continue from the newest checkpoint in train.output_dir")]
ResumeFrom = Annotated[Optional[Path], typer.Option("--resume-from", help="continue from this checkpoint folder instead")]


def _parameters(spec: RecipeCommand) -> list[inspect.Parameter]:
    """The command-line parameters the row takes, as Typer reads them from a signature."""
    kinds = {"config": (ConfigOption, None), "overrides": (overrides_argument(spec.overrides_example), None),
             "resume": (Resume, False), "resume_from": (ResumeFrom, None)}
    return [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=kinds[name][1], annotation=kinds[name][0])
            for name in spec.options]


def run_recipe(spec: RecipeCommand, config: Path | None, overrides: list[str], resume: bool | str) -> Any:
    """Read the recipe and overrides into the row's config class and run it."""
    from alignloop.config import load_config

    settings = load_config(spec.config(), config, [*spec.defaults, *overrides])
    return spec.run()(settings, resume=resume) if "resume" in spec.options else spec.run()(settings)


def recipe_command(spec: RecipeCommand, out) -> Callable[..., None]:
    """The Typer callback of a row: the options the row names, input errors as one line."""

    def command(config: Path | None = None, overrides: list[str] | None = None, resume: bool = False,
                resume_from: Path | None = None) -> None:
        result = run_recipe(spec, config, overrides or [], str(resume_from) if resume_from is not None else resume)
        if spec.done is not None:
            out.print(spec.done(result))

    # Typer reads the options from the signature: each row shows only the ones it takes.
    command.__signature__ = inspect.Signature(_parameters(spec))  # type: ignore[attr-defined]
    command.__doc__ = spec.summary
    return friendly_errors(command)


def lazy_help_class(spec: RecipeCommand) -> type[TyperCommand]:
    """A command class whose help lists the config keys, read from the config class only when
    this command's --help is shown (importing it loads torch: seconds)."""

    class RecipeCommandHelp(TyperCommand):
        def format_help(self, ctx, formatter) -> None:
            self.epilog = options_epilog(spec.config())
            super().format_help(ctx, formatter)

    return RecipeCommandHelp


def add_recipe_commands(groups: dict[str, typer.Typer], out) -> None:
    """Register every row under its group (`rm train` in `rm`; the others in the root, key "")."""
    for name, spec in RECIPE_COMMANDS.items():
        *group, command_name = name.split()
        groups[" ".join(group)].command(command_name, cls=lazy_help_class(spec), help=spec.summary)(
            recipe_command(spec, out))
