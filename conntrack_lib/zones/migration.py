"""Import of a FileZoneStore JSON document into a new SQLite zone store.

The document is read once, when the database is created, and left where it
is as a backup: the database records its path and SHA-256 in ``meta`` and
never reads it again.
"""

from __future__ import annotations

import hashlib
import os

from conntrack_lib import exceptions
from conntrack_lib.zones.file_store import decode_document
from conntrack_lib.zones.table import ZoneTable

#: A row of the ``zone`` table: (zone, state, owner, freed).
Row = tuple[int, str, str | None, int | None]


def rows_for(table: ZoneTable) -> list[Row]:
    """Return the rows that keep ``table``'s state, free order included.

    Zones below the table's cursor that are in no state of their own were
    passed while they were reserved; they join the back of the free order,
    as the file store would have put them.
    """
    rows: list[Row] = [(zone, "owned", key, None) for key, zone in table.by_key.items()]
    rows += [(zone, "held", None, None) for zone in sorted(table.held)]
    rows += [(zone, "reserved", None, None) for zone in sorted(table.reserved)]
    free = list(table.recycled)
    named = {row[0] for row in rows} | set(free)
    free += [zone for zone in range(table.low, table.cursor) if zone not in named]
    rows += [(zone, "free", None, seq) for seq, zone in enumerate(free, start=1)]
    return rows


def import_document(
    path: str, low: int, high: int, reserved: frozenset[int]
) -> tuple[list[Row], dict[str, str]]:
    """Return the rows and the ``meta`` entries importing the JSON document at ``path``.

    :param path: the document a :class:`~conntrack_lib.zones.FileZoneStore`
        wrote.
    :param low: the new store's lowest zone.
    :param high: the new store's highest zone.
    :param reserved: the new store's reserved zones.
    :returns: rows for the ``zone`` table and meta entries (empty when the
        document does not exist: there is nothing to import).
    :raises exceptions.ZoneStoreError: naming the document when it cannot be
        read, is not a zone document, belongs to another range or is
        inconsistent.
    """
    path = os.path.abspath(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return [], {}
    except OSError as exc:
        raise exceptions.ZoneStoreError(path, f"cannot read: {exc.strerror or exc}") from exc
    snapshot = decode_document(raw, path)
    try:
        table = ZoneTable.from_snapshot(snapshot, low, high, reserved)
    except ValueError as exc:
        raise exceptions.ZoneStoreError(path, f"cannot import: {exc}") from exc
    digest = hashlib.sha256(raw).hexdigest()
    return rows_for(table), {"migrated_from": path, "migrated_sha256": digest}
