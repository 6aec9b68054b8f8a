"""The capability table's row of the release under test matches the binary.

Run on every release of the version matrix: each routing flag of
:func:`conntrack_lib.capabilities.for_release` is measured here against the
real conntrack and kernel, so the table cannot drift from what a release
does.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time

from conntrack_lib import commands
from conntrack_lib.executor import PrivsepExecutor, ProcessExecutor
from conntrack_lib.helper import ConntrackHelper
from tests.functional import netns


def _accepted(ns: str, args: list[str], stdin: str | None = None) -> bool:
    done = netns.run(ns, args, stdin=stdin)
    # 2 is conntrack's "bad parameter/option"; 0 and 1 are runs that started.
    return done.returncode != 2


def test_load_file_row(ns: str) -> None:
    assert _accepted(ns, ["-R", "-"], stdin="") is netns.release_caps().load_file


def test_negated_status_row(ns: str) -> None:
    assert _accepted(ns, ["-L", "-u", "!SEEN_REPLY"]) is netns.release_caps().negated_status
    assert _accepted(ns, ["-D", "-u", "!SEEN_REPLY"]) is netns.release_caps().negated_status


def test_flush_family_row(ns: str) -> None:
    assert _accepted(ns, ["-F", "-f", "ipv6"]) is netns.release_caps().flush_family


def test_events_family_row(ns: str) -> None:
    proc = subprocess.Popen([netns.IP, "netns", "exec", ns, netns.CONNTRACK, "-E", "-f", "ipv4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        code = proc.wait(timeout=0.5)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=5)
        code = 0  # still watching: the option was taken
    else:
        proc.communicate()
    assert (code != 2) is netns.release_caps().events_family


def test_bulk_update_row(ns: str) -> None:
    flows = [commands.CreateCommand(proto="udp", src=f"10.7.{i // 250}.{i % 250 + 1}",
                                    dst="10.9.0.1", sport=1000, dport=53, timeout=600)
             for i in range(300)]
    netns.seed(ns, flows)
    done = netns.run(ns, ["-U", "-p", "udp", "-d", "10.9.0.1", "-m", "5"])
    marked = sum("mark=5 " in line for line in netns.table(ns))
    if netns.release_caps().bulk_update_limit is None:
        assert (done.returncode, marked) == (0, 300), done.stderr
    else:
        assert done.returncode == 1 and "No buffer space available" in done.stderr
        assert marked == netns.release_caps().bulk_update_limit


def test_both_executors_learn_the_release_under_test() -> None:
    assert ProcessExecutor().release() == netns.release()
    assert PrivsepExecutor().release() == netns.release()
    assert ConntrackHelper(executor=ProcessExecutor()).conntrack_version == netns.release()


def test_batched_create_and_status_delete_work_without_load_file(ns: str) -> None:
    # The same calls on every release: the library picks the road.
    helper = ConntrackHelper(namespace=ns, executor=ProcessExecutor())
    flows = [{"proto": "udp", "src": f"10.8.0.{i}", "dst": "10.9.0.2", "sport": 1,
              "dport": 53, "timeout": 600} for i in range(1, 41)]
    assert helper.create_entries(flows) == 40
    assert helper.count() == 40
    assert len(helper.list_entries(status="!SEEN_REPLY")) == 40
    assert helper.delete_many([{"src": "10.8.0.39"}, {"src": "10.8.0.40"}]).deleted == 2
    assert helper.count() == 38


def test_prefix_filters_mean_the_same_on_every_release(ns: str) -> None:
    helper = ConntrackHelper(namespace=ns, executor=ProcessExecutor())
    flows = [{"proto": "udp", "src": f"10.8.0.{i}", "dst": "10.9.0.2", "sport": 1,
              "dport": 53, "timeout": 600} for i in range(1, 41)]
    assert helper.create_entries(flows) == 40
    assert len(helper.list_entries(status="!SEEN_REPLY", src="10.8.0.0/30")) == 3
    assert helper.delete_many([{"src": "10.8.0.0/30"}, {"src": "10.8.0.40"}]).deleted == 4
    assert helper.count() == 36
    assert helper.delete_entries(src="10.8.0.8/29") == 8
    assert helper.create_entries([{"proto": "udp", "src": f"fd00::{i}", "dst": "fd00::ff",
                                   "sport": 1, "dport": 53, "timeout": 600}
                                  for i in range(1, 9)]) == 8
    assert len(helper.list_entries(src="fd00::/126")) == 3
    assert helper.delete_entries(src="fd00::4/126") == 4
    assert helper.count() == 32


def _seed_families(ns: str) -> None:
    """Seed two IPv4 and two IPv6 flows in zone 7 and one of each outside it."""
    flows = [("10.8.0.1", "10.9.0.2", 7), ("10.8.0.2", "10.9.0.2", 7),
             ("10.8.0.1", "10.9.0.2", None), ("fd00::1", "fd00::ff", 7),
             ("fd00::2", "fd00::ff", 7), ("fd00::1", "fd00::ff", None)]
    netns.seed(ns, [commands.CreateCommand(proto="udp", src=src, dst=dst, sport=1, dport=53,
                                           timeout=600, zone=zone)
                    for src, dst, zone in flows])


def _families_listed(ns: str, args: list[str]) -> set[str]:
    done = netns.run(ns, args)
    assert done.returncode == 0, done.stderr
    return {"ipv6" if "src=fd00" in line else "ipv4" for line in done.stdout.splitlines()}


def test_family_rows(ns: str) -> None:
    _seed_families(ns)
    caps = netns.release_caps()
    # The binary: what -f and its absence list on this release.
    every = {"ipv4", "ipv6"}
    assert _families_listed(ns, ["-L", "-f", "ipv6"]) == ({"ipv6"} if caps.family_filter
                                                            else every)
    assert _families_listed(ns, ["-L"]) == ({caps.default_family} if caps.default_family
                                             else every)
    # An address pins the family on every release.
    assert _families_listed(ns, ["-L", "-f", "ipv6", "-s", "fd00::1"]) == {"ipv6"}
    # A mark filter: -f is honoured everywhere; without it, IPv4 only before 1.4.7.
    assert _families_listed(ns, ["-L", "-f", "ipv6", "-m", "0"]) == {"ipv6"}
    assert _families_listed(ns, ["-L", "-m", "0"]) == ({"ipv4"} if caps.mark_ipv4_only
                                                        else every)


def test_family_requests_mean_the_same_on_every_release(ns: str) -> None:
    _seed_families(ns)
    helper = ConntrackHelper(namespace=ns, executor=ProcessExecutor())
    assert len(helper.list_entries()) == 6
    assert len(helper.list_entries(mark=0)) == 6
    assert {e.family for e in helper.list_entries(mark=0, family="ipv6")} == {"ipv6"}
    assert {e.family for e in helper.list_entries(family="ipv6")} == {"ipv6"}
    assert len(helper.list_entries(zone=7)) == 4
    assert helper.delete_entries(family="ipv4", zone=7) == 2
    assert {e.family for e in helper.list_entries(zone=7)} == {"ipv6"}
    assert helper.flush_zone(7) == 2
    assert sorted(str(e.original.src) for e in helper.list_entries()) == ["10.8.0.1",
                                                                           "fd00::1"]
    assert helper.delete_entries(proto="udp") == 2
    assert helper.count() == 0


def test_icmp_reply_create_row(ns: str) -> None:
    done = netns.run(ns, ["-I", "-p", "icmp", "-s", "10.7.0.1", "-d", "10.7.0.2", "-r",
                          "10.7.0.2", "-q", "10.7.0.1", "--icmp-type", "8", "--icmp-code", "0",
                          "--icmp-id", "4", "-t", "30"])
    assert (done.returncode == 0) is netns.release_caps().icmp_reply_create, done.stderr
    if done.returncode:
        assert "invalid parameters" in done.stderr


def test_create_entry_from_an_icmp_entry_works_on_every_release(ns: str) -> None:
    helper = ConntrackHelper(namespace=ns, executor=ProcessExecutor())
    assert helper.create_entry(proto="icmp", src="10.7.0.1", dst="10.7.0.2",
                               reply_src="10.7.0.2", reply_dst="10.7.0.1", icmp_type=8,
                               icmp_code=0, icmp_id=4, timeout=30) == 1
    (entry,) = helper.list_entries(proto="icmp")
    assert (entry.reply.icmp_type, entry.reply.icmp_id) == (0, 4)


def test_events_of_a_prefix_are_seen_on_every_release(ns: str) -> None:
    helper = ConntrackHelper(namespace=ns, executor=ProcessExecutor())
    events = helper.events(duration=3, count=1, src="10.8.0.0/30", family="ipv4",
                           event_mask=["NEW"])
    outside = {"proto": "udp", "dst": "10.9.0.2", "sport": 1, "dport": 53, "timeout": 60}

    def create() -> None:
        time.sleep(0.5)  # the capture is running by then
        helper.create_entry(src="10.8.0.9", **outside)
        helper.create_entry(src="fd00::2", **{**outside, "dst": "fd00::9"})
        helper.create_entry(src="10.8.0.2", **outside)

    creator = threading.Thread(target=create)
    creator.start()
    seen = list(events)
    creator.join()
    assert [str(e.entry.original.src) for e in seen] == ["10.8.0.2"]


def test_gre_key_filter_row_and_the_helper_routes_around_it(ns: str) -> None:
    netns.seed(ns, [commands.CreateCommand(proto="gre", src="10.60.0.1", dst="10.60.0.2",
                                           srckey=key, dstkey=key + 1, timeout=60)
                    for key in (10, 20)])
    # Every release ignores the key: both GRE flows for a key neither has.
    assert len(netns.run(ns, ["-L", "-p", "gre", "--srckey", "18"]).stdout.splitlines()) == 2
    helper = ConntrackHelper(namespace=ns, executor=ProcessExecutor())
    assert helper.list_entries(proto="gre", srckey=18) == []
    assert [e.original.srckey for e in helper.list_entries(proto="gre", srckey=20)] == [20]
    assert helper.delete_entries(proto="gre", reply_srckey=11) == 1
    assert [e.original.srckey for e in helper.list_entries(proto="gre")] == [20]


#: Releases that read only the first name of a comma list of labels
#: (docs/capabilities.rst, "comma list of label names").
_FIRST_LABEL_ONLY = frozenset({(1, 4, 9)})


def _udp(n: int, **extra: object) -> dict[str, object]:
    return {"proto": "udp", "src": f"10.66.0.{n}", "dst": "10.66.1.1", "sport": 1000 + n,
            "dport": 53, "timeout": 600, **extra}


def _labels_of(ns: str) -> dict[str, frozenset[str]]:
    helper = ConntrackHelper(namespace=ns, executor=ProcessExecutor())
    return {str(e.original.src): e.labels for e in helper.list_entries(output=("labels",))}


def test_label_list_row_and_the_library_sends_one_option_per_name(labelled: str) -> None:
    done = netns.run(labelled, [*commands.CreateCommand(**_udp(1)).argv(),
                                "--label-add", "red,green"])
    assert done.returncode == 0, done.stderr
    kept = {"red"} if netns.release() in _FIRST_LABEL_ONLY else {"red", "green"}
    assert _labels_of(labelled) == {"10.66.0.1": kept}
    helper = ConntrackHelper(namespace=labelled, executor=ProcessExecutor())
    helper.create_entry(**_udp(2, label_add=("red", "green")))
    helper.create_entry(**_udp(3, label_add="red"))
    assert _labels_of(labelled)["10.66.0.2"] == {"red", "green"}
    both = {str(e.original.src) for e in helper.list_entries(labels=("red", "green"))}
    assert both == {"10.66.0.2"} | ({"10.66.0.1"} if kept == {"red", "green"} else set())
    assert helper.delete_entries(labels="green,red", src="10.66.0.2") == 1


def test_load_file_after_labels_row_and_batches_end_at_labels(labelled: str) -> None:
    lines = "".join(commands.CreateCommand(**_udp(n, label_add="blue")).load_line() + "\n"
                    for n in (1, 2))
    done = netns.run(labelled, ["-R", "-"], stdin=lines)
    if netns.release_caps().load_file:
        # Killed by SIGSEGV once a line follows a labelled one; the lines
        # before have run (whether the next one did varies).
        assert done.returncode in (-signal.SIGSEGV, 128 + signal.SIGSEGV), done
        assert "10.66.0.1" in _labels_of(labelled)
    else:
        assert done.returncode == 2, done  # no -R before 1.4.7
    helper = ConntrackHelper(namespace=labelled, executor=ProcessExecutor())
    assert helper.create_entries([_udp(n, label_add="green") for n in range(3, 9)]) == 6
    assert helper.count(labels="green") == 6
    assert helper.delete_many([{"labels": "green", "src": f"10.66.0.{n}"}
                               for n in range(3, 9)]).deleted == 6
