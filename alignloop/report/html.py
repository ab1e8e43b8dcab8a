"""Rendering the report pages: Jinja2 templates with autoescaping, PNGs inlined as data URIs.

A report must open from disk, be mailed, or be archived beside its run: every image is embedded
as a base64 `data:` URI and the CSS is inline, so the single HTML file is the whole report.
Everything that comes from a run (prompts, generations, annotator names, warnings) is text the
model or a user wrote; autoescaping makes sure a generated `<script>` is shown, never run.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import os
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).parent / "templates"
NOT_AVAILABLE = "n/a"


def png_data_uri(png: bytes) -> str:
    """An `<img src>` value that holds the image itself."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def format_number(value: Any, digits: int = 4) -> str:
    """A table cell: integers as they are, floats to `digits` significant figures, None as n/a."""
    if value is None:
        return NOT_AVAILABLE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return str(value)


def format_percent(value: Any) -> str:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return NOT_AVAILABLE
    return f"{100 * value:.1f}%"


def format_mean_se(mean: Any, se: Any) -> str:
    """"0.163 ± 0.012": a mean with its standard error, when there is one."""
    if mean is None:
        return NOT_AVAILABLE
    return format_number(mean) if se is None else f"{format_number(mean)} ± {format_number(se, 2)}"


def format_text(value: Any) -> str:
    """A prompt or response cell: text as it is; chat messages and other structures as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=1)


@functools.lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=format_number, pct=format_percent, text=format_text)
    env.globals.update(mean_se=format_mean_se, NOT_AVAILABLE=NOT_AVAILABLE)
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def write_page(path: Path, template: str, **context: Any) -> Path:
    """Render and write atomically: a browser reloading the report never reads half a page."""
    text = render(template, **context)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    return path
