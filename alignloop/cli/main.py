"""`alignloop`: the one command tree. Each training command reads a YAML recipe plus
`key.sub=value` overrides into its typed config (the rows of `alignloop.cli.commands`); bad input
ends with one clear line, never a traceback.

This module must stay light: `alignloop --help` and `alignloop serve` import it, and the web
server never loads torch. Every command imports what it runs inside its body.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from alignloop.cli.commands import Overrides, Resume, add_recipe_commands
from alignloop.cli.errors import friendly_errors
from alignloop.cli.feedback import db_app, feedback_app, serve
from alignloop.cli.report import report_command

out = Console(highlight=False)

app = typer.Typer(
    help="alignloop: reinforcement learning from human feedback for language models.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Built-in offline models: list them, prepare (convert) them.", no_args_is_help=True)
data_app = typer.Typer(help="Check and convert datasets.", no_args_is_help=True)
rm_app = typer.Typer(help="Reward models: train on pairs / rankings / ratings, evaluate, score.", no_args_is_help=True)
add_recipe_commands({"": app, "rm": rm_app}, out)
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")
app.add_typer(rm_app, name="rm")
app.add_typer(db_app, name="db")
app.add_typer(feedback_app, name="feedback")
app.command("serve")(serve)
app.command("report")(report_command)


@app.command("push")
@friendly_errors
def push(
    run_dir: Path = typer.Argument(..., help="a training run folder (with final/) or a loop folder (its last policy)"),
    repo: str = typer.Option(..., "--repo", help="hub repository id, e.g. you/smollm2-detox"),
    private: bool = typer.Option(False, "--private", help="create the repository private"),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="another hub's URL (default: HF_ENDPOINT or the Hub)"),
) -> None:
    """Upload a trained model to the Hugging Face Hub: final/ at the root (with its model card), the run's record under alignloop/."""
    from alignloop.report.push import push_run

    result = push_run(run_dir, repo, private=private, endpoint=endpoint)
    out.print(f"pushed {len(result.files)} files to {result.repo_url} ({result.commit_url})")


@app.command("demo")
@friendly_errors
def demo(overrides: Overrides = None, resume: Resume = False) -> None:
    """Detoxify the built-in model with the whole RLHF loop on a CPU and print the result (about
    8-10 minutes on 2 cores with native bf16, 11-15 on a 2-core AVX2-only CPU)."""
    from alignloop.loop import run_loop
    from alignloop.loop.demo import demo_config

    loop_dir = run_loop(demo_config(overrides or []), resume=resume)
    out.print(f"[bold green]done[/]: report {loop_dir / 'report.html'}")


@rm_app.command("eval")
@friendly_errors
def rm_eval(
    model: Path = typer.Option(..., "--model", help="a saved reward model folder (final/ of `rm train`)"),
    data: list[Path] = typer.Option(..., "--data", help="held-out pairs / rankings / ratings file (repeatable)"),
    hh_rlhf: bool = typer.Option(False, "--hh-rlhf", help="the pairs file holds raw HH-RLHF dialogues"),
    max_length: int = typer.Option(512, "--max-length", help="longest prompt + response in tokens"),
) -> None:
    """Pairwise accuracy, calibration and Kendall tau of a reward model on held-out judgements."""
    from alignloop.data import PreferenceDataConfig, encode_preference_records, read_preference_data
    from alignloop.evaluation.reward_evaluation import evaluate_reward_model, metric_text
    from alignloop.models import load_reward_model

    reward_model, tokenizer = load_reward_model(model)
    records = read_preference_data(PreferenceDataConfig(train=data, hh_rlhf=hh_rlhf, max_length=max_length))
    encoded, report = encode_preference_records(tokenizer, records.train, max_length=max_length)
    out.print(f"data: {records.report}; encoded: {report}")
    table = Table("held-out judgements", "value", title=f"reward model {model}")
    for key, value in evaluate_reward_model(reward_model, encoded, tokenizer.pad_token_id).items():
        table.add_row(key, metric_text(key, value))
    out.print(table)


@rm_app.command("export")
@friendly_errors
def rm_export(
    model: Path = typer.Option(..., "--model", help="a saved reward model folder (final/ of `rm train`)"),
    out_dir: Path = typer.Option(..., "--out", help="folder to write the AutoModelForSequenceClassification model to"),
) -> None:
    """Write a reward model as a transformers AutoModelForSequenceClassification folder (LoRA merged)."""
    from alignloop.models import export_sequence_classifier, load_reward_model

    reward_model, tokenizer = load_reward_model(model)
    path = export_sequence_classifier(reward_model, tokenizer, out_dir)
    mean, std = reward_model.normalization
    out.print(f"wrote {path}: AutoModelForSequenceClassification.from_pretrained(...) gives logits; alignloop's raw "
              f"reward is logits + {float(reward_model.head.bias):.6g}, normalised (raw - {mean:.6g}) / {std:.6g} "
              f"(config.json: alignloop_reward)")


