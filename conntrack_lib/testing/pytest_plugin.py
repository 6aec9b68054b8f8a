"""pytest plugin of conntrack_lib: the ``fake_conntrack`` fixture.

pytest loads this module in every session of a project that has
conntrack_lib installed, so it imports nothing heavy until the fixture is
actually requested.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conntrack_lib.testing import fake


@pytest.fixture
def fake_conntrack() -> Iterator[fake.FakeConntrack]:
    """Yield a fresh in-memory :class:`~conntrack_lib.testing.fake.FakeConntrack`.

    It is driven by a fake clock.

    The clock is ``fake_conntrack.clock``; call ``.advance(seconds)`` on it
    to let entry timeouts run down.

    :returns: the fake executor (yielded), dropped with its tables when the
        test ends.
    """
    from conntrack_lib.testing.fixture import FakeConntrackFixture  # noqa: PLC0415 - lazy

    fixture = FakeConntrackFixture()
    fixture.setUp()
    try:
        yield fixture.fake
    finally:
        fixture.cleanUp()
