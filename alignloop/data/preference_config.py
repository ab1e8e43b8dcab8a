"""The `data:` section for preference training (reward models, DPO), and reading what it names.

One config covers every kind of judgement a preference trainer can use: pairs, rankings,
ratings and binary feedback. Each file holds ONE kind. With `kind: auto` the kind is decided
per file from the first row that has a kind's keys (chosen + rejected, responses, score,
label), so a recipe can list a pairs file and a ratings file side by side; a later row of
another kind is an error naming its line, because a mixed file is almost always a wrong export
and reading it as one kind would quietly drop the rest as "invalid". Telling the kind costs one
extra pass over the file's rows, before the validating pass.

Real exports have bad rows. By default (`on_invalid: skip`) they are dropped and counted by
reason per file (`PreferenceReadReport`); `error` stops at the first bad file with every located
problem. Besides the schemas' own checks, reading applies the checks that only make sense for
training on preferences: a pair whose two responses are the same text teaches nothing
(`identical_responses`), a ranking that lists a response twice contradicts itself
(`duplicate_responses`), and ranks must start at 1 without gaps (`invalid_ranks`; dense
`1,1,2` and competition `1,1,3` numbering are both accepted, since only the order matters).

A held-out split (`eval_every_nth`) takes every n-th VALID record of each train file, so each
file's split is independent of the other files and of their order in the recipe.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from alignloop.data.config import SourceSplits
from alignloop.data.errors import DataError
from alignloop.data.fingerprint import dataset_fingerprint
from alignloop.data.hh_rlhf import hh_pair_to_preference
from alignloop.data.record_files import InvalidRecord, OnInvalid, ReadReport, Split, iter_rows, read_records_report
from alignloop.data.schemas import BinaryFeedback, PreferencePair, Ranking, Rating, Record
from alignloop.data.splits import split_every_nth

__all__ = [
    "PREFERENCE_KINDS",
    "PreferenceDataConfig",
    "PreferenceRecords",
    "PreferenceReadReport",
    "PreferenceData",
    "record_kind",
    "detect_file_kind",
    "check_pair",
    "check_ranking",
    "read_preference_file",
    "read_preference_data",
    "preference_fingerprint",
]

# Kind name -> record type; the names are also the attribute names of `PreferenceRecords`.
PREFERENCE_KINDS: dict[str, type[Record]] = {
    "pairs": PreferencePair, "rankings": Ranking, "ratings": Rating, "binary": BinaryFeedback,
}

# Checked in this order, so a pair exported with an extra `score` column is still a pair.
# TRL's unpaired preference (prompt + completion + label) and stepwise supervision (completions +
# labels) are binary feedback (trl_formats.py rewrites their fields).
_KIND_KEYS = (("pairs", ("chosen", "rejected")), ("rankings", ("responses",)), ("ratings", ("score",)),
              ("binary", ("label",)), ("binary", ("completions", "labels")))


class PreferenceDataConfig(SourceSplits):
    """Where preference data lives and how it becomes token sequences (reward models, DPO)."""

    train: list[Path] = Field(min_length=1, description="training files (one path or a list); each holds one kind")
    eval: list[Path] = Field(default_factory=list, description="evaluation files; none: see eval_every_nth")
    eval_every_nth: int | None = Field(
        None, ge=2, description="with no eval files, hold out every n-th valid record of each train file"
    )
    format: Literal["auto", "jsonl", "json", "csv", "parquet", "datasets", "hub"] = Field(
        "auto", description="file format; auto decides by suffix, a folder means a datasets folder, an id the hub"
    )
    kind: Literal["auto", "pairs", "rankings", "ratings", "binary"] = Field(
        "auto", description="record kind of every file; auto decides per file from its first record's keys"
    )
    hh_rlhf: bool = Field(False, description="files hold raw HH-RLHF chosen/rejected dialogues; convert them to pairs")
    max_length: int = Field(512, gt=0, description="longest sequence in tokens (prompt + response)")
    max_prompt_length: int | None = Field(
        None, gt=0, description="keep only the last this-many prompt tokens (the most recent turns)"
    )
    use_chat_template: bool = Field(True, description="render prompts with the tokenizer's chat template, if any")
    on_invalid: Literal["skip", "error"] = Field(
        "skip", description="invalid records: skip and count them by reason, or stop with located errors"
    )
    rating_scale_min: float | None = Field(None, description="scale minimum for ratings that do not declare one")
    rating_scale_max: float | None = Field(None, description="scale maximum for ratings that do not declare one")

    @field_validator("train", "eval", mode="before")
    @classmethod
    def _one_path_is_a_list(cls, value: Any) -> Any:
        # One file is the common case; let a recipe say `train: pairs.jsonl` without brackets.
        return [value] if isinstance(value, (str, Path)) else value

    @model_validator(mode="after")
    def _consistent(self) -> PreferenceDataConfig:
        if self.eval and self.eval_every_nth is not None:
            raise ValueError("set either eval (files) or eval_every_nth (held out from train), not both")
        if self.hh_rlhf and self.kind not in ("auto", "pairs"):
            raise ValueError(f"hh_rlhf files hold pairs, but kind is {self.kind!r}")
        if (self.rating_scale_min is None) != (self.rating_scale_max is None):
            raise ValueError("set both rating_scale_min and rating_scale_max, or neither")
        if self.rating_scale_min is not None and self.rating_scale_max <= self.rating_scale_min:
            raise ValueError("rating_scale_max must be greater than rating_scale_min")
        if self.max_prompt_length is not None and self.max_prompt_length >= self.max_length:
            raise ValueError("max_prompt_length must be below max_length, to leave room for the response")
        return self

    def rating_defaults(self) -> dict[str, float] | None:
        if self.rating_scale_min is None:
            return None
        return {"scale_min": self.rating_scale_min, "scale_max": self.rating_scale_max}


@dataclass(frozen=True)
class PreferenceRecords:
    """Validated records of every kind, each list in file order (files in recipe order)."""

    pairs: list[PreferencePair] = field(default_factory=list)
    rankings: list[Ranking] = field(default_factory=list)
    ratings: list[Rating] = field(default_factory=list)
    binary: list[BinaryFeedback] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(self.counts().values())

    def counts(self) -> dict[str, int]:
        return {kind: len(getattr(self, kind)) for kind in PREFERENCE_KINDS}


@dataclass(frozen=True)
class PreferenceReadReport:
    """Per file: its kind and what reading kept and skipped; `skipped` merges the reasons of all files."""

    files: dict[str, ReadReport] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)

    @property
    def skipped(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for report in self.files.values():
            total.update(report.skipped)
        return dict(sorted(total.items()))

    def __str__(self) -> str:
        return "\n".join(f"{path} ({self.kinds[path]}): {report}" for path, report in self.files.items())


@dataclass(frozen=True)
class PreferenceData:
    """What `read_preference_data` read: train and eval records, and the per-file report."""

    train: PreferenceRecords
    eval: PreferenceRecords
    report: PreferenceReadReport


def _present(value: Any) -> bool:
    # Table formats give every row every column, so null (and "" from an empty CSV cell) is absence.
    return value is not None and not (isinstance(value, str) and value == "")


def record_kind(fields: Mapping[str, Any]) -> str | None:
    """The kind a raw row's keys say it is, or None when it shows none."""
    for kind, keys in _KIND_KEYS:
        if all(_present(fields.get(key)) for key in keys):
            return kind
    return None


