"""Names that nothing uses do not stay in the library."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conntrack_lib import constants, executor, models

ROOT = Path(__file__).resolve().parents[2]


def _sources_except(skip: Path) -> str:
    """Return the text of every Python file of the project except ``skip``."""
    return "\n".join(path.read_text() for folder in ("conntrack_lib", "tests", "bench", "tools")
                     for path in sorted((ROOT / folder).rglob("*.py")) if path != skip)


def test_every_constant_is_used() -> None:
    # Used means read by another file, or by another constant of the module.
    module = Path(constants.__file__)
    text = module.read_text()
    others = _sources_except(module)
    unused = []
    for node in ast.parse(text).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name = node.target.id
            inside = len(re.findall(rf"\b{name}\b", text)) - 1  # minus its definition
            if not inside and not re.search(rf"\b{name}\b", others):
                unused.append(name)
    assert unused == []


def test_removed_names_stay_removed() -> None:
    assert not hasattr(models.Entry, "identity")
    assert not hasattr(models.Entry, "extras")
    assert not hasattr(executor, "Command")
