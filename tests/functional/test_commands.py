"""Commands built by conntrack_lib.commands, run by the real conntrack in a namespace.

One namespace serves the whole module; every test starts from a flushed table
(and most from the same seeded set of flows), so the expected counts below
follow from SEED alone.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import netaddr
import pytest

from conntrack_lib import commands as c
from conntrack_lib import executor, models
from tests.functional import netns
from tests.functional.conftest import _missing

TCP4 = {"proto": "tcp", "src": "10.0.0.1", "dst": "10.0.0.2", "sport": 1000, "dport": 80}
SCTP = {"proto": "sctp", "src": "10.0.0.9", "dst": "10.0.0.10", "sport": 5, "dport": 6}

SEED: list[c.CreateCommand] = [
    c.CreateCommand(**TCP4, state="ESTABLISHED", timeout=300, mark=5),
    c.CreateCommand(proto="udp", src="10.0.0.3", dst="10.0.0.4", sport=53, dport=53,
                    timeout=300, zone=7),
    c.CreateCommand(proto="tcp", src="2001:db8::1", dst="2001:db8::2", sport=1, dport=443,
                    state="SYN_SENT", status="ASSURED", timeout=300),
    c.CreateCommand(proto="icmp", src="10.0.0.5", dst="10.0.0.6", icmp_type=8, icmp_code=0,
                    icmp_id=7, timeout=300),
    c.CreateCommand(proto="icmpv6", src="2001:db8::5", dst="2001:db8::6", icmp_type=128,
                    icmp_code=0, icmp_id=7, timeout=300),
    c.CreateCommand(proto="gre", src="10.0.0.7", dst="10.0.0.8", srckey=16, dstkey=32,
                    timeout=300),
    c.CreateCommand(**SCTP, state="ESTABLISHED", orig_vtag=1, reply_vtag=2, timeout=300),
    c.CreateCommand(proto="dccp", src="10.0.0.11", dst="10.0.0.12", sport=5, dport=6,
                    state="OPEN", role="client", timeout=300),
    c.CreateCommand(proto="udplite", src="10.0.0.13", dst="10.0.0.14", sport=7, dport=8,
                    timeout=300, orig_zone=3),
    c.CreateCommand(proto=89, src="10.0.0.15", dst="10.0.0.16", timeout=300, reply_zone=4),
    c.CreateCommand(proto="udp", src="10.1.0.1", dst="10.1.0.2", sport=5000, dport=53,
                    timeout=300, dst_nat="10.1.0.9"),
    c.CreateCommand(proto="udp", src="10.1.0.3", dst="10.1.0.2", sport=5000, dport=53,
                    timeout=300, src_nat=("10.1.0.99", 4000)),
    c.CreateCommand(proto="udp", src="10.3.0.1", dst="10.3.0.2", sport=1, dport=2,
                    reply_src="10.3.0.9", reply_dst="10.3.0.1", reply_sport=2,
                    reply_dport=1, status=["ASSURED", "SEEN_REPLY"], timeout=300),
]
TOTAL = len(SEED)
IPV6_SEEDS = 2


@pytest.fixture(scope="module")
def _module_ns() -> Iterator[str]:
    if _missing() is not None:
        # The function-level environment check reports why; nothing to set up.
        yield ""
        return
    with netns.namespace("ctcmd") as name:
        yield name


@pytest.fixture
def ctns(_require_functional_environment: None, _module_ns: str) -> str:
    """Return the module's namespace with an empty table."""
    netns.run(_module_ns, ["-F"], check=True)
    return _module_ns


@pytest.fixture
def seeded(ctns: str) -> str:
    """Return the namespace holding exactly the SEED flows, loaded in one batch."""
    netns.seed(ctns, SEED)
    assert len(netns.table(ctns)) == TOTAL
    return ctns