def detect_file_kind(path: str | Path, *, format: str = "auto", split: Split = Split()) -> str:
    """The kind of the first row that shows one; `DataError` at the first row of another kind."""
    kind = first_location = None
    for location, fields in iter_rows(path, format=format, split=split):
        row_kind = record_kind(fields) if fields is not None else None
        if row_kind is None or row_kind == kind:
            continue
        if kind is not None:
            raise DataError(
                f"{location}: a record of kind {row_kind!r} in a file of {kind!r} (decided at {first_location}); "
                "put each kind in its own file"
            )
        kind, first_location = row_kind, location
    if kind is None:
        keys = "; ".join(f"{name}: {' + '.join(names)}" for name, names in _KIND_KEYS)
        raise DataError(f"{path}: no row shows which kind of records the file holds ({keys}); set kind")
    return kind


def check_pair(pair: PreferencePair) -> PreferencePair:
    if pair.chosen.strip() == pair.rejected.strip():
        raise InvalidRecord("identical_responses", "field 'rejected': the same text as 'chosen'")
    return pair


def _ranks_without_gaps(ranks: Sequence[int]) -> bool:
    # The schema has checked that ranks are >= 1 and non-decreasing.
    dense = all(later - earlier in (0, 1) for earlier, later in zip(ranks, ranks[1:]))
    competition = all(later in (earlier, index + 2) for index, (earlier, later) in enumerate(zip(ranks, ranks[1:])))
    return ranks[0] == 1 and (dense or competition)


