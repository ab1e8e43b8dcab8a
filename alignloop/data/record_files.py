"""Reading record files (JSONL, JSON, CSV, Parquet, Hugging Face `datasets` folders) and writing JSONL.

Every format is first turned into a stream of raw rows, each with a location a person can find
in the file: the physical line for the text formats a person edits (JSONL, CSV; 1-based, as
editors count), the item / row index for the others (JSON arrays, Parquet, datasets; 0-based,
as `rows[N]` counts). One validation loop then checks each row against the record schema and
collects located messages (`pairs.jsonl:17: field 'chosen': expected a non-empty string, got
null`), raising one `DataError` that shows the first few problems and counts the rest.

CSV has one column per field. It has no null and no lists, so an empty cell in an optional
column means "absent", and a cell of a list-valued field (a conversation prompt, `responses`,
`ranks`) holding a JSON array is parsed as that array.
"""

from __future__ import annotations

import csv
import gzip
import json
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

from pydantic import BaseModel, ValidationError

from alignloop.data.errors import DataError, ErrorCollector
from alignloop.data.schemas import RECORD_SCHEMAS, Record, describe_validation_error

__all__ = ["FORMATS", "detect_format", "read_records", "write_jsonl"]

R = TypeVar("R", bound=Record)

FORMATS = ("jsonl", "json", "csv", "parquet", "datasets")

_SUFFIX_FORMATS = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv",
    ".parquet": "parquet", ".pq": "parquet",
}
_DATASETS_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


@dataclass(frozen=True)
class _RawRow:
    """One row as read from a file, before validation; `problem` is set when it could not be read."""

    location: str
    fields: dict[str, Any] | None
    problem: str | None = None


def detect_format(path: str | Path) -> str:
    """The format a path holds, judged by its suffix (`.jsonl.gz` counts as `.jsonl`) or folder."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        if any((path / marker).exists() for marker in _DATASETS_MARKERS):
            return "datasets"
        raise DataError(f"{path}: a folder, but not a Hugging Face datasets folder (one written by save_to_disk)")
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
                yield _RawRow(location, None, f"not valid JSON: {error.msg} (column {error.colno})")
                continue
            yield _as_object_row(location, value)


def _as_object_row(location: str, value: Any) -> _RawRow:
    if not isinstance(value, dict):
        return _RawRow(location, None, f"expected a JSON object (one record), got {_json_kind(value)}")
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
                yield _RawRow(f"{path}:{start_line}", None, f"not valid CSV: {error}")
                return
            if not cells:
                continue
            location = f"{path}:{start_line}"
            if len(cells) != len(header):
                yield _RawRow(location, None, f"expected {len(header)} cells (one per column), got {len(cells)}")
                continue
            yield _RawRow(location, _csv_fields(schema, header, cells))


def _parquet_rows(path: Path, schema: type[Record]) -> Iterator[_RawRow]:
    import pyarrow.parquet as parquet

    try:
        table = parquet.read_table(path)
    except Exception as error:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path}: not a readable Parquet file ({error})") from None
    for index, row in enumerate(table.to_pylist()):
        yield _RawRow(f"{path}: row {index}", row)


def _datasets_rows(path: Path, schema: type[Record]) -> Iterator[_RawRow]:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        splits = ", ".join(loaded)
        first = next(iter(loaded), "train")
        raise DataError(f"{path}: holds several splits ({splits}); pass one split's folder, e.g. {path / first}")
    for index, row in enumerate(loaded):
        yield _RawRow(f"{path}: row {index}", dict(row))


# Each reader takes (path, schema); only CSV needs the schema, to know which cells hold JSON lists.
_ROW_READERS = {
    "jsonl": _jsonl_rows, "json": _json_rows, "csv": _csv_rows,
    "parquet": _parquet_rows, "datasets": _datasets_rows,
}


def _rows(path: Path, file_format: str, schema: type[Record]) -> Iterator[_RawRow]:
    """The raw rows of a file, with undecodable bytes turned into a `DataError` naming the file."""
    if path.is_dir() != (file_format == "datasets"):
        expected = "a datasets folder" if file_format == "datasets" else "a file"
        raise DataError(f"{path}: format {file_format!r} expects {expected}")
    try:
        yield from _ROW_READERS[file_format](path, schema)
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


def read_records(
    path: str | Path,
    schema: type[R] | str,
    *,
    format: str = "auto",
    defaults: dict[str, Any] | None = None,
) -> list[R]:
    """Read and validate every record of a file; raise one `DataError` listing the problems.

    `schema` is a record class or its name in `RECORD_SCHEMAS` ("preference", ...). `defaults`
    fills fields a row leaves absent or null, e.g. `{"scale_min": 1, "scale_max": 7}` for ratings.
    """
    path = Path(path)
    record_type = _resolve_schema(schema)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    file_format = detect_format(path) if format == "auto" else format
    if file_format not in _ROW_READERS:
        raise DataError(f"{path}: unknown format {format!r}; known: auto, {', '.join(FORMATS)}")
    records: list[R] = []
    problems = ErrorCollector()
    rows_seen = 0
    for row in _rows(path, file_format, record_type):
        rows_seen += 1
        if row.problem is not None:
            problems.add(f"{row.location}: {row.problem}")
            continue
        try:
            records.append(record_type.model_validate(_with_defaults(row.fields, defaults)))
        except ValidationError as error:
            for line in describe_validation_error(error):
                problems.add(f"{row.location}: {line}")
    problems.raise_if_any(f"{path}: not a valid {record_type.__name__} dataset:")
    if not rows_seen:
        raise DataError(f"{path}: no records (the {'dataset' if file_format == 'datasets' else 'file'} is empty)")
    return records


def write_jsonl(path: str | Path, records: Iterable[BaseModel]) -> int:
    """Write records one JSON object per line (gzip when the name ends in .gz); return the count.

    Absent optional fields are left out rather than written as null, so the files stay readable
    by hand; reading them back gives equal records.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    count = 0
    with opener(path, "wt", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record.model_dump(mode="json", exclude_none=True), ensure_ascii=False) + "\n")
            count += 1
    return count
