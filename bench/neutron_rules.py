"""Security-group rule removals: Neutron's IpConntrackManager versus the library.

The same table on both sides: 10,000 flows in 20 zones, one zone per port,
20 dual-stack ports sharing one security group.  200 ingress rules (TCP or
UDP, one destination port each) are removed one call at a time:

* Neutron: ``IpConntrackManager._delete_conntrack_state(ports, rule)``, the
  work its queue worker does for ``delete_conntrack_state_by_rule`` (one
  ``conntrack -D -p PROTO -f ipv4 -d PORT_IP -w ZONE`` process per port
  address).  Its own code runs, from the ``neutron`` package, in a separate
  interpreter; only its ``execute`` is a plain ``subprocess.run`` (it runs
  as root here instead of through privsep).
* The library: ``helper.delete_rule(rule, ports)``, one call per rule.

Each side's table afterwards must equal what its documented semantics say.
Neutron's command carries neither the rule's port range nor its ICMP
type/code nor its remote prefix, so it deletes **every** flow of the rule's
protocol towards the port; the library deletes only the removed rule's
flows (protocol and destination port).

Setup (once): ``python3 -m venv /tmp/neutron-venv &&
/tmp/neutron-venv/bin/pip install neutron``; point ``NEUTRON_PYTHON`` at
another interpreter if it lives elsewhere.  Without it the benchmark says
so and exits.  Run as root: ``python -m bench.neutron_rules [RUNS]``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from typing import Any

from bench import _common as c
from conntrack_lib.executor import ProcessExecutor
from conntrack_lib.helper import ConntrackHelper

NEUTRON_PYTHON = os.environ.get("NEUTRON_PYTHON", "/tmp/neutron-venv/bin/python")
PORTS = 20
ZONES = [4101 + i for i in range(PORTS)]
FLOWS = 10_000
RULES = 200
RULE_PORTS = [1000 + k for k in range(RULES)]

_NEUTRON_DRIVER = r'''
import json, subprocess, sys, time
from neutron.agent.linux import ip_conntrack

spec = json.loads(sys.argv[1])
calls = []

def execute(cmd, run_as_root=False, privsep_exec=False, check_exit_code=True,
            extra_ok_codes=None, **_kw):
    cmd = [str(arg) for arg in cmd]  # as neutron's linux_utils.execute does
    calls.append(cmd)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check_exit_code and done.returncode not in [0] + list(extra_ok_codes or []):
        raise RuntimeError(done.stderr)
    return done.stdout

# What __init__ sets, without the queue thread it starts (which never ends):
# the rule removals run synchronously, one call per rule, as its worker would.
mgr = ip_conntrack.IpConntrackManager.__new__(ip_conntrack.IpConntrackManager)
mgr.execute, mgr.namespace, mgr.zone_per_port = execute, spec["namespace"], True
mgr.filtered_ports, mgr.unfiltered_ports = {}, {}
mgr._device_zone_map = {p["device"][:11]: p["zone"] for p in spec["ports"]}
ports = [{"device": p["device"], "fixed_ips": p["fixed_ips"]} for p in spec["ports"]]
start = time.perf_counter()
for rule in spec["rules"]:
    mgr._delete_conntrack_state(ports, rule)
print(json.dumps({"seconds": time.perf_counter() - start, "processes": len(calls),
                  "argv": calls[0]}))
'''


def ports() -> list[dict[str, Any]]:
    """Return the 20 ports: device name, zone, IPv4 and IPv6 address."""
    return [{"device": f"tap{i:08d}-aa", "zone": ZONES[i],
             "fixed_ips": [f"10.50.{i}.10", f"fd00:50::{i:x}:10"]} for i in range(PORTS)]


def rules() -> list[dict[str, Any]]:
    """Return the 200 ingress rules removed, in Neutron's dict form."""
    return [{"direction": "ingress", "ethertype": "IPv4",
             "protocol": "tcp" if k % 2 == 0 else "udp",
             "port_range_min": port, "port_range_max": port}
            for k, port in enumerate(RULE_PORTS)]


