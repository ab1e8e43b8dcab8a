"""Reading what a run or loop folder holds, for the report.

A report is written about folders that may be incomplete: a run still going, a round that stopped
before RL, an evaluation never run. Every reader therefore returns a `Loaded`: the value, or why it
is not available. A missing file becomes a "not available" notice in the report; a file that is
there but malformed becomes a problem naming the file, line and field; neither stops the report.

The schemas follow the shared file contracts (`eval.json`, `annotators.json`, `summary.json`) and
ignore keys they do not know, so a writer may add fields without breaking older reports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alignloop.errors import UserError

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class ReportError(ValueError, UserError):
    """The report cannot be written at all (the folder given is not a folder)."""


@dataclass(frozen=True)
class Loaded(Generic[T]):
    """A piece of a folder: `value`, or `problem` saying why it is absent (`missing`: no file at all)."""

    value: Optional[T]
    problem: Optional[str] = None
    missing: bool = False

    @classmethod
    def absent(cls, path: Path) -> "Loaded[Any]":
        return cls(None, f"not available (no {path.parent.name}/{path.name})", missing=True)

    @classmethod
    def broken(cls, problem: str) -> "Loaded[Any]":
        return cls(None, problem)


class _Schema(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class SourceScores(_Schema):
    """One scorer's scores of the policy's and the reference's responses (same order)."""

    higher_is_better: bool = True
    role: str = ""  # "reward_model" (learned), "gold" or "monitor": see alignloop.evaluation.hacking
    policy: list[float] = Field(default_factory=list)
    reference: list[float] = Field(default_factory=list)
    policy_mean: Optional[float] = None
    policy_se: Optional[float] = None
    reference_mean: Optional[float] = None
    reference_se: Optional[float] = None
    # A reward-model ensemble's: its members' mean spread on each side's replies
    # (alignloop.evaluation.overoptimisation)
    disagreement: Optional[dict[str, float]] = None


class ToxicityScores(_Schema):
    """Raw toxicity probabilities (lower is better), kept apart from the 1 − p reward source."""

    policy: list[float] = Field(default_factory=list)
    reference: list[float] = Field(default_factory=list)
    policy_mean: Optional[float] = None
    reference_mean: Optional[float] = None
    relative_reduction: Optional[float] = None


class KLScores(_Schema):
    per_response: list[float] = Field(default_factory=list)
    mean: Optional[float] = None
    se: Optional[float] = None


class WinRate(_Schema):
    win: int
    tie: int
    loss: int
    rate: float


class Example(_Schema):
    prompt: Any
    reference: str
    policy: str
    scores: dict[str, list[Optional[float]]] = Field(default_factory=dict)


class EvalFile(_Schema):
    """`eval.json`, written by `alignloop eval`."""

    policy: str = ""
    reference: str = ""
    prompts: str = ""
    samples_per_prompt: Optional[int] = None
    created_at: Optional[str] = None
    sources: dict[str, SourceScores] = Field(default_factory=dict)
    toxicity: Optional[ToxicityScores] = None
    kl: Optional[KLScores] = None
    win_rate: dict[str, WinRate] = Field(default_factory=dict)
    length: dict[str, Optional[float]] = Field(default_factory=dict)
    eos_rate: dict[str, Optional[float]] = Field(default_factory=dict)
    distinct: dict[str, dict[str, Optional[float]]] = Field(default_factory=dict)
    wordless_rate: dict[str, Optional[float]] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    examples: list[Example] = Field(default_factory=list)


class AnnotatorRow(_Schema):
    annotator: str
    kind: str
    judgements: int
    flagged: bool
    flags: list[str] = Field(default_factory=list)
    gold_accuracy: Optional[float] = None
    first_shown_share: Optional[float] = None
    consensus_disagreement: Optional[float] = None
    weight: Optional[float] = None
    reliability: Optional[float] = None  # η of the gold-free reliability model (feedback/reliability.py)
    verdict: Optional[str] = None  # its reading: reliable, noisy or malicious


class AnnotatorsFile(_Schema):
    """`annotators.json` of a loop round: the feedback platform's quality checks per annotator."""

    rows: list[AnnotatorRow] = Field(default_factory=list)
    malicious: int = 0
    malicious_flagged: int = 0
    honest_flagged: int = 0
    malicious_found_by_model: Optional[int] = None
    honest_called_malicious_by_model: Optional[int] = None


class RoundSummary(BaseModel):
    """`summary.json` of a loop round; numbers beyond the named ones are kept (free-form)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    round: int
    judgements: Optional[int] = None
    rm_eval_accuracy: Optional[float] = None

    def extra_numbers(self) -> dict[str, float]:
        """The free-form numeric fields, for the per-round table."""
        extras = self.model_extra or {}
        return {k: v for k, v in extras.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class RunInfo(_Schema):
    """The part of a run folder's `run_info.json` the report shows."""

    started: Optional[str] = None
    command: list[str] = Field(default_factory=list)
    machine: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)


def read_json_file(path: Path, schema: type[M]) -> Loaded[M]:
    """A JSON file checked against `schema`; a problem names the file and the first bad field."""
    if not path.is_file():
        return Loaded.absent(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        return Loaded.broken(f"{path}: not UTF-8 text ({error.reason})")
    except json.JSONDecodeError as error:
        return Loaded.broken(f"{path}:{error.lineno}: not valid JSON ({error.msg})")
    try:
        return Loaded(schema.model_validate(data))
    except ValidationError as error:
        return Loaded.broken(_validation_problem(path, error))


def _validation_problem(path: Path, error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{path}: field '{where}': {first['msg']}{more}"


def read_jsonl_records(path: Path) -> Loaded[list[dict[str, Any]]]:
    """The records of a `metrics.jsonl` / `samples.jsonl`, each an object with an integer `step`.

    An unparsable last line without its newline is a record still being written (a run in
    progress): it is left out rather than reported as malformed.
    """
    if not path.is_file():
        return Loaded.absent(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        return Loaded.broken(f"{path}: not UTF-8 text ({error.reason})")
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):  # unterminated last line: still being written
                break
            return Loaded.broken(f"{path}:{number}: not valid JSON ({error.msg})")
        if not isinstance(record, dict) or type(record.get("step")) is not int:
            return Loaded.broken(f"{path}:{number}: field 'step': expected an object with an integer step")
        records.append(record)
    return Loaded(records)


def read_state_scalars(path: Path) -> Loaded[dict[str, Any]]:
    """The top-level scalar entries of a loop's `state.json` (where the loop stands)."""
    if not path.is_file():
        return Loaded.absent(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return Loaded.broken(f"{path}: not valid JSON ({error})")
    if not isinstance(data, dict):
        return Loaded.broken(f"{path}: expected a JSON object at the top level")
    return Loaded({k: v for k, v in data.items() if isinstance(v, (str, int, float, bool)) or v is None})
