"""Demo: zones, flows and targeted deletes in a throwaway network namespace.

Run as root: ``python -m conntrack_lib.demo``.  It creates a namespace,
allocates conntrack zones for simulated ports, creates flows across them,
shows the table per zone, deletes what a removed security-group rule and a
released port leave behind, and removes the namespace, also on Ctrl-C or
SIGTERM.  Every step prints one line with its elapsed time.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from conntrack_lib import constants, exceptions
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.models import Entry
from conntrack_lib.rules import SecurityGroupRule
from conntrack_lib.testing import namespaces
from conntrack_lib.values import FilterValue

if TYPE_CHECKING:
    from conntrack_lib.executing import Executor

#: Neutron's iptables firewall leaves zones 1..4096 to OVS's VLAN tags.
DEMO_ZONE_RANGE = (4097, constants.MAX_CONNTRACK_ZONE_ID)
REMOTES_PER_PORT = 20


# A BaseException, like KeyboardInterrupt: no "except Exception" on the way
# (oslo.privsep logs those) may catch it.
class _Stopped(BaseException):
    """A termination signal arrived while the demo ran."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Run the demo; return the process exit code.

    :param argv: the command line arguments, ``sys.argv[1:]`` by default.
    :param out: where the demo's report goes.
    :returns: 0 on success, 1 when conntrack or ``ip netns add`` failed (the
        namespace exists already, say), 2 when a requirement is
        missing, 128 + the signal number when SIGINT or SIGTERM stopped it.
    """
    args = _parse(argv)
    # oslo.privsep imports eventlet, which warns on import; not our user's concern.
    warnings.filterwarnings("ignore", message="\nEventlet is deprecated")
    # A signal abandons the privsep call in flight; its late reply makes
    # oslo.privsep's reader warn about an unknown message id, which is
    # expected then and no business of the demo's one-line report.
    logging.getLogger("oslo_privsep.comm").setLevel(logging.ERROR)
    problem = _missing_requirement()
    if problem:
        print(f"conntrack_lib demo: {problem}", file=sys.stderr)
        return 2
    name = args.netns or f"ctlib-demo-{os.getpid()}"
    with _signals_raise() as restore:
        try:
            # Removes the namespace on every way out, the signals' included.
            with namespaces.throwaway_namespace(name=name) as ns:
                _run(ns, args, out)
        except _Stopped as stop:
            restore()
            print(f"conntrack_lib demo: stopped by {signal.Signals(stop.signum).name}; "
                  f"namespace {name} removed", file=sys.stderr)
            return 128 + stop.signum
        except (exceptions.ConntrackError, namespaces.NamespaceError) as err:
            print(f"conntrack_lib demo failed: {err}", file=sys.stderr)
            return 1
    return 0


@contextlib.contextmanager
def _signals_raise() -> Iterator[Callable[[], None]]:
    """Turn the first SIGINT or SIGTERM into :class:`_Stopped`, then restore.

    Later signals are ignored until the namespace is gone, so a second
    Ctrl-C cannot interrupt the cleanup.
    """
    wanted = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.getsignal(signum) for signum in wanted}

    def handler(signum: int, _frame: FrameType | None) -> None:
        for other in wanted:
            signal.signal(other, signal.SIG_IGN)
        raise _Stopped(signum)

    def restore() -> None:
        for signum, old in previous.items():
            signal.signal(signum, old)

    for signum in wanted:
        signal.signal(signum, handler)
    try:
        yield restore
    finally:
        restore()


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m conntrack_lib.demo", description=__doc__)
    parser.add_argument("--ports", type=_port_count, default=36,
                        help="simulated ports, 2 to 250 (default 36)")
    parser.add_argument("--executor", choices=("privsep", "process"), default="privsep",
                        help="run conntrack through the privsep daemon (default) or directly")
    parser.add_argument("--netns", metavar="NAME", type=_netns_name, default=None,
                        help="name of the throwaway network namespace to create (it must "
                        "not exist; default ctlib-demo-PID); removed at the end")
    return parser.parse_args(argv)


def _port_count(text: str) -> int:
    count = int(text)
    if not 2 <= count <= 250:
        raise argparse.ArgumentTypeError("must be between 2 and 250")
    return count


def _netns_name(text: str) -> str:
    from conntrack_lib import netns  # noqa: PLC0415

    try:
        netns.validate_name(text)
    except exceptions.InvalidArgumentError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _missing_requirement() -> str | None:
    if os.geteuid() != 0:
        return ("needs root: it creates a network namespace and drives conntrack with "
                "CAP_NET_ADMIN. Run it as root, e.g. `sudo ./tools/demo.sh`.")
    if not os.access(constants.CONNTRACK_BINARY, os.X_OK):
        return (f"needs the conntrack binary at {constants.CONNTRACK_BINARY} "
                "(apt-get install conntrack)")
    if namespaces.ip_binary() is None:
        return "needs iproute2's `ip` (apt-get install iproute2)"
    return None


def _executor(kind: str) -> Executor:
    from conntrack_lib import executor  # noqa: PLC0415 - keeps --help fast

    return executor.ProcessExecutor() if kind == "process" else executor.PrivsepExecutor()


def _port_ip(index: int) -> str:
    return f"10.20.{index // 250}.{index % 250 + 1}"


def _remote_ip(index: int) -> str:
    return f"198.51.{100 + index // 250}.{index % 250 + 1}"


def _flows_for(port: int, zone: int) -> list[dict[str, FilterValue]]:
    local = _port_ip(port)
    flows: list[dict[str, FilterValue]] = []
    for r in range(REMOTES_PER_PORT):
        remote = _remote_ip(r)
        for dport in (22, 80, 443):
            flows.append(dict(proto="tcp", src=remote, dst=local, sport=30000 + r, dport=dport,
                              state="ESTABLISHED", timeout=600, zone=zone))
        flows.append(dict(proto="udp", src=local, dst=remote, sport=40000 + r, dport=53,
                          timeout=120, zone=zone))
        flows.append(dict(proto="icmp", src=remote, dst=local, icmp_type=8, icmp_code=0,
                          icmp_id=r, timeout=30, zone=zone))
    flows.append(dict(proto="tcp", src=f"2001:db8::{port + 1:x}", dst="2001:db8::ffff",
                      sport=50000, dport=443, state="ESTABLISHED", timeout=600, zone=zone))
    return flows


def _run(ns: str, args: argparse.Namespace, out: TextIO) -> None:
    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    t0 = time.monotonic()
    helper = ConntrackHelper(namespace=ns, executor=_executor(args.executor),
                             zone_range=DEMO_ZONE_RANGE)
    helper.count()  # starts the privsep daemon now, so its cost shows here
    say(f"namespace {ns} (throwaway), executor {args.executor} ready in {_ms(t0)}")
    ports = [f"port-{i:02d}" for i in range(args.ports)]

    t0 = time.monotonic()
    zones = {key: helper.allocate_zone(key) for key in ports}
    say(f"allocated {len(zones)} zones for {len(ports)} ports "
        f"({min(zones.values())}..{max(zones.values())}) in {_ms(t0)}")

    flows = [f for i, key in enumerate(ports) for f in _flows_for(i, zones[key])]
    t0 = time.monotonic()
    created = helper.create_entries(flows)
    say(f"created {created} flows in {_ms(t0)} "
        f"({-(-created // helper.batch_size)} conntrack -R processes)")

    t0 = time.monotonic()
    entries = helper.list_entries()
    say(f"listed {len(entries)} flows in {_ms(t0)} (one dump, parsed into typed entries)")
    say()
    _print_zone_table(entries, zones, say)

    rule_index, gone_index = len(ports) // 3, len(ports) - 1
    rule_port = ports[rule_index]
    say()
    say(f"security-group rule removed: ingress tcp/22 to {rule_port} "
        f"({_port_ip(rule_index)}, zone {zones[rule_port]})")
    t0 = time.monotonic()
    rule = SecurityGroupRule.from_neutron({"direction": "ingress", "ethertype": "IPv4",
                                           "protocol": "tcp", "port_range_min": 22,
                                           "port_range_max": 22})
    deleted = helper.delete_rule(rule, [(zones[rule_port], [_port_ip(rule_index)])])
    say(f"  deleted {deleted} flows in {_ms(t0)}; "
        f"{helper.count(zone=zones[rule_port])} flows left in that zone")

    gone = ports[gone_index]
    say(f"port {gone} removed: release zone {zones[gone]} with flush")
    t0 = time.monotonic()
    before = helper.count(zone=zones[gone])
    helper.release_zone(gone, flush=True)
    say(f"  deleted {before - helper.count(zone=zones[gone])} flows in {_ms(t0)}; "
        f"zone {zones[gone]} is free again (reused last)")

    say()
    t0 = time.monotonic()
    say(f"table now holds {helper.count()} flows in {len(helper.zones())} allocated zones "
        f"(counted in {_ms(t0)})")


def _print_zone_table(entries: Sequence[Entry], zones: dict[str, int],
                      say: Callable[[str], None]) -> None:
    owner = {zone: key for key, zone in zones.items()}
    per_zone: dict[int, Counter[str]] = {}
    for entry in entries:
        per_zone.setdefault(entry.zone, Counter())[f"{entry.family}/{entry.proto}"] += 1
    kinds = sorted({k for c in per_zone.values() for k in c})
    say(f"{'zone':>6} {'owner':<9} {'flows':>6} " + " ".join(f"{k:>10}" for k in kinds))
    shown = sorted(per_zone)[:8]
    for zone in shown:
        counts = per_zone[zone]
        say(f"{zone:>6} {owner.get(zone, '?'):<9} {sum(counts.values()):>6} "
            + " ".join(f"{counts.get(k, 0):>10}" for k in kinds))
    if len(per_zone) > len(shown):
        say(f"   ... and {len(per_zone) - len(shown)} more zones like these")


def _ms(start: float) -> str:
    return f"{(time.monotonic() - start) * 1000:.0f} ms"


if __name__ == "__main__":
    sys.exit(main())
