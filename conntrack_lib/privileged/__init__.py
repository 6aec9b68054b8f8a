"""The only code of conntrack_lib that runs as root: the privsep entrypoints.

This package holds the privsep context and, in one module per subsystem,
the task-named entrypoints the daemon runs (:mod:`.conntrack`,
:mod:`.events`, :mod:`.netlink`), plus :mod:`.bounding`, which shrinks the
daemon's capability bounding set.  The entrypoints validate what they are
sent with pure modules that live outside (:mod:`conntrack_lib.boundary`,
:mod:`conntrack_lib.netlink_socket`); how the agent starts, watches and
stops the daemon lives in :mod:`conntrack_lib.daemon`.

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
