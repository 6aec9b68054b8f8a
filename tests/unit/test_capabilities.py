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


# -- what 1.4.5 and 1.4.6 misread is routed around -----------------------------


def _seeded(release: capabilities.Release) -> tuple[_Release, ConntrackHelper]:
    """Return a fake of ``release`` holding IPv4 and IPv6 flows, some in zone 7."""
    fake = _Release(release)
    helper = ConntrackHelper(executor=fake)
    for i in range(1, 5):
        helper.create_entry(proto="udp", src=f"10.8.0.{i}", dst="10.9.0.2", sport=1,
                            dport=53, timeout=60, zone=7 if i > 2 else None)
        helper.create_entry(proto="udp", src=f"fd00::{i}", dst="fd00::ff", sport=1,
                            dport=53, timeout=60, zone=7 if i > 2 else None)
    helper.create_entry(proto="icmp", src="10.8.0.9", dst="10.9.0.2", icmp_type=8,
                        icmp_code=0, icmp_id=1, timeout=60)
    fake.calls.clear()
    return fake, helper


def _sent(fake: FakeConntrack, kind: type) -> list[dict[str, object]]:
    return [c.fields for c in fake.calls if isinstance(c, kind)]


def test_1_4_5_gets_src_prefixes_as_masks() -> None:
    fake, helper = _seeded((1, 4, 5))
    found = helper.list_entries(src="10.8.0.0/31")
    assert sorted(str(e.original.src) for e in found) == ["10.8.0.1"]
    assert _sent(fake, commands.ListCommand) == [
        {"src": "10.8.0.0", "mask_src": "255.255.255.254"}]


def test_1_4_5_never_trusts_a_bare_family() -> None:
    fake, helper = _seeded((1, 4, 5))
    assert {e.family for e in helper.list_entries(family="ipv6")} == {"ipv6"}
    assert helper.delete_entries(family="ipv6", proto="udp") == 4
    assert helper.count() == 5
    for fields in _sent(fake, commands.ListCommand) + _sent(fake, commands.DeleteCommand):
        assert "family" not in fields or "src" in fields, fields


def test_1_4_5_family_with_an_address_stays_with_conntrack() -> None:
    fake, helper = _seeded((1, 4, 5))
    assert len(helper.list_entries(family="ipv6", src="fd00::1")) == 1
    assert _sent(fake, commands.ListCommand) == [{"family": "ipv6", "src": "fd00::1"}]


def test_1_4_6_lists_each_family_when_none_is_given() -> None:
    fake, helper = _seeded((1, 4, 6))
    assert len(helper.list_entries()) == 9
    assert [f.get("family") for f in _sent(fake, commands.ListCommand)] == ["ipv4", "ipv6"]


def test_1_4_6_leaves_out_the_family_a_protocol_excludes() -> None:
    fake, helper = _seeded((1, 4, 6))
    assert len(helper.list_entries(proto="icmp")) == 1
    assert _sent(fake, commands.ListCommand) == [{"family": "ipv4", "proto": "icmp"}]


def test_1_4_6_flushes_a_zone_in_every_family() -> None:
    fake, helper = _seeded((1, 4, 6))
    assert helper.flush_zone(7) == 4
    assert helper.count() == 5
    deletes = _sent(fake, commands.DeleteCommand)
    lists = _sent(fake, commands.ListCommand)
    # Either one -D per family or a dump per family: never a family-less command.
    assert deletes or lists
    assert all("family" in f for f in deletes + lists)


def test_1_4_6_deletes_without_a_family_in_both_families() -> None:
    fake, helper = _seeded((1, 4, 6))
    assert helper.delete_entries(proto="udp", sport=1) == 8
    assert helper.count() == 1
    assert all("family" in f for f in _sent(fake, commands.DeleteCommand)
               + _sent(fake, commands.ListCommand))


def test_1_4_5_updates_a_prefix_flow_by_flow() -> None:
    fake, helper = _seeded((1, 4, 5))
    assert helper.update_entries({"src": "10.8.0.0/31"}, mark=9) == 1
    updates = _sent(fake, commands.UpdateCommand)
    assert updates and all("/" not in str(f.get("src")) for f in updates)
    assert [str(e.original.src) for e in helper.list_entries(mark=9)] == ["10.8.0.1"]


@pytest.mark.parametrize("release", capabilities.MEASURED)
def test_every_release_answers_the_same(release: capabilities.Release) -> None:
    questions: list[dict[str, object]] = [
        {}, {"family": "ipv6"}, {"family": "ipv4", "proto": "udp"}, {"src": "10.8.0.0/30"},
        {"dst": "fd00::/64"}, {"src": "fd00::/126", "zone": 7}, {"zone": 7},
        {"zone": 7, "family": "ipv6"}, {"proto": "icmp"}]
    _, modern = _seeded(capabilities.MEASURED[-1])
    _, old = _seeded(release)
    for question in questions:
        want = sorted(map(str, modern.list_entries(**question)))
        assert sorted(map(str, old.list_entries(**question))) == want, question


def test_1_4_5_watches_events_of_a_prefix_by_mask() -> None:
    fake = _Release((1, 4, 5))
    helper = ConntrackHelper(executor=fake)
    list(helper.events(duration=0.1, src="10.8.0.0/30", family="ipv4"))
    (sent,) = _sent(fake, commands.EventsCommand)
    assert (sent["src"], sent["mask_src"], "family" in sent) == ("10.8.0.0", "255.255.255.252",
                                                                 False)
