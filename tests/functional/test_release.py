"""The conntrack binary the functional tests drive is the release meant.

The version matrix (tools/matrix.sh) lays each built release over
``/usr/sbin/conntrack`` in a private mount namespace and exports
``CONNTRACK_LIB_EXPECT_RELEASE``; should the bind mount not take, the whole
suite would silently test the system's release instead.  This test makes
that a failure.
"""

from __future__ import annotations

import os
import re

from tests.functional import netns

_VERSION = re.compile(r"conntrack v(\d+\.\d+\.\d+) \(conntrack-tools\)")


def test_binary_reports_the_release_under_test(ns: str) -> None:
    result = netns.run(ns, ["--version"])
    assert result.returncode == 0, result.stderr
    found = _VERSION.fullmatch(result.stdout.strip())
    assert found is not None, f"unexpected version line: {result.stdout!r}"
    expected = os.environ.get("CONNTRACK_LIB_EXPECT_RELEASE", found.group(1))
    assert found.group(1) == expected, (
        f"{netns.CONNTRACK} is conntrack {found.group(1)}, the run expects {expected}")