def check_ranking(ranking: Ranking) -> Ranking:
    seen: set[str] = set()
    for index, response in enumerate(ranking.responses):
        if response.strip() in seen:
            raise InvalidRecord(
                "duplicate_responses", f"field 'responses[{index}]': the same text as an earlier response"
            )
        seen.add(response.strip())
    if ranking.ranks is not None and not _ranks_without_gaps(ranking.ranks):
        raise InvalidRecord(
            "invalid_ranks", f"field 'ranks': expected ranks from 1 without gaps (1,2,3 or 1,1,3), got {ranking.ranks}"
        )
    return ranking


_CHECKS: dict[str, Callable[[Any], Any]] = {"pairs": check_pair, "rankings": check_ranking}


class _HHDialogues(Record):
    """A raw HH-RLHF row: two whole transcripts (validated as dialogues by `hh_pair_to_preference`)."""

    chosen: str
    rejected: str


def _hh_to_pair(row: _HHDialogues) -> PreferencePair:
    return check_pair(hh_pair_to_preference(row.chosen, row.rejected))


def read_preference_file(
    path: str | Path,
    *,
    kind: str = "auto",
    format: str = "auto",
    hh_rlhf: bool = False,
    on_invalid: OnInvalid = "skip",
    rating_defaults: dict[str, float] | None = None,
    split: Split = Split(),
) -> tuple[str, list[Record], ReadReport]:
    """(kind, records, report) of one file; a file left with no valid record is an error in any mode."""
    if hh_rlhf:
        kind = "pairs"
        schema, convert = _HHDialogues, _hh_to_pair
    else:
        kind = detect_file_kind(path, format=format, split=split) if kind == "auto" else kind
        schema, convert = PREFERENCE_KINDS[kind], _CHECKS.get(kind)
    defaults = rating_defaults if kind == "ratings" else None
    records, report = read_records_report(
        path, schema, format=format, defaults=defaults, on_invalid=on_invalid, convert=convert, split=split
    )
    if not records:
        examples = "".join(f"\n  {example}" for example in report.examples)
        raise DataError(f"{path}: no valid {kind} records ({report}){examples}")
    return kind, records, report


def _gather(parts: list[tuple[str, list[Record]]]) -> PreferenceRecords:
    lists: dict[str, list[Record]] = {kind: [] for kind in PREFERENCE_KINDS}
    for kind, records in parts:
        lists[kind].extend(records)
    return PreferenceRecords(**lists)


def read_preference_data(config: PreferenceDataConfig) -> PreferenceData:
    """Train and eval records of every kind as the config says, with a per-file report."""
    options = dict(
        kind=config.kind, format=config.format, hh_rlhf=config.hh_rlhf, on_invalid=config.on_invalid,
        rating_defaults=config.rating_defaults(),
    )
    train: list[tuple[str, list[Record]]] = []
    held_out: list[tuple[str, list[Record]]] = []
    reports: dict[str, ReadReport] = {}
    kinds: dict[str, str] = {}
    for role, paths in (("train", config.train), ("eval", config.eval)):
        split = config.train_split() if role == "train" else config.held_out_split()
        for path in paths:
            kind, records, reports[str(path)] = read_preference_file(path, **options, split=split)
            kinds[str(path)] = kind
            if role == "eval":
                held_out.append((kind, records))
            elif config.eval_every_nth is not None:
                kept, taken = split_every_nth(records, config.eval_every_nth)
                train.append((kind, kept))
                held_out.append((kind, taken))
            else:
                train.append((kind, records))
    return PreferenceData(_gather(train), _gather(held_out), PreferenceReadReport(reports, kinds))


def preference_fingerprint(records: PreferenceRecords) -> str:
    """`dataset_fingerprint` over every record, kind by kind (pairs, rankings, ratings, binary)."""
    return dataset_fingerprint(record for kind in PREFERENCE_KINDS for record in getattr(records, kind))