def _aggregate_option(value: str) -> str:
    """--aggregate checked when the command starts, naming the option (the list lives with the
    ensemble code, which imports torch: read only when a command that scores runs)."""
    from alignloop.models.reward_ensemble import AGGREGATES

    if value not in AGGREGATES:
        raise typer.BadParameter(f"expected one of {', '.join(AGGREGATES)}, got {value!r}")
    return value


@rm_app.command("score")
@friendly_errors
def rm_score(
    model: Path = typer.Option(..., "--model", help="a saved reward model folder"),
    input: Path = typer.Option(..., "--input", help="JSONL / JSON / CSV / Parquet with prompt and response"),
    output: Path = typer.Option(..., "--output", help="JSONL written with a 'reward' field added"),
    raw: bool = typer.Option(False, "--raw", help="raw scores instead of normalised ones"),
    batch_size: int = typer.Option(8, "--batch-size", help="responses scored per forward pass"),
    aggregate: str = typer.Option("mean", "--aggregate", callback=_aggregate_option,
                                  help="an ensemble: mean, min or mean_minus_std"),
    penalty: float = typer.Option(1.0, "--penalty", help="the λ of --aggregate mean_minus_std"),
) -> None:
    """Score prompt + response records with a saved reward model (an ensemble's rows also get
    'disagreement', its members' spread)."""
    from alignloop.data import SFTExample, read_records
    from alignloop.models import RewardScorer

    scorer = RewardScorer.load(str(model), normalize=not raw, batch_size=batch_size, aggregate=aggregate,
                               penalty=penalty)
    records = read_records(input, SFTExample)
    pairs = [record.prompt_and_response() for record in records]
    rewards = scorer([p for p, _ in pairs], [r for _, r in pairs])
    spread = scorer.last_disagreement if scorer.model.members > 1 else [None] * len(rewards)
    rows = [{**record.model_dump(mode="json", exclude_none=True), "reward": reward,
             **({} if disagreement is None else {"disagreement": disagreement})}
            for record, reward, disagreement in zip(records, rewards, spread)]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    out.print(f"scored {len(rows)} responses into {output}")


@rm_app.command("serve")
@friendly_errors
def rm_serve(
    model: Optional[Path] = typer.Option(None, "--model", help="serve this saved reward model folder"),
    source: Optional[Path] = typer.Option(None, "--source", help="or: a YAML reward-source config (any type, or a mix)"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    port: int = typer.Option(8000, "--port", help="TCP port"),
    aggregate: str = typer.Option("mean", "--aggregate", callback=_aggregate_option,
                                  help="--model an ensemble: mean, min or mean_minus_std"),
    penalty: float = typer.Option(1.0, "--penalty", help="the λ of --aggregate mean_minus_std"),
) -> None:
    """Serve rewards over HTTP: POST /score {prompts, responses} -> {rewards, diagnostics}; GET /health."""
    from alignloop.config import ConfigError, load_config
    from alignloop.rewards import RewardSourceConfig, build_reward_source
    from alignloop.rewards.server import serve_reward_source

    if (model is None) == (source is None):
        raise ConfigError("rm serve: pass exactly one of --model DIR or --source CONFIG.yaml")
    config = (
        RewardSourceConfig(type="reward_model", path=str(model), aggregate=aggregate, penalty=penalty)
        if model is not None
        else load_config(RewardSourceConfig, source)
    )
    serve_reward_source(build_reward_source(config), host=host, port=port)


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
    style: str = typer.Option("trl-conversational", "--style",
                              help="trl-conversational (TRL's conversational preference rows) or trl-standard "
                                   "(strings; only dialogues of one human turn have a string prompt)"),
) -> None:
    """Convert HH-RLHF dialogues into prompt + chosen + rejected preference pairs, in TRL's format."""
    from alignloop.data import convert_hh_file

    report = convert_hh_file(source, target, style=style)
    reasons = ", ".join(f"{reason} {count}" for reason, count in report.skipped.items())
    out.print(f"wrote {report.written} pairs to {target}; skipped {sum(report.skipped.values())}"
              + (f" ({reasons})" if reasons else ""))


@data_app.command("check")
@friendly_errors
def data_check(
    path: Path = typer.Argument(..., help="a JSONL / JSON / CSV / Parquet file or a datasets folder"),
    kind: str = typer.Option("sft", "--kind", help="record kind: sft, preference, ranking, rating, binary, prompt"),
) -> None:
    """Validate a dataset against its schema and report every problem with file:line:field."""
    from alignloop.config import ConfigError
    from alignloop.data import RECORD_SCHEMAS, read_records

    if kind not in RECORD_SCHEMAS:
        raise ConfigError(f"--kind {kind!r}: expected one of {', '.join(RECORD_SCHEMAS)}")
    records = read_records(path, RECORD_SCHEMAS[kind])
    out.print(f"{path}: {len(records)} valid {kind} records")


def main() -> None:
    # transformers' own per-file tqdm bars ("Loading weights") would interleave with ours. The
    # variable does what transformers' disable_progress_bar() does (it switches off the hub's
    # bars, which transformers follows) without importing transformers here: seconds.
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    app(prog_name="alignloop")


if __name__ == "__main__":  # pragma: no cover
    main()
