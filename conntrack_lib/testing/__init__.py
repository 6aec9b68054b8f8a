"""Test doubles for code that uses conntrack_lib.

:class:`~conntrack_lib.testing.fake.FakeConntrack` is an in-memory executor with
the semantics of the conntrack 1.4.7 command line;
:class:`~conntrack_lib.testing.fixture.FakeConntrackFixture` wraps it for
``fixtures``/``testtools`` suites, and the pytest plugin of this package
provides it as the ``fake_conntrack`` fixture.
:func:`~conntrack_lib.testing.namespaces.throwaway_namespace` gives
functional tests, which run the real conntrack, a network namespace of
their own that is removed afterwards.

Names are imported on first use, so loading the pytest plugin (which pytest
does for every session) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conntrack_lib.testing.fake import FakeClock, FakeConntrack
    from conntrack_lib.testing.fixture import FakeConntrackFixture
    from conntrack_lib.testing.namespaces import throwaway_namespace, unique_name

_HOMES = {
    "FakeClock": "conntrack_lib.testing.fake",
    "FakeConntrack": "conntrack_lib.testing.fake",
    "FakeConntrackFixture": "conntrack_lib.testing.fixture",
    "throwaway_namespace": "conntrack_lib.testing.namespaces",
    "unique_name": "conntrack_lib.testing.namespaces",
}


def __getattr__(name: str) -> object:
    """Import a public name from its module the first time it is used."""
    try:
        home = _HOMES[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    return getattr(importlib.import_module(home), name)


__all__ = ["FakeClock", "FakeConntrack", "FakeConntrackFixture", "throwaway_namespace",
           "unique_name"]
