"""The only code of conntrack_lib that runs as root: the privsep entrypoints.

This package holds the privsep context and, in one module per subsystem,
the task-named entrypoints the daemon runs (:mod:`.conntrack`,
:mod:`.events`, :mod:`.netlink`), plus :mod:`.bounding`, which shrinks the
daemon's capability bounding set.  The entrypoints re-validate what they
are sent with unprivileged modules that live outside and that the
unprivileged side tests and reuses: ``conntrack_lib.boundary`` (commands),
``conntrack_lib.netlink_socket`` (flows, and the ctnetlink exchange that
:class:`~conntrack_lib.executor.ProcessExecutor` runs too),
``conntrack_lib.spool`` and ``conntrack_lib.event_streams`` (the daemon's
bookkeeping).  How the agent starts, watches and stops the daemon lives in
``conntrack_lib.daemon``.

One context with exactly the capabilities conntrack needs: CAP_NET_ADMIN
for ctnetlink and CAP_SYS_ADMIN to enter a network namespace.  Its options
live in the ``[conntrack_lib_privileged]`` section, where a deployment sets
``helper_command`` (see docs/deployment.rst).
"""

from __future__ import annotations

from oslo_privsep import capabilities as caps

from conntrack_lib.daemon import ConntrackPrivContext

PRIVSEP_SECTION = "conntrack_lib_privileged"

default = ConntrackPrivContext(
    "conntrack_lib",
    cfg_section=PRIVSEP_SECTION,
    pypath=__name__ + ".default",
    capabilities=[caps.CAP_NET_ADMIN, caps.CAP_SYS_ADMIN],
    logger_name=__name__,
)
