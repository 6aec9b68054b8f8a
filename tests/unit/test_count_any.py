"""tools/count_any.py counts typing.Any uses, not imports, comments or docstrings."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "count_any.py"


@pytest.fixture(scope="module")
def count_any() -> ModuleType:
    spec = importlib.util.spec_from_file_location("count_any", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SOURCE = '''
"""Any in a docstring is no use."""
import typing
import typing as t
from typing import Any, cast  # Any in a comment neither

def f(a: Any, b: "dict[str, Any]") -> typing.Any:
    return cast(Any, t.Any)

x: list[Any] = []
'''


def test_counts_names_attributes_and_string_annotations(count_any: ModuleType) -> None:
    # a, "dict[str, Any]", typing.Any, cast(Any...), t.Any, list[Any]
    assert count_any.count_tree(ast.parse(SOURCE)) == 6


def test_a_module_without_any_counts_zero(count_any: ModuleType) -> None:
    assert count_any.count_tree(ast.parse("from typing import cast\nx: int = 1\n")) == 0


def test_main_prints_the_total_and_exits_zero(count_any: ModuleType, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.py").write_text(SOURCE)
    assert count_any.main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "Any uses: 6"
