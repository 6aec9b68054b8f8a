#!/usr/bin/env python3
"""Count the public callables of the documented API that document their fields.

The scope is the docs issue's: ConntrackHelper (with the deleting methods
it mixes in), DeletionQueue, the executors, the zone stores and the zone
allocator, and the testing module (FakeConntrack, FakeClock, the fixture
and the pytest plugin's fixture).  A callable is documented when:

* it has a docstring;
* every named parameter but ``self`` and ``cls`` (``*args`` and
  ``**kwargs`` by their names) has a ``:param name:`` field, in the
  docstring of the callable or, for ``__init__``, of its class;
* it has a ``:returns:`` (or ``:yields:``) field, unless it is a property
  or ``__init__`` or is annotated to return None.

``:raises:`` fields are not counted: a callable through which nothing
propagates has none, and which exceptions do is a matter for review.

Run from the repository root::

    python tools/docstring_coverage.py [--check]

Prints one line per class (documented/total), the total, and each callable
that lacks a field; with ``--check`` exits 1 unless every callable is
documented.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: ``(module, name)`` of each class or function in scope.
SCOPE: tuple[tuple[str, str], ...] = (
    ("conntrack_lib.helper", "ConntrackHelper"),
    ("conntrack_lib.worker", "DeletionQueue"),
    ("conntrack_lib.executor", "Executor"),
    ("conntrack_lib.executor", "ProcessExecutor"),
    ("conntrack_lib.executor", "PrivsepExecutor"),
    ("conntrack_lib.zones.sqlite_store", "SQLiteZoneStore"),
    ("conntrack_lib.zones.stores", "MemoryZoneStore"),
    ("conntrack_lib.zones.file_store", "FileZoneStore"),
    ("conntrack_lib.zones.allocator", "ZoneAllocator"),
    ("conntrack_lib.testing.fake", "FakeConntrack"),
    ("conntrack_lib.testing.fake", "FakeClock"),
    ("conntrack_lib.testing.fixture", "FakeConntrackFixture"),
    ("conntrack_lib.testing.pytest_plugin", "fake_conntrack"),
)

_PARAM = re.compile(r"^\s*:param\s+(?:[^:]*\s)?\*{0,2}(\w+)\s*:", re.MULTILINE)
_RETURNS = re.compile(r"^\s*:(?:returns?|yields?)\s*:", re.MULTILINE)
_NO_RETURN = ("None", None, inspect.Signature.empty)


@dataclasses.dataclass(frozen=True)
class Finding:
    """The check of one callable: its name and what its docstring lacks."""

    owner: str
    name: str
    missing: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Return whether the docstring lacks nothing."""
        return not self.missing


def _unwrap(obj: Any) -> Any:
    """Return the plain function under a pytest fixture (or ``obj`` itself)."""
    getter = getattr(obj, "_get_wrapped_function", None)
    if callable(getter):
        return getter()
    return inspect.unwrap(obj) if callable(obj) else obj


def _documented(names: list[str], doc: str) -> list[str]:
    """Return the ``:param`` names of ``names`` that ``doc`` lacks."""
    found = set(_PARAM.findall(doc))
    return [f":param {name}:" for name in names if name not in found]


def _parameters(func: Callable[..., Any]) -> tuple[list[str], Any]:
    """Return the named parameters of ``func`` (no self or cls) and its return annotation."""
    sig = inspect.signature(func)
    names = [p.name for p in sig.parameters.values() if p.name not in ("self", "cls")]
    return names, sig.return_annotation


def check_callable(owner: str, name: str, obj: Any, class_doc: str = "") -> Finding:
    """Check one callable of ``owner``.

    :param owner: the name of the class in scope, or of the module.
    :param name: the callable's name.
    :param obj: the callable as found in the class ``__dict__`` (a
        function, property, staticmethod or classmethod) or the module.
    :param class_doc: the docstring of the class, where ``__init__``
        parameters may be documented.
    :returns: what the callable's docstring lacks.
    """
    if isinstance(obj, property):
        doc = inspect.getdoc(obj) or ""
        return Finding(owner, name, () if doc else ("docstring",))
    func = _unwrap(obj.__func__ if isinstance(obj, (staticmethod, classmethod)) else obj)
    doc = inspect.getdoc(func) or ""
    params, returned = _parameters(func)
    missing: list[str] = []
    if name == "__init__":
        missing.extend(_documented(params, doc + "\n" + class_doc))
        return Finding(owner, name, tuple(missing))
    if not doc:
        missing.append("docstring")
    missing.extend(_documented(params, doc))
    if returned not in _NO_RETURN and not _RETURNS.search(doc):
        missing.append(":returns:")
    return Finding(owner, name, tuple(missing))


def _members(cls: type) -> Iterator[tuple[str, Any]]:
    """Yield the public callables of ``cls`` (and ``__init__``) defined in conntrack_lib."""
    seen: set[str] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("conntrack_lib"):
            continue
        for name, value in vars(klass).items():
            if name in seen:
                continue
            seen.add(name)
            if name.startswith("_") and name != "__init__":
                continue
            if isinstance(value, (property, staticmethod, classmethod)):
                yield name, value
            elif inspect.isfunction(value) and value.__module__.startswith("conntrack_lib"):
                # Not typing.Protocol's own __init__, which Protocol classes carry.
                yield name, value


def check(scope: tuple[tuple[str, str], ...] = SCOPE) -> list[Finding]:
    """Check every callable in ``scope``.

    :param scope: ``(module, name)`` of the classes and functions to check.
    :returns: one finding per callable, in scope order.
    """
    findings: list[Finding] = []
    for module_name, name in scope:
        target = getattr(importlib.import_module(module_name), name)
        if isinstance(target, type):
            class_doc = inspect.getdoc(target) or ""
            findings.extend(check_callable(name, member, value, class_doc)
                            for member, value in _members(target))
        else:
            findings.append(check_callable(module_name.rsplit(".", 1)[-1], name, target))
    return findings


def report(findings: list[Finding]) -> str:
    """Return the printed report of ``findings``.

    :param findings: the result of :func:`check`.
    :returns: per-owner counts, the total, and the callables that lack fields.
    """
    owners: dict[str, list[Finding]] = {}
    for finding in findings:
        owners.setdefault(finding.owner, []).append(finding)
    lines = [f"{owner}: {sum(f.ok for f in found)}/{len(found)}"
             for owner, found in owners.items()]
    lines.append(f"documented: {sum(f.ok for f in findings)}/{len(findings)}")
    lines.extend(f"  {f.owner}.{f.name}: missing {', '.join(f.missing)}"
                 for f in findings if not f.ok)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the coverage report.

    :param argv: the command line arguments (``sys.argv[1:]`` when None).
    :returns: the exit status: 1 with ``--check`` when a callable lacks a
        field, else 0.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 unless every callable is documented")
    args = parser.parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    findings = check()
    print(report(findings))
    return 1 if args.check and not all(f.ok for f in findings) else 0


if __name__ == "__main__":
    sys.exit(main())
