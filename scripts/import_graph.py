"""The import graph of alignloop: function-level imports, upward imports between packages, cycles.

    python scripts/import_graph.py            # the numbers
    python scripts/import_graph.py --list     # and every function-level import, upward edge and cycle

A *package* is the first name under `alignloop` (`alignloop/ops.py` is package `ops`,
`alignloop/engine/rollout.py` package `engine`). `LAYERS` orders them bottom to top
(docs/architecture.md explains each); a package may import its own layer and the layers below.
An import of a higher layer is *upward*. Imports under `if TYPE_CHECKING:` do not run and are
not counted. A function-level import is one written inside a function body; the ones that must
stay (import cost, an optional dependency) say why on the line before or at the end of the
same line: `# lazy: <reason>`.

tests/test_import_graph.py reads this file and fails on an upward import or a cycle between
packages that is not in its allow-list.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT_PACKAGE = "alignloop"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("__init__", "errors", "config", "hardware", "trl_names", "ops", "losses", "data"),  # tensors, records, settings
    ("models",),  # load, wrap, run and save networks
    ("engine",),  # the training loop and rollouts every method shares
    ("rewards", "evaluation", "report"),  # what scores replies, measures runs and writes reports
    ("algorithms",),  # one file per training method
    ("feedback", "web", "loop"),  # the feedback store and its web app; the round-by-round loop
    ("cli", "__main__"),  # commands
)

LAZY_MARK = "# lazy:"


def layer_of(package: str) -> int:
    for index, packages in enumerate(LAYERS):
        if package in packages:
            return index
    raise KeyError(f"package {package!r} is in no layer of scripts/import_graph.py: add it to LAYERS")


@dataclass(frozen=True)
class ImportSite:
    module: str  # the importing module, dotted
    target: str  # the imported alignloop module (or the external top-level name), dotted
    line: int
    in_function: bool
    lazy_reason: str | None  # the text after `# lazy:` on the line before, if any

    @property
    def internal(self) -> bool:
        return self.target == ROOT_PACKAGE or self.target.startswith(ROOT_PACKAGE + ".")


@dataclass
class Graph:
    sites: list[ImportSite] = field(default_factory=list)

    def edges(self) -> set[tuple[str, str]]:
        """Package -> package edges of the internal imports (module and function level)."""
        return {(package_of(s.module), package_of(s.target)) for s in self.sites
                if s.internal and package_of(s.module) != package_of(s.target)}

    def upward(self) -> list[ImportSite]:
        return [s for s in self.sites if s.internal
                and layer_of(package_of(s.target)) > layer_of(package_of(s.module))]

    def function_level(self) -> list[ImportSite]:
        return [s for s in self.sites if s.in_function]

    def package_cycles(self) -> list[list[str]]:
        return strongly_connected(self.edges())

    def module_cycles(self) -> list[list[str]]:
        return strongly_connected({(s.module, s.target) for s in self.sites if s.internal and s.module != s.target})


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path, source_root: Path) -> str:
    parts = list(path.relative_to(source_root).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def resolve(node: ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The modules an import-from reads: `from a.b import c` is `a.b.c` when that is a module."""
    if node.level:
        base = module.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    targets = [f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in known]
    return targets or [source]


class _Visitor(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: set[str], lines: list[str]):
        self.module, self.is_package, self.known, self.lines = module, is_package, known, lines
        self.depth = 0
        self.sites: list[ImportSite] = []

    def _function(self, node) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_If(self, node: ast.If) -> None:
        test = ast.unparse(node.test)
        if test in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):  # never runs
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _add(self, node, targets: list[str]) -> None:
        previous = self.lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
        same = self.lines[node.lineno - 1]
        reason = None
        for text in (previous, same[same.find("#"):] if "#" in same else ""):
            if text.startswith(LAZY_MARK):
                reason = text[len(LAZY_MARK):].strip()
        for target in targets:
            self.sites.append(ImportSite(self.module, target, node.lineno, self.depth > 0, reason))

    def visit_Import(self, node: ast.Import) -> None:
        self._add(node, [alias.name if alias.name.startswith(ROOT_PACKAGE) else alias.name.split(".")[0]
                         for alias in node.names])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        targets = resolve(node, self.module, self.is_package, self.known)
        self._add(node, [t if t.startswith(ROOT_PACKAGE) else t.split(".")[0] for t in targets])


def build_graph(source_root: Path) -> Graph:
    """Every import of every module under `source_root / alignloop`."""
    paths = sorted((source_root / ROOT_PACKAGE).rglob("*.py"))
    known = {module_name(path, source_root) for path in paths}
    graph = Graph()
    for path in paths:
        text = path.read_text()
        visitor = _Visitor(module_name(path, source_root), path.name == "__init__.py", known, text.splitlines())
        visitor.visit(ast.parse(text, str(path)))
        graph.sites.extend(visitor.sites)
    return graph


def strongly_connected(edges: set[tuple[str, str]]) -> list[list[str]]:
    """The cycles of a directed graph: its strongly connected components of two or more nodes."""
    successors: dict[str, list[str]] = {}
    for a, b in edges:
        successors.setdefault(a, []).append(b)
        successors.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graphs are a few hundred nodes deep at most
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in successors[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(successors):
        if node not in index:
            visit(node)
    return sorted(components)


def summary(graph: Graph) -> dict[str, int]:
    function_level = graph.function_level()
    return {
        "function-level imports": len(function_level),
        "  of alignloop modules": sum(s.internal for s in function_level),
        "  with a '# lazy:' reason": sum(s.lazy_reason is not None for s in function_level),
        "upward imports (sites)": len(graph.upward()),
        "package cycles": len(graph.package_cycles()),
        "module cycles": len(graph.module_cycles()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--list", action="store_true", help="also list every site behind the numbers")
    args = parser.parse_args()
    graph = build_graph(args.root)
    for name, value in summary(graph).items():
        print(f"{name:28} {value}")
    if not args.list:
        return
    print("\nfunction-level imports:")
    for s in graph.function_level():
        print(f"  {s.module}:{s.line} -> {s.target}" + (f"   (lazy: {s.lazy_reason})" if s.lazy_reason else ""))
    print("\nupward imports:")
    for s in graph.upward():
        print(f"  {s.module}:{s.line} -> {s.target}")
    print("\npackage cycles:", *graph.package_cycles(), sep="\n  ")
    print("\nmodule cycles:", *graph.module_cycles(), sep="\n  ")


if __name__ == "__main__":
    main()
