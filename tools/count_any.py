#!/usr/bin/env python3
"""Count the uses of ``typing.Any`` in conntrack_lib/ and print the total.

Reads the source with :mod:`ast`, so comments and docstrings never count.
A use is a bare ``Any`` name, a ``typing.Any`` (or ``t.Any`` for any
``import typing as t``) attribute, or either inside a string annotation.
The import itself (``from typing import Any``) is not a use.

Run from anywhere::

    python tools/count_any.py [--per-file] [PATH ...]

Prints ``Any uses: N`` (and one line per file with ``--per-file``) and
exits 0: the count is a figure to watch, not a gate.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATHS = (ROOT / "conntrack_lib",)


def _typing_aliases(tree: ast.AST) -> frozenset[str]:
    """Return the names the module binds to the typing module itself."""
    names = {"typing"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.asname or alias.name for alias in node.names
                         if alias.name == "typing")
    return frozenset(names)


def _any_names(tree: ast.AST) -> frozenset[str]:
    """Return the local names ``typing.Any`` is imported as (usually just ``Any``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("typing", "typing_extensions"):
            names.update(alias.asname or alias.name for alias in node.names
                         if alias.name == "Any")
    return frozenset(names)


def _string_annotations(tree: ast.AST) -> Iterator[str]:
    """Yield the text of every annotation written as a string literal."""
    for node in ast.walk(tree):
        annotations: list[ast.expr | None] = []
        if isinstance(node, ast.arg):
            annotations.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            annotations.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
        for annotation in annotations:
            for sub in ast.walk(annotation) if annotation is not None else ():
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    yield sub.value


def _is_any(node: ast.AST, any_names: frozenset[str], typing_names: frozenset[str]) -> bool:
    """Tell whether ``node`` is ``Any`` (as imported) or ``typing.Any``."""
    if isinstance(node, ast.Name):
        return node.id in any_names
    return (isinstance(node, ast.Attribute) and node.attr == "Any"
            and isinstance(node.value, ast.Name) and node.value.id in typing_names)


def count_tree(tree: ast.AST) -> int:
    """Return the number of ``Any`` uses in a parsed module (string annotations included)."""
    any_names = _any_names(tree)
    typing_names = _typing_aliases(tree)
    found = sum(1 for node in ast.walk(tree) if _is_any(node, any_names, typing_names))
    for text in _string_annotations(tree):
        try:
            inner = ast.parse(text, mode="eval")
        except SyntaxError:
            continue  # a plain string that only looks like an annotation
        found += sum(1 for sub in ast.walk(inner)
                     if isinstance(sub, ast.Name) and sub.id in (any_names or {"Any"}))
    return found


def count_file(path: Path) -> int:
    """Return the number of ``Any`` uses in one Python file."""
    return count_tree(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))


def _python_files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(path.rglob("*.py"))
        else:
            yield path


def main(argv: list[str] | None = None) -> int:
    """Print the total (and optionally per-file) count; return 0."""
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--per-file", action="store_true", help="print one line per file too")
    args.add_argument("paths", nargs="*", type=Path, help="files or folders (default: "
                      "conntrack_lib/)")
    opts = args.parse_args(argv)
    total = 0
    for path in _python_files(opts.paths or list(DEFAULT_PATHS)):
        count = count_file(path)
        total += count
        if opts.per_file and count:
            shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            print(f"{count:5d} {shown}")
    print(f"Any uses: {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
