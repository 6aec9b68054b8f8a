"""The only code of conntrack_lib that runs as root.

One privsep context with exactly the capabilities conntrack needs:
CAP_NET_ADMIN for ctnetlink and CAP_SYS_ADMIN to enter a network namespace.
Its options live in the ``[conntrack_lib_privileged]`` section, where a
deployment sets ``helper_command`` (see docs/deployment.rst).
"""

from oslo_privsep import capabilities as caps
from oslo_privsep import priv_context

PRIVSEP_SECTION = "conntrack_lib_privileged"

default = priv_context.PrivContext(
    "conntrack_lib",
    cfg_section=PRIVSEP_SECTION,
    pypath=__name__ + ".default",
    capabilities=[caps.CAP_NET_ADMIN, caps.CAP_SYS_ADMIN],
    logger_name=__name__,
)
