"""Benchmark batched ctnetlink creates (IPCTNL_MSG_CT_NEW) against ``conntrack -R``.

Run as root from the repository root::

    .venv/bin/python -m bench.create_netlink [--flows 10000] [--runs 5]
        [--old-binary PATH] [--r-binary PATH]

conntrack-tools 1.4.5 and 1.4.6 have no ``-R``: there the library creates
flows over ctnetlink instead.  The issue's target: 10,000 flows created on
1.4.6 in at most 1.5x the time ``-R`` takes on 1.4.7.  Both are measured in
the same run, interleaved, each in a freshly flushed namespace of its own
(the host's table is never touched); the medians are printed side by side:

(a) ``-R`` on the release that has it: ``ProcessExecutor(binary=R).execute(
    BatchCommand(commands))`` (renders the load file, one process);
(b) netlink create: ``ProcessExecutor().create_flows(commands)`` in this process;
(c) the whole helper on each release: ``ConntrackHelper(executor=
    ProcessExecutor(binary=...)).create_entries(dicts)`` (builds and validates
    the commands too; on the old release it routes to netlink create);
(d) netlink create through a privsep daemon started by fork (adds the msgpack
    round trip and the daemon's re-validation of every command), and ``-R``
    through the same daemon when its binary (/usr/sbin/conntrack) has it;
(e) what the old release did before: one ``conntrack -I`` process per flow,
    timed on ``--cli-sample`` flows and scaled linearly.

The binaries: ``--r-binary`` (default /usr/sbin/conntrack when it has ``-R``,
else the cached 1.4.7 build) and ``--old-binary`` (default /usr/sbin/conntrack
when it lacks ``-R``, as under ``tools/matrix.sh``'s bind mount, else the
cached 1.4.6 build).
"""

from __future__ import annotations

import argparse
import glob
import statistics
import subprocess
from collections.abc import Callable
from typing import Any

from bench._common import CONNTRACK, IP, conntrack, namespace, ratio, require_root, timed
from conntrack_lib import ConntrackHelper, capabilities, commands, executor

BUILDS = "/var/cache/conntrack-lib/builds"
ZONES = 10


def flow_fields(n: int) -> dict[str, Any]:
    """Return the create fields of flow ``n``: 70% tcp, 20% udp IPv4, 10% udp IPv6."""
    zone = 1 + n % ZONES
    if n % 10 == 9:
        return {"proto": "udp", "src": f"fd00::{n >> 16:x}:{n & 0xFFFF:x}",
                "dst": "fd00:ffff::1", "sport": 1024 + n % 60000, "dport": 53,
                "timeout": 3600, "zone": zone}
    src = f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
    if n % 10 >= 7:
        return {"proto": "udp", "src": src, "dst": "10.250.0.1", "sport": 1024 + n % 60000,
                "dport": 53, "timeout": 3600, "zone": zone}
    return {"proto": "tcp", "src": src, "dst": "10.250.0.2", "sport": 1024 + n % 60000,
            "dport": 443, "state": "ESTABLISHED", "timeout": 3600, "zone": zone,
            "mark": n % 4}


def release_of(binary: str) -> capabilities.Release:
    """Return the release ``binary --version`` prints."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    return capabilities.parse_version(out.stdout + out.stderr)


def has_load_file(binary: str) -> bool:
    """Tell whether ``binary`` has ``-R``."""
    return capabilities.for_release(release_of(binary)).load_file


def cached_build(release: str) -> str:
    """Return the cached build of ``release`` (tools/build_conntrack.sh made it)."""
    found = sorted(glob.glob(f"{BUILDS}/conntrack-tools-{release}-*/bin/conntrack"))
    if not found:
        raise SystemExit(f"no cached build of conntrack-tools {release} under {BUILDS}; "
                         "run tools/build_conntrack.sh or pass the binary")
    return found[0]


def pick_binaries(args: argparse.Namespace) -> tuple[str, str]:
    """Return (binary with -R, binary without) from the options or the defaults."""
    system_has_r = has_load_file(CONNTRACK)
    r_binary = args.r_binary or (CONNTRACK if system_has_r else cached_build("1.4.7"))
    old_binary = args.old_binary or (cached_build("1.4.6") if system_has_r else CONNTRACK)
    if not has_load_file(r_binary):
        raise SystemExit(f"{r_binary} has no -R")
    if has_load_file(old_binary):
        raise SystemExit(f"{old_binary} has -R: pass a 1.4.5 or 1.4.6 binary")
    return r_binary, old_binary


def count(ns: str) -> int:
    """Return the number of flows in the namespace's table."""
    return int(conntrack(ns, ["-C"]).stdout)


def measure(ns: str, expected: int, func: Callable[[], Any]) -> float:
    """Flush ``ns``, time ``func()`` and check the table holds ``expected`` flows."""
    conntrack(ns, ["-F"])
    elapsed, _ = timed(func)
    got = count(ns)
    if got != expected:
        raise SystemExit(f"expected {expected} flows after the run, found {got}")
    return elapsed


