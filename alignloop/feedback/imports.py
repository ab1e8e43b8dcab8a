"""Importing prompts and candidate responses into a campaign, all or nothing.

Two kinds of file, told apart by their columns (JSONL, CSV or a JSON array):

* prompts: `prompt` (text or chat messages), optional `candidates` (a list of responses; in CSV
  a JSON array in the cell) and optional `gold`, the known answer that makes the item a gold
  item. `gold` refers to candidates by their position in the row's list, since they have no ids
  yet: `{"pairwise": {"better": 0}}` (or `"tie"`, `"both_bad"`), `{"ranking": {"ranks": [1, 2, 2]}}`
  (one rank per candidate, 1 = best) and `{"rating": {"scores": {"helpful": 6}}}`. It is stored
  in candidate ids, the shape `Item.gold` documents and `quality.gold_verdict` reads.
* candidates: `response`, optional `model`, and the prompt it answers, either `prompt_id` (an
  item id of the campaign) or `prompt` (text equal to exactly one of its items).

Every row is checked before anything is stored, and every problem is reported at once as
`file:line: field 'x': what was expected` (the data layer's `DataError`): bad cells and
candidates whose prompt is not found alike. One bad row means nothing is imported; so does
text a database cannot hold (a NUL character, a lone surrogate: `alignloop.data.storable`). The caller runs the import inside one transaction, so a failure while
storing leaves nothing behind either.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from alignloop.data.errors import DataError, ErrorCollector
from alignloop.data.schemas import NonEmptyText, Prompt, describe_validation_error
from alignloop.data.storable import find_unstorable
from alignloop.feedback.assignment import MAX_TEXT_CHARS
from alignloop.feedback.models import Campaign, Candidate, Item, TaskType

__all__ = ["MAX_UPLOAD_BYTES", "ImportResult", "PromptRow", "CandidateRow", "parse_rows", "import_file", "import_records"]

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".json": "json"}
_JSON_CELLS = ("prompt", "candidates", "gold")  # CSV cells that may hold JSON


def _prompt_length(prompt: Any) -> int:
    if isinstance(prompt, str):
        return len(prompt)
    return max((len(message.content) for message in prompt), default=0)


def _storable_cells(data: Any) -> Any:
    """Refuses a row with text no database can hold, in any cell (nested JSON and keys too)."""
    if isinstance(data, dict):
        for column, value in data.items():
            if problem := find_unstorable(value, str(column)):
                raise ValueError(f"field {problem}")
    return data


class PromptRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        return _storable_cells(data)

    prompt: Prompt
    candidates: list[NonEmptyText] = Field(default_factory=list)
    gold: dict[str, dict[str, Any]] | None = None
    model: str = Field("", max_length=255)  # what wrote the candidates

    @model_validator(mode="after")
    def _within_limits(self) -> "PromptRow":
        _check_size("prompt", _prompt_length(self.prompt))
        for index, text in enumerate(self.candidates):
            _check_size(f"candidates[{index}]", len(text))
        if self.gold is not None:
            _check_gold(self.gold, len(self.candidates))
        return self


class CandidateRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        return _storable_cells(data)

    response: NonEmptyText
    prompt_id: int | None = None
    prompt: Prompt | None = None
    model: str = Field("", max_length=255)

    @model_validator(mode="after")
    def _one_prompt_reference(self) -> "CandidateRow":
        if (self.prompt_id is None) == (self.prompt is None):
            raise ValueError("expected exactly one of 'prompt_id' or 'prompt' to say which prompt this answers")
        _check_size("response", len(self.response))
        return self


def _check_size(field: str, length: int) -> None:
    if length > MAX_TEXT_CHARS:
        raise ValueError(f"field {field!r}: {length} characters, more than the limit of {MAX_TEXT_CHARS}")


def _is_index(value: Any, count: int) -> bool:
    return type(value) is int and 0 <= value < count  # type(), not isinstance: JSON true is no index


def _check_gold(gold: dict[str, dict[str, Any]], count: int) -> None:
    unknown = set(gold) - {TaskType.pairwise.value, TaskType.ranking.value, TaskType.rating.value}
    if unknown:
        raise ValueError(f"field 'gold': known answers exist for pairwise, ranking and rating, got {sorted(unknown)}")
    if "pairwise" in gold:
        better = gold["pairwise"].get("better")
        if count < 2 or not (better in ("tie", "both_bad") or _is_index(better, count)):
            raise ValueError(
                f"field 'gold.pairwise': expected {{\"better\": a candidate index 0..{count - 1}, \"tie\" or "
                f"\"both_bad\"}} and at least 2 candidates, got {gold['pairwise']}"
            )
    if "ranking" in gold:
        ranks = gold["ranking"].get("ranks")
        if not (isinstance(ranks, list) and len(ranks) == count >= 2 and all(_is_index(r, count + 1) and r >= 1 for r in ranks)
                and 1 in ranks):
            raise ValueError(f"field 'gold.ranking': expected {{\"ranks\": [one rank 1..{count} per candidate, 1 for the best]}}, "
                             f"got {gold['ranking']}")
    if "rating" in gold:
        scores = gold["rating"].get("scores")
        if not (isinstance(scores, dict) and scores and all(type(v) is int for v in scores.values())):
            raise ValueError(f"field 'gold.rating': expected {{\"scores\": {{axis: score, ...}}}}, got {gold['rating']}")


@dataclass(frozen=True)
class ImportResult:
    items: int
    candidates: int


def _decode(name: str, data: bytes) -> str:
    if len(data) > MAX_UPLOAD_BYTES:
        raise DataError(f"{name}: {len(data)} bytes, more than the upload limit of {MAX_UPLOAD_BYTES}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{name}: not UTF-8 text (byte {error.start})") from None


def _jsonl_rows(name: str, text: str) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield f"{name}:{number}", json.loads(line)
            except json.JSONDecodeError as error:
                yield f"{name}:{number}", DataError(f"not valid JSON: {error.msg} (column {error.colno})")


def _csv_cell(column: str, cell: str) -> Any:
    if column in _JSON_CELLS and cell.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(cell)
        except json.JSONDecodeError:
            if column != "prompt":
                return DataError(f"field {column!r}: not valid JSON")
    return cell


def _csv_rows(name: str, text: str) -> Iterator[tuple[str, Any]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)  # strict: an unclosed quote is an error
    header = [column.strip() for column in next(reader, [])]
    while True:
        line = reader.line_num + 1  # a quoted cell may span lines: a row starts after the last one
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            hint = " (a quote opened in this row is never closed)" if "end of data" in str(error) else ""
            yield f"{name}:{line}", DataError(f"not valid CSV: {error}{hint}")
            return
        if not cells:
            continue
        if len(cells) != len(header):
            yield f"{name}:{line}", DataError(f"expected {len(header)} cells (one per column), got {len(cells)}")
            continue
        values = {column: _csv_cell(column, cell) for column, cell in zip(header, cells) if cell != ""}
        problem = next((value for value in values.values() if isinstance(value, DataError)), None)
        yield f"{name}:{line}", problem or values


def _json_rows(name: str, text: str) -> Iterator[tuple[str, Any]]:
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{name}:{error.lineno}: not valid JSON: {error.msg} (column {error.colno})") from None
    if not isinstance(rows, list):
        raise DataError(f"{name}: expected a JSON array of rows (for one row per line, name the file .jsonl)")
    for index, row in enumerate(rows):
        yield f"{name}: item {index}", row


_READERS = {"jsonl": _jsonl_rows, "csv": _csv_rows, "json": _json_rows}


def _describe(error: ValidationError, schema: type[BaseModel]) -> list[str]:
    """The data layer's plain-language lines, with clearer words for unknown columns and limits."""
    expected = ", ".join(schema.model_fields)
    lines = []
    for problem, line in zip(error.errors(), describe_validation_error(error)):
        if problem["type"] == "extra_forbidden":
            line = f"unknown column {problem['loc'][0]!r} (expected: {expected})"
        elif problem["type"] == "value_error":
            line = str(problem["ctx"]["error"])
        lines.append(line)
    return lines


