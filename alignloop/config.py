"""Typed configuration: YAML recipes and `key.sub=value` overrides become pydantic models.

Every section is a `Section`: unknown keys are rejected (a typo in a recipe must not silently
fall back to a default), and every field carries a one-line `description` that the CLI shows
as help. Errors are raised as `ConfigError` naming the dotted key, what was expected and,
for an unknown key, the keys that are valid at that place.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from alignloop.errors import UserError
from alignloop.trl_names import TRL_KEYS

__all__ = ["ConfigError", "Section", "load_config", "apply_overrides", "config_to_yaml", "field_help",
           "nested_recipe_errors", "validate_config"]


class ConfigError(ValueError, UserError):
    """A recipe or override that does not fit the typed configuration."""


class Section(BaseModel):
    """Base of every configuration section: unknown keys are an error, values are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


S = TypeVar("S", bound=Section)

# The pydantic error type of a nested recipe's error, worded already (`nested_recipe_errors`).
NESTED_RECIPE_ERROR = "nested_recipe"

_SCIENTIFIC = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, for example train.lr=1e-4")
    # YAML gives numbers, booleans, null and lists the same meaning they have in a recipe.
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({error})") from error
    if isinstance(value, str) and _SCIENTIFIC.match(value):
        value = float(value)  # YAML 1.1 reads `1e-4` (no dot) as a string
    return key.strip().split("."), value


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `tree` with each `a.b.c=value` override set (intermediate dicts created)."""
    result = yaml.safe_load(yaml.safe_dump(tree)) or {}
    for text in overrides:
        path, value = _parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} holds a value, not a section")
            node = child
        node[path[-1]] = value
    return result


def _model_at(cls: type[BaseModel], path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The section class that a dotted location refers to, to list its valid keys."""
    model: Any = cls
    for part in path:
        if isinstance(part, int):  # an index into a list of sections: same section type
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = _section_type(field.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _section_type(annotation: Any) -> Any:
    """Unwrap `Section | None`, `list[Section]` and similar to the Section class inside."""
    for candidate in getattr(annotation, "__args__", ()) or ():
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        inner = _section_type(candidate)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return annotation


def _key_exists(cls: type[BaseModel], dotted: str) -> bool:
    *sections, last = dotted.split(".")
    parent = _model_at(cls, tuple(sections))
    return parent is not None and last in parent.model_fields


def _trl_hint(cls: type[BaseModel], name: str) -> str:
    """' (TRL's name; in alignloop: train.lr)' when `name` is a TRL argument this config has a key for."""
    keys = [key for key in TRL_KEYS.get(name, ()) if _key_exists(cls, key)]
    return f" (TRL's name; in alignloop: {' or '.join(keys)})" if keys else ""


def _describe(cls: type[BaseModel], error: dict[str, Any], key_prefix: str = "") -> str:
    """One pydantic error as a sentence naming the dotted key; `key_prefix` places a recipe that
    sits inside a larger one (`rl.recipe.`)."""
    if error["type"] == NESTED_RECIPE_ERROR:  # already worded by the nested recipe's own class
        return error["msg"]
    loc = tuple(error["loc"])
    key = key_prefix + ".".join(str(part) for part in loc)
    if error["type"] == "extra_forbidden":
        parent = _model_at(cls, loc[:-1])
        valid = sorted(parent.model_fields) if parent else []
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = _trl_hint(cls, str(loc[-1])) or (f" (did you mean {close[0]!r}?)" if close else "")
        return f"unknown key {key!r}{hint}; valid keys here: {', '.join(valid)}"
    if not loc:  # a check across several keys of the top-level section
        return f"{key_prefix.rstrip('.')}: {error['msg']}" if key_prefix else error["msg"]
    if error["type"] == "missing":
        return f"missing required key {key!r}"
    got = error.get("input")
    shown = repr(got) if not isinstance(got, dict) else "a section"
    return f"key {key!r}: {error['msg']} (got {shown})"


def validate_config(cls: type[S], tree: dict[str, Any], source: str = "config") -> S:
    """Validate a plain dict against `cls`, turning pydantic's report into a `ConfigError`."""
    try:
        return cls.model_validate(tree)
    except ValidationError as error:
        lines = [f"{source}: {_describe(cls, e)}" for e in error.errors()]
        raise ConfigError("\n".join(lines)) from None


def nested_recipe_errors(cls: type[BaseModel], tree: dict[str, Any], key_prefix: str) -> list[InitErrorDetails]:
    """Validate a recipe that sits inside a larger one (a loop's stage recipes) with its own
    class. Its errors come back worded as `validate_config` words them, each key in full
    (`rl.recipe.group.kl_coef`), for the larger recipe's validator to raise in one
    `ValidationError` (`ValidationError.from_exception_data`)."""
    try:
        cls.model_validate(tree)
    except ValidationError as error:
        place = tuple(key_prefix.rstrip(".").split("."))
        return [InitErrorDetails(type=PydanticCustomError(NESTED_RECIPE_ERROR, "{text}",
                                                          {"text": _describe(cls, e, key_prefix)}),
                                 loc=place + tuple(e["loc"]), input=e.get("input"))
                for e in error.errors()]
    return []


def load_config(cls: type[S], path: str | Path | None = None, overrides: list[str] | None = None) -> S:
    """Read a YAML recipe (optional), apply overrides, and validate into `cls`."""
    tree: dict[str, Any] = {}
    source = "overrides"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: recipe file not found")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    tree = apply_overrides(tree, overrides or [])
    return validate_config(cls, tree, source)


def config_to_yaml(config: BaseModel) -> str:
    """The fully resolved config (defaults included) as YAML, as stored in every run directory."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def _nested_section(annotation: Any) -> type[BaseModel] | None:
    """The section a field holds directly (`Section` or `Section | None`), not inside a list."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if getattr(annotation, "__origin__", None) is list:
        return None
    for candidate in getattr(annotation, "__args__", ()) or ():
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def field_help(cls: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every leaf field, for `--help` listings (a list of
    sections, such as a reward mix, is shown as one key)."""
    rows: list[tuple[str, str, str]] = []
    for name, field in cls.model_fields.items():
        key = f"{prefix}{name}"
        inner = _nested_section(field.annotation)
        if inner is not None and inner is not cls:
            rows.extend(field_help(inner, key + "."))
            continue
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        rows.append((key, default, field.description or ""))
    return rows
