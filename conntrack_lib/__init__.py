"""conntrack_lib: manage Linux connection tracking from networking agents.

Importing this package only defines names: no process starts, no daemon
forks and no configuration is read until a caller asks for it.
"""

from conntrack_lib import exceptions
from conntrack_lib.constants import MAX_CONNTRACK_ZONE_ID
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.models import Counters, CpuStats, Entry, Event, FlowTuple
from conntrack_lib.rules import SecurityGroupRule

__all__ = [
    "MAX_CONNTRACK_ZONE_ID",
    "ConntrackHelper",
    "Counters",
    "CpuStats",
    "Entry",
    "Event",
    "FlowTuple",
    "SecurityGroupRule",
    "exceptions",
]
