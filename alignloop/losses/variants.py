"""Variant tables are the dispatch: a config names a variant by its key, and a method calls it
through the table with everything it can offer; each variant receives what its signature names.

So the table's key is the only place a variant's name lives. A method never asks "is this
SimPO?": it asks the variant whether it takes a reference (`takes`), and offers inputs and
settings by parameter name (`call_variant`). A setting a variant does not take is refused when
the config is read (`refuse_settings_not_taken`), naming the key and the variant, instead of
being silently dropped at the first step.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any


@cache
def parameters(fn: Callable) -> frozenset[str]:
    """The names `fn` takes (positional or keyword)."""
    return frozenset(inspect.signature(fn).parameters)


def takes(fn: Callable, name: str) -> bool:
    return name in parameters(fn)


def call_variant(fn: Callable, **offered: Any) -> Any:
    """`fn` called with the offered arguments its signature names; the rest are not its inputs."""
    return fn(**{name: value for name, value in offered.items() if name in parameters(fn)})


def refuse_settings_not_taken(table: Mapping[str, Callable], name: str, what: str,
                              settings: Mapping[str, tuple[str, Any]]) -> None:
    """ValueError naming the first setting the chosen variant does not take.

    `settings` maps a config key to (the parameter it becomes, its value); pass only the keys
    the recipe set. `what` names the config key that chose the variant ("loss", "advantage").
    """
    for key, (parameter, _) in settings.items():
        if not takes(table[name], parameter):
            takers = ", ".join(repr(other) for other, fn in table.items() if takes(fn, parameter))
            raise ValueError(f"{key} is not a setting of {what} {name!r}" + (f" (only of {takers})" if takers else ""))