def flows() -> list[tuple[str, str, str, int, int, int]]:
    """Return the table as (proto, src, dst, sport, dport, zone), 10,000 flows.

    Four in five are IPv4 flows towards a port on a rule's port or not;
    the rest IPv6, which an IPv4 rule never touches.
    """
    table = []
    for n in range(FLOWS):
        i = n % PORTS
        proto = "tcp" if n % 4 < 2 else "udp"
        dport = 1000 + (n // PORTS) % (2 * RULES)
        if n % 5 == 4:
            table.append((proto, f"fd00:51::{n:x}", f"fd00:50::{i:x}:10", 20000 + n % 40000,
                          dport, ZONES[i]))
        else:
            table.append((proto, f"198.51.{n // 250 % 100}.{n % 250 + 1}", f"10.50.{i}.10",
                          20000 + n % 40000, dport, ZONES[i]))
    return table


def fill_lines(table: list[tuple[str, str, str, int, int, int]]) -> list[str]:
    """Return the ``-I`` lines creating ``table``."""
    return [f"-I -p {p} -s {s} -d {d} --sport {sp} --dport {dp} -t 3600 -w {z}"
            + (" --state ESTABLISHED" if p == "tcp" else "")
            for p, s, d, sp, dp, z in table]


def expected_after(table: list[tuple[str, str, str, int, int, int]],
                   side: str) -> set[tuple[str, str, str, int, int, int]]:
    """Return what each side's documented semantics leave of ``table``."""
    removed = {(r["protocol"], r["port_range_min"]) for r in rules()}
    protocols = {r["protocol"] for r in rules()}
    left = set()
    for flow in table:
        proto, _src, dst, _sport, dport, _zone = flow
        towards_port = ":" not in dst  # every IPv4 flow goes to its port's address
        if side == "library" and towards_port and (proto, dport) in removed:
            continue
        if side == "neutron" and towards_port and proto in protocols:
            continue
        left.add(flow)
    return left


def read_table(ns: str) -> set[tuple[str, str, str, int, int, int]]:
    """Return the table of ``ns`` in the form :func:`flows` uses."""
    helper = ConntrackHelper(namespace=ns, executor=ProcessExecutor())
    return {(e.proto, str(e.original.src), str(e.original.dst), e.original.sport or 0,
             e.original.dport or 0, e.zone) for e in helper.list_entries()}


def run_neutron(ns: str) -> dict[str, Any]:
    """Run Neutron's manager in its own interpreter; return its report."""
    spec = {"namespace": ns, "ports": ports(), "rules": rules()}
    done = subprocess.run([NEUTRON_PYTHON, "-c", _NEUTRON_DRIVER, json.dumps(spec)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"neutron side failed: {done.stderr.strip()[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def run_library(ns: str) -> dict[str, Any]:
    """Remove the rules through the library, one call per rule."""
    counting = c.CountingExecutor(ProcessExecutor())
    helper = ConntrackHelper(namespace=ns, executor=counting)
    targets = [(p["zone"], p["fixed_ips"]) for p in ports()]
    seconds, deleted = c.timed(lambda: sum(helper.delete_rule(r, targets) for r in rules()))
    return {"seconds": seconds, "processes": counting.processes,
            "netlink_calls": counting.netlink_calls, "deleted": deleted}


def neutron_available() -> bool:
    """Tell whether the Neutron interpreter can import IpConntrackManager."""
    if not os.path.exists(NEUTRON_PYTHON):
        return False
    probe = subprocess.run([NEUTRON_PYTHON, "-c", "import neutron.agent.linux.ip_conntrack"],
                           capture_output=True, check=False)
    return probe.returncode == 0


def main() -> None:
    """Run both sides RUNS times on equal tables and print the comparison."""
    c.require_root()
    if not neutron_available():
        sys.exit(f"skipped: no neutron at NEUTRON_PYTHON={NEUTRON_PYTHON}; set it up with "
                 "'python3 -m venv /tmp/neutron-venv && /tmp/neutron-venv/bin/pip install "
                 "neutron' (see this module's docstring)")
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    table = flows()
    lines = fill_lines(table)
    times: dict[str, list[float]] = {"neutron": [], "library": []}
    with c.namespace("neutron") as ns:
        for run in range(runs):
            for side, runner in (("neutron", run_neutron), ("library", run_library)):
                c.flush(ns)
                c.fill(ns, lines)
                report = runner(ns)
                after = read_table(ns)
                same = after == expected_after(table, side)
                times[side].append(report["seconds"])
                print(f"run {run + 1} {side:8s} {report['seconds']:7.2f} s  "
                      f"processes {report['processes']:5d}  flows left {len(after):5d}  "
                      f"as documented: {same}", flush=True)
                if not same:
                    raise SystemExit(f"{side}: the table after is not what its semantics say")
    print(f"{RULES} rule removals, one call each, {FLOWS} flows in {PORTS} zones "
          f"({PORTS} ports sharing the group), {runs} runs:")
    for side, values in times.items():
        print(f"  {side:8s} min {min(values):7.2f} s  median {statistics.median(values):7.2f} s")
    medians = {side: statistics.median(values) for side, values in times.items()}
    print(f"  speed-up: min {c.ratio(min(times['neutron']), min(times['library']))}, "
          f"median {c.ratio(medians['neutron'], medians['library'])}")


if __name__ == "__main__":
    main()
