"""SQLiteZoneStore: a zone space in an SQLite database, shared by processes.

The database is in WAL mode with ``synchronous=NORMAL``: every operation is
one transaction (``BEGIN IMMEDIATE``, or a single autocommit ``INSERT`` for
the common allocation), readers never wait for the writer, and a process
killed at any moment leaves the last committed state.  A commit is
not flushed to disk before the next checkpoint, so a power loss may forget
the latest allocations; it also empties the kernel's conntrack table, so no
flow can be left in a zone whose owner was forgotten.

The file is created in a private directory with mode 0600 and published
under its name only once its schema is complete, so a file at that path is
either a whole store or not ours.  Anything else found there (another
program's file, a truncated or damaged database, a newer schema) is refused
with :class:`~conntrack_lib.exceptions.ZoneStoreError` and left untouched.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import weakref
from collections.abc import Iterable, Mapping

from oslo_log import log as logging

from conntrack_lib import exceptions
from conntrack_lib.zones import fs, migration
from conntrack_lib.zones import sqlite_schema as schema
from conntrack_lib.zones.sqlite_space import SQLiteSpace, store_error
from conntrack_lib.zones.table import ZoneSnapshot
from conntrack_lib.zones.validation import validate_range

LOG = logging.getLogger(__name__)

#: Seconds an operation waits for another process's transaction by default.
DEFAULT_TIMEOUT = 5.0

_INSERT_ROW = "INSERT INTO zone (zone, state, owner, freed) VALUES (?, ?, ?, ?)"


class SQLiteZoneStore:
    """Keep a zone space in an SQLite database shared by the processes of a host.

    Use it wherever a zone map must survive a restart or be shared::

        helper = ConntrackHelper(namespace="qrouter-1",
                                 zone_store=SQLiteZoneStore("/var/lib/agent/ct-zones.db"))

    The database is created on first use, with mode 0600, in ``path``'s
    directory, which must exist, belong to the caller and not be group- or
    world-writable (nor may any ancestor be, unless sticky).  Every process
    sharing the file must use the same range and reserved zones; another
    range is refused.

    :param path: the database file.
    :param timeout: seconds an operation waits while another process holds
        the database before it raises :class:`~conntrack_lib.exceptions.ZoneStoreError` naming the
        holder; never longer.
    :param migrate_from: a :class:`~conntrack_lib.zones.FileZoneStore` JSON
        document imported when the database is created (then never read
        again; it is kept as a backup).  Ignored once the database exists.
    :raises exceptions.InvalidArgumentError: for a non-positive timeout.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        migrate_from: str | os.PathLike[str] | None = None,
    ) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise exceptions.InvalidArgumentError("timeout", timeout, "must be a positive number")
        self._path = os.path.abspath(os.fspath(path))
        self._dir, self._name = os.path.split(self._path)
        self._timeout = float(timeout)
        self._migrate_from = None if migrate_from is None else os.fspath(migrate_from)
        self._spaces: weakref.WeakSet[SQLiteSpace] = weakref.WeakSet()
        self._create_lock = threading.Lock()

    @property
    def path(self) -> str:
        """Return the absolute path of the database."""
        return self._path

    @property
    def location(self) -> str:
        """Return the absolute path of the database."""
        return self._path

    @property
    def timeout(self) -> float:
        """Return the longest wait for another process, in seconds."""
        return self._timeout

    def __repr__(self) -> str:
        return f"SQLiteZoneStore({self._path!r}, timeout={self._timeout!r})"

    def open_space(self, zone_range: tuple[int, int], reserved: frozenset[int]) -> SQLiteSpace:
        """Return the zone space of this store for ``zone_range``, creating the store if needed.

        :param zone_range: ``(low, high)`` of the allocator.
        :param reserved: zones the allocator never hands out; a zone newly
            reserved leaves the free order, a zone no longer reserved joins
            its back.
        :returns: the space, which runs each operation as one transaction.
        :raises exceptions.ZoneStoreError: when the directory or the file is
            unsafe, the file is not a sound zone store of a known version,
            it belongs to another range, a newly reserved zone is owned, or
            the import of ``migrate_from`` fails.
        """
        low, high = validate_range(zone_range)
        reserved = frozenset(reserved)
        with self._create_lock:
            self._prepare(low, high, reserved)
        stored = self._validated_range()
        if stored != (low, high):
            raise exceptions.ZoneStoreError(
                self._path, f"refused: stored range {stored[0]}..{stored[1]} differs from "
                f"the configured {low}..{high}")
        space = SQLiteSpace(self._path, low, high, reserved, self._timeout)
        self._spaces.add(space)
        return space

    def read(self) -> ZoneSnapshot | None:
        """Return the whole stored state without changing it, or ``None`` if there is no file.

        :returns: the snapshot of the database, or ``None``.
        :raises exceptions.ZoneStoreError: when the file is unsafe or not a
            sound zone store.
        """
        dir_fd = fs.open_private_dir(self._dir, self._path)
        try:
            if fs.entry_status(dir_fd, self._name) is None:
                return None
            self._check_files(dir_fd)
        finally:
            os.close(dir_fd)
        self._check_identity()
        conn = self._connect("ro")
        try:
            zone_range = schema.validate(conn, self._path)
            rows = conn.execute("SELECT zone, state, owner, freed FROM zone").fetchall()
        except sqlite3.Error as exc:
            raise store_error(self._path, exc, self._timeout) from exc
        finally:
            conn.close()
        return _snapshot(zone_range, rows)

    def close(self) -> None:
        """Close the database connections of every space this store opened."""
        for space in list(self._spaces):
            space.close()

    # -- opening ----------------------------------------------------------

    def _connect(self, mode: str) -> sqlite3.Connection:
        try:
            return schema.connect(self._path, mode, self._timeout)
        except sqlite3.Error as exc:
            raise store_error(self._path, exc, self._timeout) from exc

    def _check_identity(self) -> None:
        """Refuse a main file that is not a zone store, looking at it alone."""
        peek = self._connect("peek")
        try:
            schema.check_identity(peek, self._path)
        finally:
            peek.close()

    def _validated_range(self) -> tuple[int, int]:
        # First the main file alone: a file that is not ours gets no -wal or
        # -shm beside it.  Then read-only: a refused store is never written,
        # not even by the checkpoint a read-write connection runs on close.
        self._check_identity()
        conn = self._connect("ro")
        try:
            return schema.validate(conn, self._path)
        except sqlite3.Error as exc:
            raise store_error(self._path, exc, self._timeout) from exc
        finally:
            conn.close()

    def _prepare(self, low: int, high: int, reserved: frozenset[int]) -> None:
        dir_fd = fs.open_private_dir(self._dir, self._path)
        try:
            if fs.entry_status(dir_fd, self._name) is None:
                self._create(dir_fd, low, high, reserved)
            self._check_files(dir_fd)
        finally:
            os.close(dir_fd)

    def _check_files(self, dir_fd: int) -> None:
        fs.check_private_file(dir_fd, self._name, self._path)
        # SQLite opens these by name; refuse any that another user planted.
        for suffix in ("-wal", "-shm", "-journal"):
            st = fs.entry_status(dir_fd, self._name + suffix)
            if st is not None:
                fs.check_private_status(st, repr(self._name + suffix), self._path)

    def _create(self, dir_fd: int, low: int, high: int, reserved: frozenset[int]) -> None:
        rows: list[migration.Row] = []
        meta: dict[str, str] = {}
        if self._migrate_from is not None:
            rows, meta = migration.import_document(self._migrate_from, low, high, reserved)
        if not meta:
            rows = [(zone, "reserved", None, None) for zone in sorted(reserved)]
        tmp = f".{self._name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fs.create_private_file(dir_fd, tmp)
            self._initialise(os.path.join(self._dir, tmp), low, high, rows, meta)
            fs.sync_entry(dir_fd, tmp)
            if fs.publish(dir_fd, tmp, self._name) and meta:
                LOG.debug("zone store %s: imported %d zones from %s (kept as a backup)",
                         self._path, len(rows), meta["migrated_from"])
        except OSError as exc:
            raise exceptions.ZoneStoreError(
                self._path, f"cannot create: {exc.strerror or exc}") from exc
        except sqlite3.Error as exc:
            raise store_error(self._path, exc, self._timeout) from exc
        finally:
            fs.remove_quietly(dir_fd, tmp, tmp + "-wal", tmp + "-shm", tmp + "-journal")

    def _initialise(self, path: str, low: int, high: int, rows: list[migration.Row],
                    meta: Mapping[str, str]) -> None:
        conn = schema.connect(path, "rw", self._timeout)
        try:
            conn.execute(f"PRAGMA page_size = {schema.PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            schema.create(conn, low, high, meta)
            conn.executemany(_INSERT_ROW, rows)
            conn.execute("COMMIT")
            # Everything into the main file: the WAL is not published with it.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()


def read_store(path: str | os.PathLike[str],
               timeout: float = DEFAULT_TIMEOUT) -> ZoneSnapshot | None:
    """Return the state kept in a zone store file, or ``None`` when it does not exist.

    Reads an :class:`SQLiteZoneStore` database, or the JSON document of the
    deprecated file store, and changes neither.

    :param path: the file.
    :param timeout: seconds to wait for a busy database.
    :returns: the stored state.
    :raises exceptions.ZoneStoreError: when the file is unsafe or neither a
        sound zone store database nor a zone store document.
    """
    store = SQLiteZoneStore(path, timeout=timeout)
    try:
        return store.read()
    except exceptions.ZoneStoreError as error:
        if "not a database" not in error.reason:
            raise
        from conntrack_lib.zones.file_store import read_document  # noqa: PLC0415

        try:
            return read_document(store.path)
        except exceptions.ZoneStoreError:
            raise error from None


def _snapshot(zone_range: tuple[int, int],
              rows: Iterable[tuple[int, str, str | None, int | None]]) -> ZoneSnapshot:
    owned: dict[str, int] = {}
    free: list[tuple[int, int]] = []
    held: list[int] = []
    reserved: list[int] = []
    taken: set[int] = set()
    for zone, state, owner, freed in rows:
        taken.add(zone)
        if state == "owned" and owner is not None:
            owned[owner] = zone
        elif state == "free" and freed is not None:
            free.append((freed, zone))
        elif state == "held":
            held.append(zone)
        else:
            reserved.append(zone)
    gap = zone_range[0]
    while gap in taken:
        gap += 1
    return ZoneSnapshot(
        zone_range=zone_range, zones=owned, released=tuple(zone for _, zone in sorted(free)),
        held=tuple(sorted(held)), next_fresh=gap, reserved=tuple(sorted(reserved)))
