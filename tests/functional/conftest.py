"""Fixtures of the functional tests: root, the real binary, a namespace.

Without root these tests skip with a loud reason.  Under
``CONNTRACK_LIB_REQUIRE_FUNCTIONAL=1`` (set by tools/test.sh as root, so in
CI) a test that cannot run fails instead of skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from conntrack_lib.testing import namespaces
from tests.functional import netns


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "functional tests need root (CAP_NET_ADMIN, ip netns)"
    if not os.access(netns.CONNTRACK, os.X_OK):
        return f"functional tests need the conntrack binary at {netns.CONNTRACK}"
    if namespaces.ip_binary() is None:
        return "functional tests need iproute2 (ip netns)"
    return None


@pytest.fixture(autouse=True)
def _require_functional_environment() -> None:
    reason = _missing()
    if reason is None:
        return
    if os.environ.get("CONNTRACK_LIB_REQUIRE_FUNCTIONAL") == "1":
        pytest.fail(f"CANNOT RUN FUNCTIONAL TEST: {reason}")
    pytest.skip(f"SKIPPED, NOT RUN: {reason}")


@pytest.fixture
def ns() -> Iterator[str]:
    """Yield a fresh network namespace's name; remove it after the test."""
    with netns.namespace() as name:
        yield name
