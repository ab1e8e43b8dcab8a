"""Reading record files (JSONL, JSON, CSV, Parquet, Hugging Face `datasets` folders and hub
datasets) and writing JSONL.

Rows in TRL's dataset formats are rewritten into alignloop's record fields first
(`trl_formats.py`), so a file prepared for TRL reads as it is.

Every format is first turned into a stream of raw rows, each with a location a person can find
in the file: the physical line for the text formats a person edits (JSONL, CSV; 1-based, as
editors count), the item / row index for the others (JSON arrays, Parquet, datasets; 0-based,
as `rows[N]` counts). One validation loop then checks each row against the record schema and
collects located messages (`pairs.jsonl:17: field 'chosen': expected a non-empty string, got
null`), raising one `DataError` that shows the first few problems and counts the rest.

CSV has one column per field. It has no null and no lists, so an empty cell in an optional
column means "absent", and a cell of a list-valued field (a conversation prompt, `responses`,
`ranks`) holding a JSON array is parsed as that array.

`read_records` stops at a bad file; `read_records_report` can instead skip bad rows ("skip"
mode) and count them under short, stable reasons (`missing_field`, `empty_response`,
`score_outside_scale`, `malformed_json`, ...), keeping the first few located messages as
examples. Dropping rows silently would hide a broken export, and refusing a million-row file
for three bad rows makes real data unusable: counting lets a trainer do the second while the
report shows the first. A row counts once, under the reason of its first problem, so the
counts add up to the rows dropped. A caller's own per-record checks (`convert`) join the same
loop, so their rejections are located and counted exactly like schema errors.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import typing
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO, TypeVar

from pydantic import BaseModel, ValidationError

from alignloop.data.errors import MAX_REPORTED_ERRORS, DataError, ErrorCollector
from alignloop.data.schemas import RECORD_SCHEMAS, Record, describe_validation_error
from alignloop.data.trl_formats import RowStyle, TRLFormatError, to_record_fields, to_trl_row

__all__ = [
    "FORMATS", "OnInvalid", "InvalidRecord", "ReadReport", "Split", "detect_format", "iter_rows", "looks_like_hub_id",
    "read_records", "read_records_report", "write_jsonl",
]

OnInvalid = Literal["error", "skip"]

MAX_SKIP_EXAMPLES = 5

R = TypeVar("R", bound=Record)

FORMATS = ("jsonl", "json", "csv", "parquet", "datasets", "hub")

_SUFFIX_FORMATS = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv",
    ".parquet": "parquet", ".pq": "parquet",
}
_DATASETS_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


@dataclass(frozen=True)
class _RawRow:
    """One row as read from a file, before validation; `problem` is set when it could not be read."""

    location: str
    fields: dict[str, Any] | None
    problem: str | None = None
    reason: str | None = None  # the skip reason of `problem`


def detect_format(path: str | Path) -> str:
    """The format a path holds, judged by its suffix (`.jsonl.gz` counts as `.jsonl`) or folder."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        if any((path / marker).exists() for marker in _DATASETS_MARKERS):
            return "datasets"
        return "hub"  # a folder of data files laid out as a hub dataset repo (a downloaded snapshot)
    suffixes = path.suffixes[-2:] if path.suffix == ".gz" else path.suffixes[-1:]
    known = _SUFFIX_FORMATS.get(suffixes[0].lower()) if suffixes else None
    if known is None:
        raise DataError(
            f"{path}: cannot tell the format from the name; use a suffix "
            f"({', '.join(sorted(_SUFFIX_FORMATS))}, optionally + .gz) or pass format= one of {', '.join(FORMATS)}"
        )
    return known


def _open_text(path: Path) -> TextIO:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def _jsonl_rows(path: Path, schema: type[Record]) -> Iterator[_RawRow]:
    with _open_text(path) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            location = f"{path}:{number}"
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                yield _RawRow(location, None, f"not valid JSON: {error.msg} (column {error.colno})", "malformed_json")
                continue
            yield _as_object_row(location, value)


def _as_object_row(location: str, value: Any) -> _RawRow:
    if not isinstance(value, dict):
        return _RawRow(
            location, None, f"expected a JSON object (one record), got {_json_kind(value)}", "not_an_object"
        )
    return _RawRow(location, value)


