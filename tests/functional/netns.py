"""Throwaway network namespaces and the real conntrack for functional tests.

Every namespace comes from the library's public helper
(:mod:`conntrack_lib.testing.namespaces`): named ``ctlt-<pid>-<n>`` and
removed after use, also when the test fails.  Nothing here touches the
host's own conntrack table.
"""

from __future__ import annotations

import errno
import functools
import subprocess
from collections.abc import Sequence

from conntrack_lib import (
    capabilities,
    commands,
    constants,
    executor,
    netlink,
    netlink_create,
    netlink_socket,
    planner,
)
from conntrack_lib import exceptions as exc
from conntrack_lib.testing import namespaces

CONNTRACK = constants.CONNTRACK_BINARY
IP = namespaces.ip_binary() or "ip"

#: ``unique_name(prefix="ctlt")``: a name no other test process will use.
unique_name = namespaces.unique_name
#: ``add(name)``: create the namespace ``name``.
add = namespaces.add_namespace
#: ``delete(name)``: remove the namespace ``name`` if it still exists.
delete = namespaces.delete_namespace
#: ``namespace(prefix="ctlt")``: yield a fresh namespace's name, remove it afterwards.
namespace = namespaces.throwaway_namespace


#: The flow the probe looks up (a GET, never a delete): udp between two
#: documentation addresses with port 0 in zone 65535.
PROBE_FLOW = {
    "family": constants.IPV4, "protonum": 17, "src": "192.0.2.1", "dst": "192.0.2.2",
    "sport": 0, "dport": 0, "icmp_type": None, "icmp_code": None, "icmp_id": None,
    "zone": constants.MAX_CONNTRACK_ZONE_ID,
}


def netlink_answers(name: str | None) -> bool:
    """Tell whether ctnetlink answers an exact lookup in namespace ``name``."""
    body = netlink.encode_body(netlink.validate_flow(PROBE_FLOW))
    try:
        with netlink_socket.open_socket(name) as sock:
            sock.send(netlink.encode_message(body, 1, netlink.MSG_CT_GET))
            acks = netlink_socket.read_acks(sock, 1)
    except (OSError, exc.CommandError):
        return False
    # ENOENT: lookups work and the flow is absent; EPERM and the like: no.
    return bool(acks) and acks[0].errno in (0, errno.ENOENT)


