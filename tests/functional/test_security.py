"""Security properties checked against the real conntrack and kernel.

Each test covers a protection of docs/security.rst that the other
functional tests did not exercise with the real binary.  Everything runs in
a throwaway network namespace.
"""

from __future__ import annotations

import pytest

from conntrack_lib import capabilities, commands
from conntrack_lib import exceptions as exc
from conntrack_lib.executor import ProcessExecutor
from tests.functional import netns

FLOWS = 400


def _udp_flows(count: int) -> list[commands.CreateCommand]:
    return [
        commands.CreateCommand(proto="udp", src=f"10.2.{i // 250}.{i % 250 + 1}",
                               dst="10.9.0.1", sport=1000, dport=53, timeout=600)
        for i in range(count)
    ]


def test_bulk_update_changes_all_or_fails_loudly(ns: str) -> None:
    # The contract: a -U either reports every flow it changed, or raises.
    # conntrack 1.4.7 (and only it, see the capability table) gives up a
    # bulk -U after about 256 entries and exits 1 with no summary line;
    # reading that exit 1 as "0 updated" would hide a half-applied change.
    executor = ProcessExecutor()
    netns.seed(ns, _udp_flows(FLOWS))
    update = commands.UpdateCommand(match={"family": "ipv4"}, mark=7)
    if capabilities.for_release(executor.release()).bulk_update_limit is None:
        assert executor.execute(update, namespace=ns).count == FLOWS
        assert sum("mark=7 " in line for line in netns.table(ns)) == FLOWS
        return
    with pytest.raises(exc.CommandError) as caught:
        executor.execute(commands.UpdateCommand(match={"family": "ipv4"}, mark=7),
                         namespace=ns)
    assert caught.value.exit_code == 1
    assert "No buffer space available" in caught.value.stderr
    marked = [line for line in netns.table(ns) if "mark=7 " in line]
    # Some flows did change: the error is the only sign of a partial update.
    assert 0 < len(marked) < FLOWS


def test_update_matching_nothing_is_still_zero(ns: str) -> None:
    # The other side of the same rule: the documented exit 1 with
    # "0 flow entries have been updated." is a count, not an error.
    executor = ProcessExecutor()
    netns.seed(ns, _udp_flows(3))
    result = executor.execute(
        commands.UpdateCommand(match={"family": "ipv4", "src": "10.3.0.1"}, mark=7),
        namespace=ns,
    )
    assert (result.exit_code, result.count) == (1, 0)
    assert not any("mark=7 " in line for line in netns.table(ns))