def run(ns: str, command: c.Command) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in ``ns`` the way an executor would on the release under test."""
    return netns.run_command(ns, command)


def affected(result: subprocess.CompletedProcess[str], word: str | None) -> int:
    """Return N of the "N flow entries have been WORD." summary."""
    for line in result.stderr.splitlines():
        if line.endswith(f"flow entries have been {word}."):
            return int(line.rsplit(": ", 1)[-1].split()[0])
    raise AssertionError(f"no summary in {result.stderr!r}")


# --- create / delete: every protocol and every create option ---------------------

@pytest.mark.parametrize("create", SEED, ids=lambda cmd: cmd.load_line()[3:50])
def test_create_then_delete_changes_table(ctns: str, create: c.CreateCommand) -> None:
    result = run(ctns, create)
    assert result.returncode == 0, result.stderr
    assert affected(result, "created") == 1
    lines = netns.table(ctns)
    assert len(lines) == 1
    assert f"src={create.get('src')} " in lines[0]
    fields = create.fields
    delete = c.DeleteCommand(**{k: v for k, v in fields.items()
                                if k in ("proto", "src", "dst", "zone", "orig_zone",
                                         "reply_zone")})
    result = run(ctns, delete)
    assert result.returncode == 0, result.stderr
    assert affected(result, "deleted") == 1
    assert netns.table(ctns) == []


def test_create_existing_is_refused(seeded: str) -> None:
    result = run(seeded, SEED[0])
    assert result.returncode == 1
    assert "Such conntrack exists" in result.stderr
    assert len(netns.table(seeded)) == TOTAL


def test_create_with_label_add_needs_connlabel_conf(ctns: str) -> None:
    create = c.CreateCommand(**TCP4, state="ESTABLISHED", timeout=30, label_add="web")
    result = run(ctns, create)
    assert result.returncode == 2
    assert "unknown label 'web'" in result.stderr
    assert netns.table(ctns) == []


def test_create_reply_only_derives_original(ctns: str) -> None:
    create = c.CreateCommand(proto="udp", reply_src="10.2.0.2", reply_dst="10.2.0.1",
                             reply_sport=53, reply_dport=5000, timeout=30)
    assert run(ctns, create).returncode == 0
    assert "src=10.2.0.1 dst=10.2.0.2 sport=5000 dport=53" in netns.table(ctns)[0]


# --- list: every filter option ------------------------------------------------------

LIST_CASES: list[tuple[dict[str, Any], int]] = [
    ({}, TOTAL),
    ({"family": "ipv6"}, IPV6_SEEDS),
    ({"family": "ipv4"}, TOTAL - IPV6_SEEDS),
    ({"proto": "tcp"}, 2),
    ({"proto": 17}, 4),
    ({"proto": 89}, 1),
    ({"src": "10.0.0.1"}, 1),
    ({"src": "10.0.0.0/8"}, TOTAL - IPV6_SEEDS),
    ({"src": "10.1.0.0/16"}, 2),
    ({"src": "2001:db8::/64"}, IPV6_SEEDS),
    ({"src": "10.1.0.0", "mask_src": "255.255.0.0"}, 2),
    ({"dst": "10.1.0.2"}, 2),
    ({"dst": "10.0.0.0", "mask_dst": "255.255.255.0"}, 8),
    ({"reply_src": "10.1.0.9"}, 1),
    ({"reply_dst": "10.1.0.99"}, 1),
    ({"proto": "tcp", "sport": 1000}, 1),
    ({"proto": "tcp", "dport": 80}, 1),
    ({"proto": "udp", "reply_sport": 53, "reply_dport": 4000}, 1),
    ({"proto": "tcp", "state": "ESTABLISHED"}, 1),
    ({"proto": "sctp", "state": "ESTABLISHED"}, 1),
    ({"proto": "icmp", "icmp_type": 8, "icmp_code": 0, "icmp_id": 7}, 1),
    ({"proto": "icmpv6", "icmp_type": 128, "icmp_code": 0, "icmp_id": 7}, 1),
    ({"proto": "gre", "srckey": 16, "dstkey": 32}, 1),
    ({"proto": "gre", "reply_srckey": 32, "reply_dstkey": 16}, 1),
    ({"proto": "udplite", "sport": 7}, 1),
    ({"status": "ASSURED"}, 2),
    ({"status": "!ASSURED"}, TOTAL - 2),
    ({"status": "UNREPLIED"}, TOTAL - 1),
    ({"status": "SEEN_REPLY,ASSURED"}, 1),
    ({"mark": 5}, 1),
    ({"mark": (1, 1)}, 1),
    ({"mark": 0}, TOTAL - 1),
    ({"zone": 7}, 1),
    ({"zone": 0}, TOTAL - 1),
    ({"orig_zone": 3}, 1),
    ({"reply_zone": 4}, 1),
    ({"secmark": 5}, TOTAL),  # reference 3.3: matches all when no secmark is reported
    ({"src_nat": True}, 1),
    ({"src_nat": ("10.1.0.99", 4000)}, 1),
    ({"dst_nat": True}, 1),
    ({"dst_nat": "10.1.0.9"}, 1),
    ({"any_nat": True}, 2),
    ({"output": ["extended", "id", "ktimestamp"]}, TOTAL),
    ({"output": ["labels"]}, TOTAL),
]


def _raw_refused(filters: dict[str, Any]) -> bool:
    """Tell whether the release refuses the status words (capability table)."""
    words = str(filters.get("status", ""))
    return not netns.release_caps().negated_status and ("!" in words or "UNREPLIED" in words)


def _expected(filters: dict[str, Any], count: int) -> int:
    """Return what the raw command matches on the release under test."""
    if not netns.release_caps().family_filter and set(filters) == {"family"}:
        return TOTAL  # 1.4.5's -f alone keeps every family (capability table)
    return count


@pytest.mark.parametrize(("filters", "count"), LIST_CASES, ids=str)
def test_list_filter(seeded: str, filters: dict[str, Any], count: int) -> None:
    result = run(seeded, c.ListCommand(**filters))
    if _raw_refused(filters):
        assert result.returncode == 2 and "Bad parameter" in result.stderr
        return
    count = _expected(filters, count)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == count
    assert affected(result, "shown") == count


def test_list_xml(seeded: str) -> None:
    result = run(seeded, c.ListCommand(output=["xml"], proto="tcp"))
    assert result.returncode == 0
    assert result.stdout.startswith("<?xml")
    assert result.stdout.count("<flow>") == 2


def test_list_labels_without_connlabel_conf(seeded: str) -> None:
    result = run(seeded, c.ListCommand(labels="web"))
    assert result.returncode == 2
    assert "unknown label 'web'" in result.stderr


# --- delete: the same filters really remove what they match ---------------------------

DELETE_CASES = [(f, n) for f, n in LIST_CASES
                if not {"any_nat", "secmark", "output"} & f.keys()
                and "!" not in f.get("status", "") and "UNREPLIED" not in f.get("status", "")]


@pytest.mark.parametrize(("filters", "count"), DELETE_CASES, ids=str)
def test_delete_filter(seeded: str, filters: dict[str, Any], count: int) -> None:
    result = run(seeded, c.DeleteCommand(**filters))
    count = _expected(filters, count)
    assert result.returncode == 0, result.stderr
    assert affected(result, "deleted") == count
    assert len(netns.table(seeded)) == TOTAL - count


def test_delete_nothing_is_exit_1_with_zero_summary(seeded: str) -> None:
    result = run(seeded, c.DeleteCommand(src="192.0.2.1"))
    assert result.returncode == 1
    assert affected(result, "deleted") == 0
    assert len(netns.table(seeded)) == TOTAL


def test_raw_delete_ignores_negated_status(seeded: str) -> None:
    # Why DeleteCommand refuses '!FLAG' and UNREPLIED: 1.4.7 drops the
    # condition and deletes the ASSURED udp flow as well; before 1.4.7 the
    # word is a bad parameter (capability table: negated status words).
    result = netns.run(seeded, ["-D", "-p", "udp", "-u", "!ASSURED"])
    if not netns.release_caps().negated_status:
        assert (result.returncode, "Bad parameter" in result.stderr) == (2, True)
        assert len(netns.table(seeded)) == TOTAL
        return
    assert affected(result, "deleted") == 4
    assert "10.3.0.1" in result.stdout


def test_delete_by_id_and_label(seeded: str) -> None:
    result = run(seeded, c.DeleteCommand(id=1))
    assert (result.returncode, affected(result, "deleted")) == (1, 0)
    result = run(seeded, c.DeleteCommand(labels="web"))
    assert result.returncode == 2
    assert "unknown label" in result.stderr


@pytest.mark.parametrize(("entry", "remaining"), [
    (models.Entry("ipv4", "udp", 17,
                  models.FlowTuple(netaddr.IPAddress("10.0.0.3"), netaddr.IPAddress("10.0.0.4"),
                                   53, 53),
                  models.FlowTuple(netaddr.IPAddress("10.0.0.4"), netaddr.IPAddress("10.0.0.3"),
                                   53, 53), zone=7), TOTAL - 1),
    (models.Entry("ipv4", "udp", 17,
                  models.FlowTuple(netaddr.IPAddress("10.0.0.3"), netaddr.IPAddress("10.0.0.4"),
                                   53, 53),
                  models.FlowTuple(netaddr.IPAddress("10.0.0.4"), netaddr.IPAddress("10.0.0.3"),
                                   53, 53), zone=0), TOTAL),
    (models.Entry("ipv6", "icmpv6", 58,
                  models.FlowTuple(netaddr.IPAddress("2001:db8::5"),
                                   netaddr.IPAddress("2001:db8::6"), icmp_type=128, icmp_code=0,
                                   icmp_id=7),
                  models.FlowTuple(netaddr.IPAddress("2001:db8::6"),
                                   netaddr.IPAddress("2001:db8::5"), icmp_type=129, icmp_code=0,
                                   icmp_id=7)), TOTAL - 1),
    (models.Entry("ipv4", "unknown", 89,
                  models.FlowTuple(netaddr.IPAddress("10.0.0.15"),
                                   netaddr.IPAddress("10.0.0.16")),
                  models.FlowTuple(netaddr.IPAddress("10.0.0.16"),
                                   netaddr.IPAddress("10.0.0.15")), reply_zone=4), TOTAL - 1),
], ids=["zone7", "zone0-misses-zone7", "icmpv6", "reply-zone"])
def test_delete_for_entry_is_exact(seeded: str, entry: models.Entry, remaining: int) -> None:
    run(seeded, c.DeleteCommand.for_entry(entry))
    assert len(netns.table(seeded)) == remaining


# --- get -------------------------------------------------------------------------------

GET_CASES = [
    c.GetCommand(**TCP4),
    c.GetCommand(**TCP4, family="ipv4", reply_src="10.0.0.2", reply_dst="10.0.0.1",
                 reply_sport=80, reply_dport=1000, state="ESTABLISHED", output=["extended"]),
    c.GetCommand(proto="icmp", src="10.0.0.5", dst="10.0.0.6", icmp_type=8, icmp_code=0,
                 icmp_id=7),
    c.GetCommand(proto="icmpv6", src="2001:db8::5", dst="2001:db8::6", icmp_type=128,
                 icmp_code=0, icmp_id=7),
    c.GetCommand(proto="gre", src="10.0.0.7", dst="10.0.0.8", srckey=16, dstkey=32),
    c.GetCommand(**SCTP, orig_vtag=1, reply_vtag=2),
    c.GetCommand(proto=89, src="10.0.0.15", dst="10.0.0.16"),
]


@pytest.mark.parametrize("get", GET_CASES, ids=lambda cmd: " ".join(cmd.argv()[1:8]))
def test_get_finds_one(seeded: str, get: c.GetCommand) -> None:
    result = run(seeded, get)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1
    assert f"src={get.get('src')} " in result.stdout


def test_get_missing_and_wrong_id(seeded: str) -> None:
    missing = run(seeded, c.GetCommand(**{**TCP4, "sport": 1001}))
    assert missing.returncode == 1
    assert "doesn't exist" in missing.stderr
    wrong_id = run(seeded, c.GetCommand(**TCP4, id=1))
    assert wrong_id.returncode == 1
    assert affected(wrong_id, "shown") == 0


def test_get_with_label_needs_connlabel_conf(seeded: str) -> None:
    result = run(seeded, c.GetCommand(**TCP4, labels="web"))
    assert result.returncode == 2


# --- update ----------------------------------------------------------------------------

UPDATE_CASES: list[tuple[c.UpdateCommand, c.ListCommand]] = [
    (c.UpdateCommand(match={"src": "10.0.0.1"}, mark=9), c.ListCommand(mark=9)),
    (c.UpdateCommand(match={"src": "10.0.0.1"}, mark=(0x10, 0xF0)), c.ListCommand(mark=0x15)),
    (c.UpdateCommand(match={"proto": "tcp", "src": "10.0.0.1", "dport": 80}, state="CLOSE"),
     c.ListCommand(proto="tcp", state="CLOSE")),
    (c.UpdateCommand(match={"src": "10.0.0.5"}, status="ASSURED"),
     c.ListCommand(status="ASSURED", src="10.0.0.5")),
    (c.UpdateCommand(match={"family": "ipv6", "dst": "2001:db8::2"}, timeout=5000),
     c.ListCommand(family="ipv6", dst="2001:db8::2")),
    (c.UpdateCommand(match={"src": "10.0.0.0", "mask_src": "255.255.255.252", "proto": "tcp"},
                     mark=11), c.ListCommand(mark=11)),
    (c.UpdateCommand(match={"reply_src": "10.1.0.9", "dst_nat": True}, mark=12),
     c.ListCommand(mark=12)),
    (c.UpdateCommand(match={"reply_dst": "10.1.0.99", "src_nat": True}, mark=13),
     c.ListCommand(mark=13)),
    (c.UpdateCommand(match={"proto": "gre", "dst": "10.0.0.8", "srckey": 16,
                            "reply_dstkey": 16}, mark=14), c.ListCommand(mark=14)),
    (c.UpdateCommand(match={"proto": "icmp", "src": "10.0.0.5", "icmp_type": 8,
                            "icmp_code": 0, "icmp_id": 7}, mark=15), c.ListCommand(mark=15)),
    (c.UpdateCommand(match={"proto": "udp", "src": "10.1.0.3", "sport": 5000,
                            "reply_sport": 53, "reply_dport": 4000}, mark=16),
     c.ListCommand(mark=16)),
]


@pytest.mark.parametrize(("update", "check"), UPDATE_CASES, ids=lambda x: str(x)[:70])
def test_update_changes_one(seeded: str, update: c.UpdateCommand, check: c.ListCommand) -> None:
    result = run(seeded, update)
    assert result.returncode == 0, result.stderr
    assert affected(result, "updated") == 1
    assert len(run(seeded, check).stdout.splitlines()) == 1


def test_update_timeout_really_changes(seeded: str) -> None:
    update = c.UpdateCommand(match={"src": "10.0.0.1"}, timeout=4000)
    assert run(seeded, update).returncode == 0
    line = run(seeded, c.ListCommand(src="10.0.0.1")).stdout
    assert int(line.split()[2]) > 3000


def test_update_cannot_reach_zoned_flow(seeded: str) -> None:
    # 10.0.0.3 lives in zone 7: 1.4.7 -U answers ENOENT (reference section 2).
    result = run(seeded, c.UpdateCommand(match={"src": "10.0.0.3"}, timeout=4000))
    assert result.returncode == 1
    assert affected(result, "updated") == 0


def test_raw_update_with_nat_address_is_refused_by_kernel(seeded: str) -> None:
    # Why UpdateCommand takes NAT only as a bare flag: the mark is not set.
    result = netns.run(seeded, ["-U", "-f", "ipv4", "-n", "10.1.0.99", "-m", "13"])
    assert "Operation not supported" in result.stderr
    assert run(seeded, c.ListCommand(mark=13)).stdout == ""


def test_update_by_id(seeded: str) -> None:
    listing = run(seeded, c.ListCommand(src="10.0.0.1", output=["id"])).stdout
    entry_id = int(listing.split("id=")[1].split()[0])
    result = run(seeded, c.UpdateCommand(match={"family": "ipv4", "id": entry_id}, mark=21))
    assert affected(result, "updated") == 1
    assert len(run(seeded, c.ListCommand(mark=21)).stdout.splitlines()) == 1


def test_update_nothing_matched(seeded: str) -> None:
    result = run(seeded, c.UpdateCommand(match={"src": "192.0.2.1"}, mark=1))
    assert result.returncode == 1
    assert affected(result, "updated") == 0


@pytest.mark.parametrize(("update", "code"), [
    (c.UpdateCommand(match={"src": "10.0.0.1"}, label_add="web"), 2),
    (c.UpdateCommand(match={"src": "10.0.0.1", "labels": "web"}, mark=1), 2),
    (c.UpdateCommand(match={"src": "10.0.0.1"}, label_del="web"), 2),
    (c.UpdateCommand(match={"src": "10.0.0.1"}, label_del=True), 1),
], ids=["label_add", "labels", "label_del-name", "label_del-all"])
def test_update_labels_without_connlabel_conf(seeded: str, update: c.UpdateCommand,
                                              code: int) -> None:
    result = run(seeded, update)
    assert result.returncode == code
    assert "nfct_labelmap_new" in result.stderr or "unknown label" in result.stderr


# --- flush, count, stats, batch -----------------------------------------------------------

def test_flush_empties_table(seeded: str) -> None:
    result = run(seeded, c.FlushCommand())
    assert result.returncode == 0
    assert "table has been emptied" in result.stderr
    assert netns.table(seeded) == []


def test_raw_flush_with_family_empties_both(seeded: str) -> None:
    # Why FlushCommand refuses family: -F -f ipv6 also removed every IPv4
    # flow; before 1.4.7 the option is illegal with -F.
    done = netns.run(seeded, ["-F", "-f", "ipv6"])
    if not netns.release_caps().flush_family:
        assert done.returncode == 2 and "Illegal option" in done.stderr
        assert len(netns.table(seeded)) == TOTAL
        return
    assert done.returncode == 0
    assert netns.table(seeded) == []


def test_count(seeded: str) -> None:
    result = run(seeded, c.CountCommand())
    assert result.returncode == 0
    assert int(result.stdout) == TOTAL


def test_stats(seeded: str) -> None:
    result = run(seeded, c.StatsCommand())
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines
    assert all(line.startswith("cpu=") for line in lines)


def test_batch_mixes_delete_create_flush(seeded: str) -> None:
    extra = c.CreateCommand(proto="udp", src="10.9.0.1", dst="10.9.0.2", sport=1, dport=2,
                            timeout=60)
    batch = c.BatchCommand([c.DeleteCommand(zone=7), extra, c.DeleteCommand(family="ipv6"),
                            c.DeleteCommand(src="192.0.2.1")])
    result = run(seeded, batch)
    assert result.returncode == 0, result.stderr
    table = netns.table(seeded)
    if not netns.release_caps().family_filter:
        # 1.4.5's -D -f ipv6 deletes every family (capability table).
        assert table == []
        return
    assert len(table) == TOTAL - 1 - IPV6_SEEDS + 1
    assert any("src=10.9.0.1 " in line for line in table)


def test_batch_flush_then_create(seeded: str) -> None:
    extra = c.CreateCommand(proto=89, src="10.9.0.1", dst="10.9.0.2", timeout=60)
    assert run(seeded, c.BatchCommand([c.FlushCommand(), extra])).returncode == 0
    table = netns.table(seeded)
    assert len(table) == 1
    assert "src=10.9.0.1 " in table[0]


def test_batch_stops_at_first_kernel_error(ctns: str) -> None:
    first = SEED[1]
    third = SEED[3]
    result = run(ctns, c.BatchCommand([first, first, third]))
    assert result.returncode == 1
    assert len(netns.table(ctns)) == 1


# --- events -----------------------------------------------------------------------------

def _watch(ns: str, events: c.EventsCommand, action: list[c.Command]) -> tuple[int, str, str]:
    """Run ``events`` for its duration while ``action`` runs, then stop it with SIGTERM."""
    proc = subprocess.Popen([netns.IP, "netns", "exec", ns, netns.CONNTRACK, *events.argv()],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)  # let it bind to the multicast groups
        for command in action:
            run(ns, command)
        time.sleep(max(0.0, events.duration - 0.3))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


# (filters, whether the NEW event of 10.5.0.1 shows, whether that of 10.6.0.1 shows)
EVENT_CASES: list[tuple[dict[str, Any], bool, bool]] = [
    ({}, True, True),
    ({"event_mask": ["NEW"], "proto": "udp", "src": "10.5.0.1", "dport": 53}, True, False),
    ({"family": "ipv4", "dst": "10.5.0.0/16", "reply_src": "10.5.0.2", "reply_dst": "10.5.0.1",
      "proto": 17, "sport": 1, "reply_sport": 53, "reply_dport": 1}, True, False),
    ({"src": "10.5.0.0", "mask_src": "255.255.0.0", "dst": "10.5.0.2",
      "mask_dst": "255.255.255.255", "zone": 6, "mark": (3, 3)}, True, False),
    ({"output": ["extended", "id", "timestamp"], "secmark": 0, "event_mask": "NEW,UPDATES"},
     True, True),
    ({"output": ["xml"], "orig_zone": 0, "reply_zone": 0, "event_mask": ["ALL"]}, True, True),
    ({"family": "ipv6"}, False, False),
    ({"mark": 3}, True, False),
    ({"zone": 0}, False, True),
    ({"any_nat": True}, False, False),
    ({"src_nat": True}, False, False),
    ({"dst_nat": "10.5.0.9"}, False, False),
    ({"event_mask": ["DESTROY"]}, False, False),
    ({"proto": "tcp", "state": "ESTABLISHED"}, False, False),
    ({"proto": "icmp", "icmp_type": 8, "icmp_code": 0, "icmp_id": 1}, False, False),
    ({"proto": "gre", "srckey": 1, "dstkey": 2, "reply_srckey": 2, "reply_dstkey": 1},
     False, False),
]


@pytest.mark.parametrize(("filters", "first", "second"), EVENT_CASES, ids=str)
def test_events_report_new_flows(ctns: str, filters: dict[str, Any], first: bool,
                                 second: bool) -> None:
    events = c.EventsCommand(duration=0.6, **filters)
    create = c.CreateCommand(proto="udp", src="10.5.0.1", dst="10.5.0.2", sport=1, dport=53,
                             timeout=60, zone=6, mark=3)
    other = c.CreateCommand(proto="udp", src="10.6.0.1", dst="10.6.0.2", sport=1, dport=53,
                            timeout=60)
    code, out, err = _watch(ctns, events, [create, other])
    if "family" in filters and not netns.release_caps().events_family:
        # Before 1.4.7 -E refuses -f (ConntrackHelper.events filters instead).
        assert (code, "Illegal option `--family'" in err) == (2, True), err
        return
    assert code == 0, err
    assert "flow events have been shown." in err
    assert ("10.5.0.1" in out) is first
    assert ("10.6.0.1" in out) is second
    if first or second:
        assert ("[NEW]" in out) or ('<flow type="new">' in out)


def test_events_with_labels_need_connlabel_conf(ctns: str) -> None:
    code, _out, err = _watch(ctns, c.EventsCommand(duration=0.3, labels="web"), [])
    assert code == 2
    assert "unknown label" in err


def _flow(src: str, dst: str, **l4: int) -> models.FlowTuple:
    return models.FlowTuple(netaddr.IPAddress(src), netaddr.IPAddress(dst), **l4)


FROM_ENTRY_CASES = [
    models.Entry("ipv4", "tcp", 6, _flow("10.7.0.1", "10.7.0.2", sport=11, dport=22),
                 _flow("10.7.0.9", "10.7.0.1", sport=22, dport=11), state="ESTABLISHED",
                 timeout=500, mark=5, zone=3, status=frozenset({"ASSURED"})),
    models.Entry("ipv4", "icmp", 1, _flow("10.7.0.1", "10.7.0.2", icmp_type=8, icmp_code=0,
                                          icmp_id=4),
                 _flow("10.7.0.2", "10.7.0.1", icmp_type=0, icmp_code=0, icmp_id=4),
                 timeout=30, status=frozenset({"UNREPLIED"})),
    models.Entry("ipv6", "gre", 47, _flow("2001:db8::1", "2001:db8::2", srckey=1, dstkey=2),
                 _flow("2001:db8::2", "2001:db8::1", srckey=2, dstkey=1), timeout=30,
                 orig_zone=9),
]


@pytest.mark.parametrize("entry", FROM_ENTRY_CASES, ids=lambda e: e.proto)
def test_create_from_entry_then_delete_for_entry(ctns: str, entry: models.Entry) -> None:
    create = c.CreateCommand.from_entry(entry)
    result = run(ctns, create)
    if netns.release_caps().icmp_reply_create or entry.proto not in ("icmp", "icmpv6"):
        assert result.returncode == 0, result.stderr
    else:
        # Before 1.4.7 -I refuses an ICMP flow naming its reply addresses
        # (capability table); the library creates it by netlink instead.
        assert "invalid parameters" in result.stderr
        assert executor.ProcessExecutor().create_flows([create], namespace=ctns) == [0]
    table = netns.table(ctns)
    assert len(table) == 1
    assert f"src={entry.original.src} dst={entry.original.dst}" in table[0]
    assert f"src={entry.reply.src} dst={entry.reply.dst}" in table[0]
    result = run(ctns, c.DeleteCommand.for_entry(entry))
    assert affected(result, "deleted") == 1
    assert netns.table(ctns) == []