def parse_rows(located: list[tuple[str, Any]], file_label: str) -> tuple[type[BaseModel], list[tuple[str, BaseModel]]]:
    """(row schema, [(location, row)]), or one DataError listing every bad row.

    A file whose first row has a `response` is a candidates file, otherwise a prompts file.
    """
    problems = ErrorCollector()
    schema, rows = _parse_rows(located, problems)
    problems.raise_if_any(f"{file_label}: nothing imported, {problems.total} problem(s):")
    if not rows:
        raise DataError(f"{file_label}: no rows to import")
    return schema, rows


def _parse_rows(located: list[tuple[str, Any]], problems: ErrorCollector) -> tuple[type[BaseModel], list[tuple[str, BaseModel]]]:
    first = next((value for _, value in located if isinstance(value, dict)), {})
    schema: type[BaseModel] = CandidateRow if "response" in first else PromptRow
    rows = []
    for location, value in located:
        if isinstance(value, DataError):
            problems.add(f"{location}: {value}")
        elif not isinstance(value, dict):
            problems.add(f"{location}: expected an object (one row), got {type(value).__name__}")
        else:
            try:
                rows.append((location, schema.model_validate(value)))
            except ValidationError as error:
                for line in _describe(error, schema):
                    problems.add(f"{location}: {line}")
    return schema, rows