def run(ns: str, args: Sequence[str], *, stdin: str | None = None,
        check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the real conntrack binary inside ``ns`` with ``args``."""
    return subprocess.run(
        [IP, "netns", "exec", ns, CONNTRACK, *args],
        input=stdin, capture_output=True, text=True, check=check, timeout=600,
    )


def sysctl(ns: str, *assignments: str) -> None:
    """Set namespace-local sysctls, e.g. ``net.netfilter.nf_conntrack_acct=1``."""
    subprocess.run([IP, "netns", "exec", ns, "sysctl", "-qw", *assignments],
                   check=True, capture_output=True)


def table(ns: str) -> list[str]:
    """Return the lines of a plain ``conntrack -L`` in ``ns``: every family's flows.

    1.4.6's ``-L`` lists IPv4 only: there each family is listed in turn.
    """
    if release_caps().default_family is None:
        out = run(ns, ["-L"], check=True).stdout
    else:
        out = "".join(run(ns, ["-L", "-f", family], check=True).stdout
                      for family in ("ipv4", "ipv6"))
    return [line for line in out.splitlines() if line.strip()]


@functools.lru_cache(maxsize=1)
def release() -> capabilities.Release:
    """Return the release of the conntrack binary under test."""
    out = subprocess.run([CONNTRACK, "--version"], capture_output=True, text=True, check=True)
    return capabilities.parse_version(out.stdout + out.stderr)


def release_caps() -> capabilities.Capabilities:
    """Return the capabilities of the conntrack release under test."""
    return capabilities.for_release(release())


def has_load_file() -> bool:
    """Tell whether the conntrack under test has ``-R`` (1.4.7 and newer)."""
    return release_caps().load_file


def seed(ns: str, creates: Sequence[commands.CreateCommand], *, chunk: int = 50_000) -> None:
    """Create ``creates`` in ``ns`` as fast as the release allows, whatever it is.

    ``-R`` where it exists; else the library's netlink create, and one
    conntrack process per flow for what it does not encode (NAT, labels).
    """
    if has_load_file():
        for start in range(0, len(creates), chunk):
            batch = commands.BatchCommand(creates[start:start + chunk])
            done = run(ns, batch.argv(), stdin=batch.stdin())
            assert done.returncode == 0, done.stderr
        return
    by_netlink = [command for command in creates if netlink_create.encodable(command)]
    by_process = [command for command in creates if not netlink_create.encodable(command)]
    outcomes = executor.ProcessExecutor().create_flows(by_netlink, namespace=ns)
    assert not any(outcomes), f"netlink create failed: {sorted(set(outcomes))}"
    for command in by_process:
        done = run(ns, command.argv())
        assert done.returncode == 0, done.stderr


#: A load of at least this many lines, all creates netlink encodes, is a
#: seed: before 1.4.7 it goes by netlink create, not one process per line.
SEED_LINES = 200
#: conntrack's create options, back to the keywords of CreateCommand.
_KEYWORD_OF_OPTION = {
    **{option: name for name, option in commands._OPTIONS.items() if option.startswith("-")},
    **{f"--{proto}-{word}": f"icmp_{word}" for proto in ("icmp", "icmpv6")
       for word in ("type", "code", "id")},
}
_TEXT_KEYWORDS = frozenset({"family", "proto", "src", "dst", "reply_src", "reply_dst",
                            "state", "status"})


def _create_of_line(line: str) -> commands.CreateCommand | None:
    """Return the create command a ``-I`` load-file line stands for, if netlink encodes it."""
    words = line.split()
    if len(words) < 3 or words[0] != "-I" or len(words) % 2 == 0:
        return None
    fields: dict[str, object] = {}
    for option, value in zip(words[1::2], words[2::2], strict=True):
        name = _KEYWORD_OF_OPTION.get(option)
        if name is None:
            return None
        fields[name] = value if name in _TEXT_KEYWORDS or not value.isdigit() else int(value)
    try:
        command = commands.CreateCommand(**fields)
    except (exc.InvalidArgumentError, TypeError):  # anything unusual goes line by line
        return None
    return command if netlink_create.encodable(command) else None


def _seed_lines(ns: str, text: str) -> bool:
    """Create the flows of a large all-create load by netlink; tell whether it did."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < SEED_LINES:
        return False
    creates = [_create_of_line(line) for line in lines]
    if any(c is None for c in creates):
        return False
    seed(ns, [c for c in creates if c is not None])
    return True


def load(ns: str, text: str, *, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run load-file ``text`` in ``ns``: ``-R -`` where it exists, else line by line.

    Like ``-R``, the line-by-line run stops at the first line that fails.
    Before 1.4.7 a large load of creates only (a test's table) goes by
    netlink create instead: one process per line would take minutes.
    """
    if has_load_file():
        return run(ns, ["-R", "-"], stdin=text, check=check)
    if _seed_lines(ns, text):
        return subprocess.CompletedProcess(["load"], 0, "", "")
    outs: list[str] = []
    errs: list[str] = []
    code = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        done = run(ns, line.split(), check=check)
        outs.append(done.stdout)
        errs.append(done.stderr)
        # "0 flow entries have been deleted." is no failure of the load.
        code = 0 if ": 0 flow entries have been" in done.stderr else done.returncode
        if code != 0:
            break
    return subprocess.CompletedProcess(["load"], code, "".join(outs), "".join(errs))


def run_command(ns: str, command: commands.Command) -> subprocess.CompletedProcess[str]:
    """Run a built command in ``ns`` as the library runs it on the release under test.

    A batch is a load (:func:`load`; without ``-R`` its commands in turn,
    each as this function runs it); a prefix goes as a mask where ``-s
    NET/LEN`` matches nothing (1.4.5); a ``-L``/``-D`` that the release would
    keep to IPv4 (1.4.6 without a family, 1.4.5 with a mark filter) runs
    once per family (:func:`conntrack_lib.planner.listings`), its summaries
    added up; anything else is one process.
    """
    if isinstance(command, commands.BatchCommand):
        if has_load_file():
            return load(ns, command.stdin())
        return _in_turn(ns, command.commands)
    if isinstance(command, (commands.ListCommand, commands.DeleteCommand)):
        caps = release_caps()
        parts = planner.listings(planner.prefixes_for_release(command.fields, caps), caps)
        if parts != [command.fields]:
            return _joined([run(ns, type(command)(**f).argv()) for f in parts])
    return run(ns, command.argv())


_SUMMARY = " flow entries have been "


def _joined(results: list[subprocess.CompletedProcess[str]]
            ) -> subprocess.CompletedProcess[str]:
    """Return one result for commands run in turn, their summaries added up."""
    refused = [r for r in results if _SUMMARY not in r.stderr]
    if refused:
        return refused[0]
    lines = [next(x for x in r.stderr.splitlines() if _SUMMARY in x) for r in results]
    total = sum(int(x.rsplit(": ", 1)[-1].split()[0]) for x in lines)
    head, _, tail = lines[0].partition(": ")
    stderr = f"{head}: {total}{_SUMMARY}{tail.split()[-1]}\n"
    code = 0 if any(r.returncode == 0 for r in results) else results[-1].returncode
    return subprocess.CompletedProcess(results[0].args, code,
                                       "".join(r.stdout for r in results), stderr)


def _in_turn(ns: str, batch: Sequence[commands.Command]) -> subprocess.CompletedProcess[str]:
    """Run a batch's commands one after the other, stopping as ``-R`` stops."""
    outs: list[str] = []
    errs: list[str] = []
    code = 0
    for command in batch:
        done = run_command(ns, command)
        outs.append(done.stdout)
        errs.append(done.stderr)
        # "0 flow entries have been deleted." is no failure of a load.
        code = 0 if f": 0{_SUMMARY}" in done.stderr else done.returncode
        if code != 0:
            break
    return subprocess.CompletedProcess(["load"], code, "".join(outs), "".join(errs))

