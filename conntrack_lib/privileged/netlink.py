"""Privileged entrypoints for exact deletes and creates over ctnetlink.

Both take flows in primitive form and hand them to
:mod:`conntrack_lib.netlink_socket`, which validates every flow again, here
in the daemon, before it opens a NETLINK_NETFILTER socket in the requested
network namespace.  No process is started.
"""

from __future__ import annotations

from collections.abc import Sequence

from conntrack_lib import netlink_socket, privileged, wire_errors


@privileged.default.entrypoint  # type: ignore[untyped-decorator]
@wire_errors.wire_safe
def delete_flows(namespace: str | None, flows: Sequence[dict[str, object]],
                 batch_size: int = netlink_socket.DEFAULT_BATCH) -> list[int]:
    """Delete exact flows in ``namespace``; return one errno per flow.

    See :func:`conntrack_lib.netlink_socket.delete_flows`.
    """
    return netlink_socket.delete_flows(namespace, flows, batch_size)


@privileged.default.entrypoint  # type: ignore[untyped-decorator]
@wire_errors.wire_safe
def create_flows(namespace: str | None, flows: Sequence[dict[str, object]],
                 batch_size: int = netlink_socket.DEFAULT_BATCH) -> list[int]:
    """Create flows in ``namespace``; return one errno per flow.

    See :func:`conntrack_lib.netlink_socket.create_flows`.
    """
    return netlink_socket.create_flows(namespace, flows, batch_size)