def _json_kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def _json_rows(path: Path, schema: type[Record]) -> Iterator[_RawRow]:
    with _open_text(path) as handle:
        try:
            value = json.load(handle)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{error.lineno}: not valid JSON: {error.msg} (column {error.colno})") from None
    if not isinstance(value, list):
        kind = "an object" if isinstance(value, dict) else _json_kind(value)
        raise DataError(
            f"{path}: expected a top-level JSON array of records, got {kind}"
            " (for one record per line, name the file .jsonl)"
        )
    for index, item in enumerate(value):
        yield _as_object_row(f"{path}: item {index}", item)


def _admits_list(annotation: Any) -> bool:
    """Whether a field's type (through Optional, unions and Annotated) accepts a list."""
    if typing.get_origin(annotation) is list:
        return True
    return any(_admits_list(arg) for arg in typing.get_args(annotation))


def _csv_fields(schema: type[Record], header: list[str], cells: list[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for column, text in zip(header, cells):
        info = schema.model_fields.get(column)
        if info is not None and not info.is_required() and text == "":
            continue  # no null in CSV: an empty optional cell means "absent"
        if info is not None and _admits_list(info.annotation) and text.lstrip().startswith("["):
            try:
                fields[column] = json.loads(text)
                continue
            except json.JSONDecodeError:
                pass  # plain text that happens to start with "[" (a prompt, say) stays text
        fields[column] = text
    return fields


def _csv_rows(path: Path, schema: type[Record]) -> Iterator[_RawRow]:
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        header = [name.strip() for name in header]
        while True:
            # A quoted cell may span lines; the row starts on the line after the previous row.
            start_line = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                yield _RawRow(f"{path}:{start_line}", None, f"not valid CSV: {error}", "malformed_csv")
                return
            if not cells:
                continue
            location = f"{path}:{start_line}"
            if len(cells) != len(header):
                problem = f"expected {len(header)} cells (one per column), got {len(cells)}"
                yield _RawRow(location, None, problem, "malformed_csv")
                continue
            yield _RawRow(location, _csv_fields(schema, header, cells))


def _parquet_rows(path: Path, schema: type[Record]) -> Iterator[_RawRow]:
    # lazy: pyarrow loads only to read a Parquet file (the web app reads records too)
    import pyarrow.parquet as parquet

    try:
        table = parquet.read_table(path)
    except Exception as error:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path}: not a readable Parquet file ({error})") from None
    for index, row in enumerate(table.to_pylist()):
        yield _RawRow(f"{path}: row {index}", row)


@dataclass(frozen=True)
class Split:
    """Which part of a multi-split source to read: a `DatasetDict` folder's split, or a hub dataset's
    split and configuration `name`. Files and single-split folders have no splits and ignore it."""

    split: str = "train"
    name: str | None = None


def _dataset_rows(path: Path, dataset: Any) -> Iterator[_RawRow]:
    for index, row in enumerate(dataset):
        yield _RawRow(f"{path}: row {index}", dict(row))


def _datasets_rows(path: Path, schema: type[Record], split: Split) -> Iterator[_RawRow]:
    # lazy: `datasets` takes seconds to import and is needed only for a datasets folder or hub id
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split.split not in loaded:
            raise DataError(f"{path}: a DatasetDict without a split {split.split!r}; its splits: "
                            f"{', '.join(loaded)} (choose one with the data section's split / eval_split)")
        loaded = loaded[split.split]
    yield from _dataset_rows(path, loaded)


def _hub_rows(path: Path, schema: type[Record], split: Split) -> Iterator[_RawRow]:
    # lazy: `datasets` takes seconds to import and is needed only for a datasets folder or hub id
    import datasets

    try:
        loaded = datasets.load_dataset(str(path), split.name, split=split.split)
    except Exception as error:  # offline, unknown id, missing split: datasets raises many types
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        what = ("a folder, but neither a datasets folder (save_to_disk) nor data files that load_dataset reads"
                if path.is_dir() else "no such file or folder here, and loading it as a Hugging Face Hub dataset")
        which = f"split {split.split!r}{f', name {split.name!r}' if split.name else ''}"
        raise DataError(f"{path}: {what} ({which}) failed: {reason}") from None
    yield from _dataset_rows(path, loaded)


# Each reader takes (path, schema, split); only CSV needs the schema, to know which cells hold
# JSON lists, and only datasets folders and hub datasets have splits.
_ROW_READERS: dict[str, Callable[[Path, type[Record], Split], Iterator[_RawRow]]] = {
    "jsonl": lambda path, schema, _: _jsonl_rows(path, schema),
    "json": lambda path, schema, _: _json_rows(path, schema),
    "csv": lambda path, schema, _: _csv_rows(path, schema),
    "parquet": lambda path, schema, _: _parquet_rows(path, schema),
    "datasets": _datasets_rows,
    "hub": _hub_rows,
}


def _rows(path: Path, file_format: str, schema: type[Record], split: Split) -> Iterator[_RawRow]:
    """The raw rows of a file, with undecodable bytes turned into a `DataError` naming the file."""
    if file_format not in ("hub", "datasets") and path.is_dir():
        raise DataError(f"{path}: format {file_format!r} expects a file")
    if file_format == "datasets" and not path.is_dir():
        raise DataError(f"{path}: format 'datasets' expects a datasets folder")
    try:
        yield from _ROW_READERS[file_format](path, schema, split)
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as error:
        raise DataError(f"{path}: not readable as {file_format} text ({error})") from None


def _with_defaults(fields: dict[str, Any], defaults: dict[str, Any] | None) -> dict[str, Any]:
    if not defaults:
        return fields
    merged = dict(fields)
    for key, value in defaults.items():
        if merged.get(key) is None:
            merged[key] = value
    return merged


def _resolve_schema(schema: type[R] | str) -> type[R]:
    if isinstance(schema, str):
        if schema not in RECORD_SCHEMAS:
            raise DataError(f"unknown record type {schema!r}; known: {', '.join(RECORD_SCHEMAS)}")
        return RECORD_SCHEMAS[schema]  # type: ignore[return-value]
    return schema


class InvalidRecord(DataError):
    """A record that fits its schema but cannot be used (a `convert` check raises it); `reason` counts it."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class ReadReport:
    """What reading one file kept and skipped: reason -> count, and the first located messages."""

    kept: int
    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def __str__(self) -> str:
        if not self.skipped:
            return f"{self.kept} kept, none skipped"
        reasons = ", ".join(f"{reason}: {count}" for reason, count in self.skipped.items())
        return f"{self.kept} kept, {self.total_skipped} skipped ({reasons})"


# Which field a whole-record check blames says what went wrong (see schemas._field_error).
_RECORD_CHECK_REASONS = {
    "score": "score_outside_scale", "scale_max": "invalid_scale", "ranks": "invalid_ranks",
    "messages": "invalid_conversation",
}
_CUSTOM_REASONS = {
    "missing": "missing_field", "conversation": "invalid_conversation", "ranking": "too_few_responses",
    "prompt_type": "wrong_type", "number_type": "wrong_type", "finite_number": "not_finite",
    "literal_error": "wrong_type", "sft_form": "invalid_record",
}


def _skip_reason(error: dict[str, Any]) -> str:
    """A short, stable name for one pydantic error, for counting skipped rows."""
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "non_empty_text":
        if value is None:
            return "missing_field"
        if not isinstance(value, str):
            return "wrong_type"
        return "empty_prompt" if error["loc"][:1] == ("prompt",) else "empty_response"
    if kind == "record":
        if ctx.get("field") in _RECORD_CHECK_REASONS:
            return _RECORD_CHECK_REASONS[ctx["field"]]
        return "missing_field" if ctx.get("got") is None else "invalid_record"
    if kind in _CUSTOM_REASONS:
        return _CUSTOM_REASONS[kind]
    # pydantic's own: string_type, bool_parsing, list_type, float_parsing, ...
    return "wrong_type" if kind.endswith(("_type", "_parsing")) else "invalid_value"


def _check_row(
    row: _RawRow, record_type: type[R], defaults: dict[str, Any] | None, convert: Callable[[R], Any] | None
) -> tuple[Any, str | None, list[str]]:
    """(record, None, []) for a usable row, or (None, reason, located messages) for one that is not."""
    if row.problem is not None:
        return None, row.reason or "unreadable_row", [f"{row.location}: {row.problem}"]
    try:
        fields = to_record_fields(row.fields, record_type.__name__)
    except TRLFormatError as error:
        return None, error.reason, [f"{row.location}: {error}"]
    try:
        record = record_type.model_validate(_with_defaults(fields, defaults))
    except ValidationError as error:
        lines = describe_validation_error(error)
        return None, _skip_reason(error.errors()[0]), [f"{row.location}: {line}" for line in lines]
    if convert is None:
        return record, None, []
    try:
        return convert(record), None, []
    except DataError as error:
        # InvalidRecord, or another DataError with a `reason` (hh_rlhf.HHSkip is one).
        return None, getattr(error, "reason", "invalid_record"), [f"{row.location}: {error}"]


def looks_like_hub_id(path: str | Path) -> bool:
    """Whether a path that does not exist here reads as a hub dataset id: `name` or `owner/name`,
    no suffix of a file format, not absolute and not relative to `.`."""
    text = str(path)
    suffixes = {suffix.lower() for suffix in Path(text).suffixes}
    return bool(_HUB_ID.fullmatch(text)) and not suffixes & (set(_SUFFIX_FORMATS) | {".gz"})


def _resolve_format(path: Path, format: str) -> str:
    if not path.exists():
        if format in ("auto", "hub") and looks_like_hub_id(path):
            return "hub"
        raise DataError(f"{path}: no such file or folder")
    file_format = detect_format(path) if format == "auto" else format
    if file_format not in _ROW_READERS:
        raise DataError(f"{path}: unknown format {format!r}; known: auto, {', '.join(FORMATS)}")
    return file_format


def iter_rows(
    path: str | Path, *, format: str = "auto", split: Split = Split()
) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """(location, fields) of every row before validation; fields is None for an unreadable row.

    For looking at a file's keys (e.g. to tell which kind of records it holds) before choosing a
    schema. CSV list cells stay text here, since which cells hold lists depends on the schema.
    """
    path = Path(path)
    for row in _rows(path, _resolve_format(path, format), Record, split):
        yield row.location, row.fields


def read_records_report(
    path: str | Path,
    schema: type[R] | str,
    *,
    format: str = "auto",
    defaults: dict[str, Any] | None = None,
    on_invalid: OnInvalid = "error",
    convert: Callable[[R], Any] | None = None,
    split: Split = Split(),
) -> tuple[list[Any], ReadReport]:
    """Read and validate every record of a file: (records, report).

    on_invalid="error" raises one `DataError` listing the problems, exactly as `read_records`;
    "skip" drops each bad row and counts it under the reason of its first problem. `convert`,
    if given, is applied to every valid record and its result kept instead; an `InvalidRecord`
    (or any `DataError` with a `reason`) that it raises is treated like a schema error. A file
    with no rows at all is an error in both modes.
    """
    if on_invalid not in ("error", "skip"):
        raise ValueError(f"on_invalid must be 'error' or 'skip', got {on_invalid!r}")
    path = Path(path)
    record_type = _resolve_schema(schema)
    file_format = _resolve_format(path, format)
    records: list[Any] = []
    reasons: Counter[str] = Counter()
    problems = ErrorCollector(MAX_REPORTED_ERRORS if on_invalid == "error" else MAX_SKIP_EXAMPLES)
    rows_seen = 0
    for row in _rows(path, file_format, record_type, split):
        rows_seen += 1
        record, reason, messages = _check_row(row, record_type, defaults, convert)
        if reason is None:
            records.append(record)
            continue
        reasons[reason] += 1
        for message in messages:
            problems.add(message)
    if on_invalid == "error":
        problems.raise_if_any(f"{path}: not a valid {record_type.__name__} dataset:")
    if not rows_seen:
        raise DataError(f"{path}: no records (the {'dataset' if file_format == 'datasets' else 'file'} is empty)")
    return records, ReadReport(kept=len(records), skipped=dict(sorted(reasons.items())), examples=problems.messages)


def read_records(
    path: str | Path,
    schema: type[R] | str,
    *,
    format: str = "auto",
    defaults: dict[str, Any] | None = None,
    split: Split = Split(),
) -> list[R]:
    """Read and validate every record of a file; raise one `DataError` listing the problems.

    `schema` is a record class or its name in `RECORD_SCHEMAS` ("preference", ...). `defaults`
    fills fields a row leaves absent or null, e.g. `{"scale_min": 1, "scale_max": 7}` for ratings.
    `split` picks the split of a `DatasetDict` folder or of a hub dataset (a `path` that is no
    file here but reads as a hub id, `owner/name`; loading it needs the network).
    """
    records, _ = read_records_report(path, schema, format=format, defaults=defaults, on_invalid="error", split=split)
    return records


def write_jsonl(path: str | Path, records: Iterable[BaseModel], style: RowStyle | None = None) -> int:
    """Write records one JSON object per line (gzip when the name ends in .gz); return the count.

    `style` None writes alignloop's own fields; `trl-conversational` / `trl-standard` write TRL's
    dataset types (trl_formats.to_trl_row). Absent optional fields are left out rather than
    written as null, so the files stay readable by hand; reading them back gives equal records.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    count = 0
    with opener(path, "wt", encoding="utf-8") as handle:
        for record in records:
            row = record.model_dump(mode="json", exclude_none=True) if style is None else to_trl_row(record, style)
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count
