"""Conntrack zone allocation that survives restarts and shares one host.

A :class:`ZoneAllocator` hands out conntrack zones to string keys (a port,
a router, a network) from a configured range, one zone per key.

Design
------

* **State.** A zone is *owned* by one key, *held* (live kernel flows but no
  owner: never handed out until unheld), *free* after a release, *reserved*
  (never handed out), or was never handed out.

* **Reuse order.** Zones that were never handed out come first, in
  ascending order.  Once the range has been walked, zones come from the
  free order, which holds released (and unheld) zones in the order they
  were freed: the zone freed longest ago is reused first and a zone that was
  just freed is reused last.  This keeps a freed zone's number out of
  circulation for as long as possible, so that late kernel flows or stale
  rules that still name it do not leak into a new owner.

* **Stores.** The store decides where the state lives.
  :class:`MemoryZoneStore` (the default) keeps it in the allocator's memory
  (two dicts, a set and an ordered dict: every operation is O(1) per zone it
  names).  :class:`SQLiteZoneStore` keeps it in an SQLite database in WAL
  mode, one row per zone that is not fresh, and runs every operation as one
  transaction on indexes (O(log n)): several processes on one host share one
  zone space, a crash leaves the last committed state, and a zone owned
  twice is impossible by the table's constraints.  :class:`FileZoneStore`,
  a JSON document rewritten on every change, is deprecated.

The allocator does no process work and touches no kernel state; flushing the
flows of a released or held zone is the caller's business.

Example::

    store = SQLiteZoneStore("/var/lib/myservice/ct-zones.db")
    zones = ZoneAllocator((4097, MAX_CONNTRACK_ZONE_ID), store=store)
    zone = zones.allocate("port-6f1c")   # the same zone on every call
    zones.allocate_many(["port-a", "port-b"])  # one transaction
    zones.release("port-6f1c")           # back of the free order

After a restart with the in-memory store, rebuild the mapping with
:meth:`ZoneAllocator.restore` and protect zones that still have flows but no
owner with :meth:`ZoneAllocator.hold`.
"""

from __future__ import annotations

from conntrack_lib.zones.allocator import AnyZoneStore, ZoneAllocator
from conntrack_lib.zones.file_store import FileZoneStore
from conntrack_lib.zones.sqlite_store import SQLiteZoneStore, read_store
from conntrack_lib.zones.stores import (
    MemoryZoneStore,
    TransactionalZoneStore,
    ZoneSpace,
    ZoneStore,
)
from conntrack_lib.zones.table import ZoneSnapshot
from conntrack_lib.zones.validation import (
    MAX_KEY_LENGTH,
    validate_key,
    validate_range,
    validate_zone,
)

__all__ = [
    "MAX_KEY_LENGTH",
    "AnyZoneStore",
    "FileZoneStore",
    "MemoryZoneStore",
    "SQLiteZoneStore",
    "TransactionalZoneStore",
    "ZoneAllocator",
    "ZoneSnapshot",
    "ZoneSpace",
    "ZoneStore",
    "read_store",
    "validate_key",
    "validate_range",
    "validate_zone",
]