def per_process(ns: str, binary: str, built: list[commands.CreateCommand]) -> float:
    """Create ``built`` with one ``conntrack -I`` process each; return the time."""
    def run() -> None:
        for command in built:
            subprocess.run([IP, "netns", "exec", ns, binary, *command.argv()], check=True,
                           capture_output=True)
    return measure(ns, len(built), run)


def privsep_create(ns: str, built: list[commands.CreateCommand],
                   runs: int) -> tuple[list[float], list[float]]:
    """Time netlink create and (where the daemon's binary has it) ``-R`` through a
    daemon started by fork, ``runs`` times each, interleaved."""
    from oslo_privsep import priv_context

    from conntrack_lib import privileged

    runner = executor.PrivsepExecutor()
    batch = commands.BatchCommand(built)
    with_r = has_load_file(CONNTRACK)  # the daemon runs the configured binary
    netlink_times: list[float] = []
    load_file_times: list[float] = []
    privileged.default.start(priv_context.Method.FORK)
    try:
        runner.create_flows(built[:1], namespace=ns)  # start-up is not what we measure
        for _ in range(runs):
            netlink_times.append(measure(
                ns, len(built), lambda: runner.create_flows(built, namespace=ns)))
            if with_r:
                load_file_times.append(measure(
                    ns, len(built), lambda: runner.execute(batch, namespace=ns)))
    finally:
        privileged.default.stop()
    return netlink_times, load_file_times


def main() -> None:
    """Run the comparison and print the medians side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cli-sample", type=int, default=200)
    parser.add_argument("--r-binary")
    parser.add_argument("--old-binary")
    parser.add_argument("--no-privsep", action="store_true")
    args = parser.parse_args()
    require_root()
    r_binary, old_binary = pick_binaries(args)
    r_release = ".".join(map(str, release_of(r_binary)))
    old_release = ".".join(map(str, release_of(old_binary)))
    fields = [flow_fields(n) for n in range(args.flows)]
    built = [commands.CreateCommand(**f) for f in fields]
    with_r = executor.ProcessExecutor(binary=r_binary)
    without_r = executor.ProcessExecutor(binary=old_binary)
    times: dict[str, list[float]] = {key: [] for key in ("r", "nl", "helper_r", "helper_nl")}
    with namespace("create") as ns:
        for _ in range(args.runs):
            # Interleaved, so drift on this shared machine hits every method alike.
            times["r"].append(measure(ns, args.flows, lambda: with_r.execute(
                commands.BatchCommand(built), namespace=ns)))
            times["nl"].append(measure(ns, args.flows, lambda: without_r.create_flows(
                built, namespace=ns)))
            times["helper_r"].append(measure(ns, args.flows, lambda: ConntrackHelper(
                namespace=ns, executor=with_r, batch_size=args.flows).create_entries(fields)))
            times["helper_nl"].append(measure(ns, args.flows, lambda: ConntrackHelper(
                namespace=ns, executor=without_r).create_entries(fields)))
        privsep, privsep_r = ([], []) if args.no_privsep else privsep_create(
            ns, built, args.runs)
        sample = per_process(ns, old_binary, built[:args.cli_sample])
    med = {key: statistics.median(values) for key, values in times.items()}
    scaled = sample * args.flows / args.cli_sample
    print(f"{args.flows} flows (70% tcp, 20% udp, 10% udp6; {ZONES} zones), median of "
          f"{args.runs} runs, -R on {r_release} ({r_binary}), old release {old_release} "
          f"({old_binary})")
    print(f"(a) -R on {r_release}, executor:            {med['r']:8.3f} s")
    print(f"(b) netlink create, executor:          {med['nl']:8.3f} s   "
          f"= {med['nl'] / med['r']:.2f}x (a)  [target <= 1.5x]")
    print(f"(c) helper.create_entries on {r_release} (-R): {med['helper_r']:8.3f} s")
    print(f"    helper.create_entries on {old_release} (netlink): {med['helper_nl']:8.3f} s   "
          f"= {med['helper_nl'] / med['helper_r']:.2f}x")
    if privsep:
        nl_privsep = statistics.median(privsep)
        print(f"(d) netlink create via privsep daemon: {nl_privsep:8.3f} s   "
              f"= {nl_privsep / med['r']:.2f}x (a)")
    if privsep_r:
        r_privsep = statistics.median(privsep_r)
        print(f"    -R on {r_release} via privsep daemon:     {r_privsep:8.3f} s   "
              f"(netlink = {statistics.median(privsep) / r_privsep:.2f}x this)")
    print(f"(e) one -I process per flow on {old_release}: {scaled:8.1f} s (scaled from "
          f"{args.cli_sample})  = {ratio(scaled, med['nl'])} slower than (b)")


if __name__ == "__main__":
    main()
