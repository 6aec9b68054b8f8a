"""A ``fixtures.Fixture`` providing a fresh :class:`~conntrack_lib.testing.fake.FakeConntrack`."""

from __future__ import annotations

from collections.abc import Iterable

import fixtures

from conntrack_lib.testing.fake import FakeClock, FakeConntrack


class FakeConntrackFixture(fixtures.Fixture):  # type: ignore[misc]
    """Give each test its own in-memory conntrack and a clock it controls.

    ``self.fake`` is the executor to pass as ``ConntrackHelper(executor=...)``;
    ``self.clock`` is its :class:`~conntrack_lib.testing.fake.FakeClock`
    (advance it to age entries).

    :param namespaces: network namespaces that exist in the fake.
    :param start: the clock's initial reading in seconds.
    """

    def __init__(self, namespaces: Iterable[str] = (), start: float = 0.0) -> None:
        super().__init__()
        self._namespaces = tuple(namespaces)
        self._start = start
        self.clock: FakeClock
        self.fake: FakeConntrack

    def _setUp(self) -> None:  # noqa: N802 - the fixtures API name
        self.clock = FakeClock(self._start)
        self.fake = FakeConntrack(clock=self.clock, namespaces=self._namespaces)
        # Drop the tables when the test ends so nothing leaks between tests.
        self.addCleanup(self._forget)

    def _forget(self) -> None:
        for namespace in (None, *self.fake.namespaces):
            self.fake.clear(namespace)


__all__ = ["FakeConntrackFixture"]