def _store_gold(gold: dict[str, dict[str, Any]] | None, candidate_ids: list[int]) -> dict[str, Any] | None:
    """Gold answers with candidate positions turned into candidate ids (`Item.gold`'s shape)."""
    if gold is None:
        return None
    stored: dict[str, Any] = dict(gold)
    if "pairwise" in gold:
        better = gold["pairwise"]["better"]
        stored["pairwise"] = {"better": better if better in ("tie", "both_bad") else candidate_ids[better]}
    if "ranking" in gold:
        stored["ranking"] = {"ranks": {str(cid): rank for cid, rank in zip(candidate_ids, gold["ranking"]["ranks"])}}
    return stored


def _store_prompts(session: Session, campaign: Campaign, rows: list[tuple[str, PromptRow]]) -> ImportResult:
    items = []
    for location, row in rows:
        prompt = row.prompt if isinstance(row.prompt, str) else [m.model_dump() for m in row.prompt]
        item = Item(campaign_id=campaign.id, prompt=prompt, is_gold=row.gold is not None, source=location[-255:])
        item.candidates = [Candidate(text=text, model=row.model, meta={}) for text in row.candidates]
        items.append(item)
    session.add_all(items)
    session.flush()  # candidate ids exist from here on; gold answers refer to them
    for item, (_, row) in zip(items, rows):
        item.gold = _store_gold(row.gold, [candidate.id for candidate in item.candidates])
    session.flush()
    return ImportResult(items=len(rows), candidates=sum(len(row.candidates) for _, row in rows))


def _resolve_candidates(
    session: Session, campaign: Campaign, rows: list[tuple[str, CandidateRow]], problems: ErrorCollector
) -> list[tuple[int, CandidateRow]]:
    """(item id, row) for each row whose prompt is one regular item of the campaign; the others
    are added to `problems`."""
    items = session.execute(select(Item.id, Item.prompt, Item.is_gold).where(Item.campaign_id == campaign.id)).all()
    by_id = {item_id for item_id, _, _ in items}
    gold = {item_id for item_id, _, is_gold in items if is_gold}
    by_prompt: dict[str, list[int]] = {}
    for item_id, prompt, _ in items:
        by_prompt.setdefault(json.dumps(prompt, sort_keys=True), []).append(item_id)
    resolved = []
    for location, row in rows:
        if row.prompt_id is not None:
            matches = [row.prompt_id] if row.prompt_id in by_id else []
            wanted = f"prompt_id {row.prompt_id}"
        else:
            prompt = row.prompt if isinstance(row.prompt, str) else [m.model_dump() for m in row.prompt]
            matches = by_prompt.get(json.dumps(prompt, sort_keys=True), [])
            wanted = "this prompt text"
        field = "prompt_id" if row.prompt_id is not None else "prompt"
        if len(matches) != 1:
            how = "no item" if not matches else f"{len(matches)} items"
            problems.add(f"{location}: field {field!r}: {how} of campaign {campaign.name!r} has {wanted}")
        elif matches[0] in gold:
            # A gold item's known answer names its candidates; another one would change the question.
            problems.add(f"{location}: field {field!r}: item {matches[0]} is a gold item, its candidates are fixed")
        else:
            resolved.append((matches[0], row))
    return resolved


def _store(session: Session, campaign: Campaign, located: list[tuple[str, Any]], label: str) -> ImportResult:
    problems = ErrorCollector()
    schema, rows = _parse_rows(located, problems)
    resolved = _resolve_candidates(session, campaign, rows, problems) if schema is CandidateRow else []  # type: ignore[arg-type]
    problems.raise_if_any(f"{label}: nothing imported, {problems.total} problem(s):")  # all at once, both kinds
    if not rows:
        raise DataError(f"{label}: no rows to import")
    if schema is PromptRow:
        return _store_prompts(session, campaign, rows)  # type: ignore[arg-type]
    session.add_all(Candidate(item_id=item_id, text=row.response, model=row.model, meta={}) for item_id, row in resolved)
    session.flush()
    return ImportResult(items=0, candidates=len(resolved))


def import_file(session: Session, campaign: Campaign, name: str, data: bytes) -> ImportResult:
    """Import an uploaded or local file (`name` gives its format by suffix and labels errors)."""
    file_format = _FORMATS.get(Path(name).suffix.lower())
    if file_format is None:
        raise DataError(f"{name}: unknown file type; expected one of {', '.join(sorted(_FORMATS))}")
    text = _decode(name, data)
    return _store(session, campaign, list(_READERS[file_format](name, text)), name)


def import_records(session: Session, campaign: Campaign, records: list[Any], label: str = "body") -> ImportResult:
    """Import rows given as JSON values (the REST API's body)."""
    return _store(session, campaign, [(f"{label}: item {index}", row) for index, row in enumerate(records)], label)
