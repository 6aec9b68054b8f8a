"""The capability table: version parsing, routing flags and the documented table."""

from __future__ import annotations

import pathlib

import pytest

from conntrack_lib import capabilities, commands
from conntrack_lib import exceptions as exc
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.testing import FakeConntrack

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "capabilities.rst"


@pytest.mark.parametrize(("text", "release"), [
    ("conntrack v1.4.5 (conntrack-tools)\n", (1, 4, 5)),
    ("conntrack v1.4.9 (conntrack-tools)", (1, 4, 9)),
    ("conntrack v1.5.0 (conntrack-tools)", (1, 5, 0)),
    ("noise\nconntrack v1.4.10 (conntrack-tools)\n", (1, 4, 10)),
])
def test_parse_version(text: str, release: capabilities.Release) -> None:
    assert capabilities.parse_version(text) == release


@pytest.mark.parametrize("text", ["", "conntrack (conntrack-tools)", "conntrack v1.4",
                                  "iptables v1.8.9"])
def test_parse_version_refuses_text_without_a_release(text: str) -> None:
    with pytest.raises(exc.UnsupportedReleaseError):
        capabilities.parse_version(text)


def test_releases_before_1_4_5_are_refused() -> None:
    with pytest.raises(exc.UnsupportedReleaseError, match=r"1\.4\.4"):
        capabilities.for_release((1, 4, 4))


@pytest.mark.parametrize(("release", "modern"), [
    ((1, 4, 5), False), ((1, 4, 6), False), ((1, 4, 7), True), ((1, 4, 8), True),
    ((1, 4, 9), True), ((1, 5, 2), True),
])
def test_options_added_in_1_4_7(release: capabilities.Release, modern: bool) -> None:
    caps = capabilities.for_release(release)
    assert (caps.load_file, caps.events_family, caps.negated_status, caps.flush_family) == \
        (modern, modern, modern, modern)


def test_only_1_4_7_aborts_bulk_updates() -> None:
    limits = {r: capabilities.for_release(r).bulk_update_limit for r in capabilities.MEASURED}
    assert limits == {(1, 4, 5): None, (1, 4, 6): None, (1, 4, 7): 256, (1, 4, 8): None,
                      (1, 4, 9): None}


def test_every_row_has_a_result_per_measured_release() -> None:
    assert all(len(row.results) == len(capabilities.MEASURED) for row in capabilities.ROWS)
    assert len({row.behaviour for row in capabilities.ROWS}) == len(capabilities.ROWS)


def test_docs_show_every_row_of_the_table() -> None:
    text = DOCS.read_text()
    for row in capabilities.ROWS:
        assert row.behaviour in text, row.behaviour
        assert row.command in text, row.command


class _Release(FakeConntrack):
    """A fake that reports an older release (the fake itself is release-less)."""

    def __init__(self, release: capabilities.Release) -> None:
        super().__init__()
        self._release_of_test = release

    def release(self) -> capabilities.Release:
        return self._release_of_test


def test_helper_exposes_the_release_and_its_capabilities() -> None:
    helper = ConntrackHelper(executor=_Release((1, 4, 6)))
    assert helper.conntrack_version == (1, 4, 6)
    assert helper.capabilities.load_file is False
    assert ConntrackHelper(executor=FakeConntrack()).capabilities == capabilities.LATEST


def test_without_load_file_creates_never_use_a_batch() -> None:
    fake = _Release((1, 4, 6))
    helper = ConntrackHelper(executor=fake)
    flows = [{"proto": "udp", "src": f"10.0.0.{i}", "dst": "10.0.1.1", "sport": 1,
              "dport": 53, "timeout": 60} for i in range(1, 6)]
    assert helper.create_entries(flows) == 5
    assert helper.count() == 5
    assert not any(isinstance(c, commands.BatchCommand) for c in fake.calls)


def test_with_load_file_creates_go_as_one_batch() -> None:
    fake = FakeConntrack()
    helper = ConntrackHelper(executor=fake)
    flows = [{"proto": "udp", "src": f"10.0.0.{i}", "dst": "10.0.1.1", "sport": 1,
              "dport": 53, "timeout": 60} for i in range(1, 6)]
    assert helper.create_entries(flows) == 5
    assert sum(isinstance(c, commands.BatchCommand) for c in fake.calls) == 1


def test_without_negated_words_status_is_matched_on_a_dump() -> None:
    fake = _Release((1, 4, 5))
    helper = ConntrackHelper(executor=fake)
    helper.create_entry(proto="udp", src="10.0.0.1", dst="10.0.1.1", sport=1, dport=53,
                        timeout=60)
    assert len(helper.list_entries(status="!SEEN_REPLY")) == 1
    sent = [c for c in fake.calls if isinstance(c, commands.ListCommand)]
    assert all("status" not in c.fields for c in sent)


def test_without_events_family_the_family_is_matched_per_event() -> None:
    fake = _Release((1, 4, 6))
    helper = ConntrackHelper(executor=fake)
    helper.create_entry(proto="udp", src="10.0.0.1", dst="10.0.1.1", sport=1, dport=53,
                        timeout=60)
    helper.create_entry(proto="udp", src="fd00::1", dst="fd00::2", sport=1, dport=53,
                        timeout=60)
    seen = list(helper.events(duration=0.1, family="ipv6"))
    assert [e.entry.family for e in seen] == ["ipv6"]
    sent = [c for c in fake.calls if isinstance(c, commands.EventsCommand)]
    assert sent and all("family" not in c.fields for c in sent)
