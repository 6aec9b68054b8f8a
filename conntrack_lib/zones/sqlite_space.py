"""The operations of a zone space on an SQLite database, one transaction each.

A zone with no row was never handed out ("fresh").  Rows are never deleted
below the first fresh zone, so every zone below this process's *hint* has a
row and the next fresh zone is found by walking the primary key from the
hint; the hint moves forward as zones are taken and is only ever a lower
bound, so another process allocating meanwhile costs a short walk, never a
wrong answer.  Free zones are reused in the order of their ``freed``
sequence number, read from its unique index.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from conntrack_lib import exceptions
from conntrack_lib.zones import fs
from conntrack_lib.zones import sqlite_schema as schema
from conntrack_lib.zones.validation import validate_key, validate_zone

_T = TypeVar("_T")

#: Connections a forked child inherited: never used nor closed there.
_ABANDONED: list[sqlite3.Connection] = []
#: Every open space, told when the process forks.
_SPACES: weakref.WeakSet[SQLiteSpace] = weakref.WeakSet()
_FORK_HOOK: list[bool] = []
#: Keys per ``IN (...)`` lookup, well below SQLite's variable limit.
_LOOKUP_CHUNK = 500

# Takes the hinted zone for a key that has none, in one statement: the
# common case of an allocation costs a single write.  The primary key and the
# unique owner index refuse a taken zone or a key that owns one; IGNORE turns
# that refusal into "no row", cheaper than looking both up first.
_CLAIM = "INSERT OR IGNORE INTO zone (zone, state, owner) VALUES (?, 'owned', ?)"
_ZONE_OF = "SELECT zone FROM zone WHERE owner = ?"
_STATE_OF = "SELECT state, owner FROM zone WHERE zone = ?"
_ROWS_FROM = "SELECT zone FROM zone WHERE zone >= ? ORDER BY zone"
_OLDEST_FREE = "SELECT zone FROM zone WHERE freed IS NOT NULL ORDER BY freed LIMIT ?"
_INSERT_OWNED = "INSERT INTO zone (zone, state, owner) VALUES (?, 'owned', ?)"
# Rows go in in owner order (each keeps the zone of its place in the array):
# the owner index then only grows at its right edge, instead of splitting
# and rebalancing leaves in its middle, which halves the cost of a run of
# keys such as "port-1", "port-2", ... "port-10".
_INSERT_RUN = """
INSERT INTO zone (zone, state, owner)
SELECT ?1 + key, 'owned', value FROM json_each(?2) ORDER BY value
"""
# The JSON array drives the join: one index probe per key, no temporary table.
_ZONES_OF_JSON = """
SELECT z.owner, z.zone FROM json_each(?) AS j JOIN zone AS z ON z.owner = j.value
"""
_REUSE = "UPDATE zone SET state = 'owned', owner = ?, freed = NULL WHERE zone = ?"
_FREE = """
UPDATE zone SET state = 'free', owner = NULL,
    freed = (SELECT coalesce(max(freed), 0) + 1 FROM zone WHERE freed IS NOT NULL)
WHERE zone = ?
"""
_INSERT_STATE = "INSERT INTO zone (zone, state) VALUES (?, ?)"
_SET_STATE = "UPDATE zone SET state = ?, freed = NULL WHERE zone = ?"
_OWN = """
INSERT INTO zone (zone, state, owner) VALUES (?, 'owned', ?)
ON CONFLICT (zone) DO UPDATE SET state = 'owned', owner = excluded.owner, freed = NULL
"""


#: SQLite's primary result codes for a busy or locked database (the sqlite3
#: module names them only from Python 3.11, and 3.10 is supported).
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6


def _is_busy(exc: sqlite3.Error) -> bool:
    # Python 3.11+ carries the code; 3.10 only the message.
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        # Extended codes (e.g. SQLITE_BUSY_RECOVERY) keep the primary code in the low byte.
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return "database is locked" in str(exc)


def store_error(path: str, exc: sqlite3.Error, timeout: float) -> exceptions.ZoneStoreError:
    """Return the :class:`~conntrack_lib.exceptions.ZoneStoreError` for ``exc``.

    It names who holds a busy database.
    """
    if _is_busy(exc):
        holders = fs.lock_holders([path, path + "-shm", path + "-wal"])
        who = ", ".join(holders) if holders else "an unknown holder"
        return exceptions.ZoneStoreError(
            path, f"busy for more than {timeout:g} s: locked by {who}")
    return exceptions.ZoneStoreError(path, f"database error: {exc}")


def _owner(row: tuple[int, str]) -> str:
    return row[1]


def _has_json(conn: sqlite3.Connection) -> bool:
    # JSON functions are built in from SQLite 3.38 and optional before.
    try:
        conn.execute("SELECT count(*) FROM json_each('[]')").fetchone()
    except sqlite3.OperationalError:
        return False
    return True


def _after_fork_in_child() -> None:
    for space in list(_SPACES):
        space.forget_parent()


def _watch_forks(space: SQLiteSpace) -> None:
    # Registered on first use, not at import: importing has no side effects.
    if not _FORK_HOOK:
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _FORK_HOOK.append(True)
    _SPACES.add(space)


class SQLiteSpace:
    """Run a zone space's operations on one connection, each as a transaction.

    Thread-safe (one lock per space) and fork-safe: a child process opens
    its own connection and leaves the inherited one alone.

    :param path: the validated database.
    :param low: lowest zone of the range.
    :param high: highest zone of the range.
    :param reserved: zones never handed out.
    :param timeout: seconds to wait for another process's transaction.
    :raises exceptions.ZoneStoreError: when the database cannot be opened or
        a newly reserved zone is owned.
    """

    def __init__(self, path: str, low: int, high: int, reserved: frozenset[int],
                 timeout: float) -> None:
        self._path = path
        self._low, self._high, self._reserved = low, high, reserved
        self._timeout = timeout
        self._lock = threading.Lock()
        self._hint = low
        self._next_hint: int | None = None
        self._conn: sqlite3.Connection | None = self._open()
        # The claim's own cursor, kept: a new one per call costs a tenth of it.
        self._cursor: sqlite3.Cursor | None = None
        self._json = _has_json(self._conn)
        _watch_forks(self)
        self._reconcile_reserved()

    def _open(self) -> sqlite3.Connection:
        try:
            conn = schema.connect(self._path, "rw", self._timeout)
        except sqlite3.Error as exc:
            raise store_error(self._path, exc, self._timeout) from exc
        try:
            conn.execute("PRAGMA synchronous = NORMAL")
            # The same WAL size whatever page size the store was created with.
            page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            pages = max(1, schema.AUTOCHECKPOINT_BYTES // page_size)
            conn.execute(f"PRAGMA wal_autocheckpoint = {pages}")
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            # From here on this space waits for locks itself (see _retrying):
            # SQLite's own handler sleeps whole milliseconds between tries.
            conn.execute("PRAGMA busy_timeout = 0")
        except sqlite3.Error as exc:
            conn.close()
            raise store_error(self._path, exc, self._timeout) from exc
        return conn

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            conn = self._conn = self._open()
        return conn

    def forget_parent(self) -> None:
        """Drop, in a forked child, the connection and lock inherited from the parent.

        SQLite connections must not cross a fork: the child keeps the
        parent's object alive but unused (closing it could checkpoint under
        the parent) and opens its own at the next operation.
        """
        if self._conn is not None:
            _ABANDONED.append(self._conn)
        self._conn = None
        self._cursor = None
        self._hint = self._low
        # Another thread of the parent may have held the lock at the fork.
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the connection; the next operation opens a new one."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            self._cursor = None

    # -- transactions -----------------------------------------------------

    def _error(self, exc: sqlite3.Error) -> exceptions.ZoneStoreError:
        return store_error(self._path, exc, self._timeout)

    def _transact(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._lock:
            conn = self._connection()
            self._next_hint = None
            try:
                self._retrying(lambda: conn.execute("BEGIN IMMEDIATE"))
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    # The original error says more than a failed rollback.
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._error(exc) from exc
                raise
            if self._next_hint is not None:
                self._hint = self._next_hint
            return result

    def _read(self, query: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._lock:
            conn = self._connection()
            try:
                return self._retrying(lambda: query(conn))
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def _retrying(self, step: Callable[[], _T]) -> _T:
        """Run ``step`` until it is not refused as busy, for ``timeout`` seconds at most.

        Transactions last microseconds, so the pauses start at 0.1 ms and
        double up to 4 ms: contending processes take turns quickly.
        """
        deadline = time.monotonic() + self._timeout
        pause = 0.0001
        while True:
            try:
                return step()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.004)

    # -- finding free zones ----------------------------------------------

    def _fresh(self, conn: sqlite3.Connection, wanted: int) -> list[range]:
        """Return runs of fresh zones, lowest first, ``wanted`` zones at most, from the hint on."""
        runs: list[range] = []
        found = 0
        candidate = self._hint
        if candidate > self._high:
            return runs
        cursor = conn.execute(_ROWS_FROM, (candidate,))
        for (zone,) in cursor:
            if zone > candidate:
                take = min(zone - candidate, wanted - found)
                runs.append(range(candidate, candidate + take))
                found += take
                candidate += take
                if found == wanted:
                    break
            candidate = zone + 1
        else:
            take = min(self._high + 1 - candidate, wanted - found)
            if take > 0:
                runs.append(range(candidate, candidate + take))
                candidate += take
        cursor.close()
        self._next_hint = candidate
        return runs

    def _assign(self, conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, int]:
        """Give each of ``keys`` (none owns a zone) a free zone: fresh ones first."""
        runs = self._fresh(conn, len(keys))
        fresh = sum(len(run) for run in runs)
        reused: list[int] = []
        if fresh < len(keys):
            reused = [row[0] for row in conn.execute(_OLDEST_FREE, (len(keys) - fresh,))]
        if fresh + len(reused) < len(keys):
            raise exceptions.ZoneExhaustedError(self._low, self._high, keys[0])
        start = 0
        for run in runs:
            self._insert_run(conn, run.start, keys[start:start + len(run)])
            start += len(run)
        conn.executemany(_REUSE, zip(keys[fresh:], reused, strict=True))
        zones = [zone for run in runs for zone in run] + reused
        return dict(zip(keys, zones, strict=True))

    def _insert_run(self, conn: sqlite3.Connection, first: int, keys: Sequence[str]) -> None:
        """Give ``keys`` the consecutive fresh zones from ``first`` on."""
        if self._json and len(keys) > 1:
            # One statement over a JSON array: half the cost of binding each row.
            conn.execute(_INSERT_RUN, (first, json.dumps(list(keys))))
        else:
            # Owner order, as in _INSERT_RUN.
            rows: list[tuple[int, str]] = sorted(
                zip(range(first, first + len(keys)), keys, strict=True), key=_owner)
            conn.executemany(_INSERT_OWNED, rows)

    def _zones_of(self, conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, int]:
        if self._json:
            return dict(conn.execute(_ZONES_OF_JSON, (json.dumps(list(keys)),)).fetchall())
        owned: dict[str, int] = {}
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start:start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            owned.update(conn.execute(
                f"SELECT owner, zone FROM zone WHERE owner IN ({marks})",  # noqa: S608 - only "?"
                chunk).fetchall())
        return owned

    # -- operations -------------------------------------------------------

    def allocate(self, key: str) -> int:
        """Return the zone of ``key``, giving it the next free zone if needed.

        The common allocation (a new key, the hinted zone fresh) is one
        autocommit ``INSERT OR IGNORE``: a single statement is atomic on its
        own, and skipping BEGIN and COMMIT saves a third of the call.  The
        primary key and the unique owner index refuse a taken zone or a key
        that owns one; anything but a claimed row then goes through a full
        transaction.
        """
        with self._lock:
            zone = self._hint
            if zone <= self._high:
                cursor = self._cursor
                if cursor is None:
                    cursor = self._cursor = self._connection().cursor()
                try:
                    claimed = cursor.execute(_CLAIM, (zone, key)).rowcount == 1
                except sqlite3.OperationalError as exc:
                    # Only a busy database is worth the waiting loop (rare).
                    if not _is_busy(exc):
                        raise self._error(exc) from exc
                    claimed = self._claim_when_free(cursor, zone, key)
                except sqlite3.Error as exc:
                    raise self._error(exc) from exc
                if claimed:
                    self._hint = zone + 1
                    return zone

        def work(conn: sqlite3.Connection) -> int:
            zone = self._hint
            if zone <= self._high and conn.execute(_CLAIM, (zone, key)).rowcount == 1:
                self._next_hint = zone + 1
                return zone
            row = conn.execute(_ZONE_OF, (key,)).fetchone()
            if row is not None:
                return int(row[0])
            return self._assign(conn, [key])[key]

        return self._transact(work)

    def _claim_when_free(self, cursor: sqlite3.Cursor, zone: int, key: str) -> bool:
        """Retry the claim of ``zone`` for ``key`` while the database is busy."""
        try:
            return bool(self._retrying(lambda: cursor.execute(_CLAIM, (zone, key))).rowcount == 1)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def allocate_many(self, keys: Sequence[str]) -> dict[str, int]:
        """Return the zone of every key; all get one or none does."""

        def work(conn: sqlite3.Connection) -> dict[str, int]:
            unique = list(dict.fromkeys(keys))
            owned = self._zones_of(conn, unique)
            missing = [key for key in unique if key not in owned]
            if missing:
                owned.update(self._assign(conn, missing))
            return {key: owned[key] for key in keys}

        return self._transact(work)

    def release(self, key: str) -> int | None:
        """Free the zone of ``key`` to the back of the free order."""

        def work(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(_ZONE_OF, (key,)).fetchone()
            if row is None:
                return None
            conn.execute(_FREE, (row[0],))
            return int(row[0])

        return self._transact(work)

    def get(self, key: str) -> int | None:
        """Return the zone of ``key``, or ``None``."""
        row = self._read(lambda conn: conn.execute(_ZONE_OF, (key,)).fetchone())
        return None if row is None else int(row[0])

    def items(self) -> dict[str, int]:
        """Return the key to zone mapping."""
        return self._read(lambda conn: dict(conn.execute(
            "SELECT owner, zone FROM zone WHERE owner IS NOT NULL").fetchall()))

    def in_use(self) -> frozenset[int]:
        """Return the zones owned by a key."""
        return self._read(lambda conn: frozenset(row[0] for row in conn.execute(
            "SELECT zone FROM zone WHERE owner IS NOT NULL")))

    def held(self) -> frozenset[int]:
        """Return the held zones."""
        return self._read(lambda conn: frozenset(row[0] for row in conn.execute(
            "SELECT zone FROM zone WHERE state = 'held'")))

    def count(self) -> int:
        """Return how many keys own a zone."""
        return int(self._read(lambda conn: conn.execute(
            "SELECT count(*) FROM zone WHERE owner IS NOT NULL").fetchone()[0]))

    def restore(self, mapping: Mapping[str, int]) -> None:
        """Adopt every pair of ``mapping`` or none."""
        self._check_restorable(mapping)

        def work(conn: sqlite3.Connection) -> None:
            for key, zone in mapping.items():
                current = conn.execute(_ZONE_OF, (key,)).fetchone()
                if current is not None and current[0] != zone:
                    raise exceptions.InvalidZoneError(
                        zone, f"{key!r} already owns zone {current[0]}")
                row = conn.execute(_STATE_OF, (zone,)).fetchone()
                if row is not None and row[0] == "owned" and row[1] != key:
                    raise exceptions.InvalidZoneError(zone, f"zone already owned by {row[1]!r}")
                if current is None:
                    conn.execute(_OWN, (zone, key))

        if mapping:
            self._transact(work)

    def _check_restorable(self, mapping: Mapping[str, int]) -> None:
        seen: dict[int, str] = {}
        for key, zone in mapping.items():
            validate_key(key)
            validate_zone(zone)
            if not self._low <= zone <= self._high:
                raise exceptions.InvalidZoneError(
                    zone, f"outside the range {self._low}..{self._high}")
            if zone in self._reserved:
                raise exceptions.InvalidZoneError(zone, "zone is reserved")
            if zone in seen:
                raise exceptions.InvalidZoneError(
                    zone, f"given to both {seen[zone]!r} and {key!r}")
            seen[zone] = key

    def hold(self, zones: Sequence[int]) -> frozenset[int]:
        """Hold every unowned zone of ``zones``; return those newly held."""
        wanted = sorted({zone for zone in zones
                         if self._low <= zone <= self._high and zone not in self._reserved})

        def work(conn: sqlite3.Connection) -> frozenset[int]:
            added: set[int] = set()
            for zone in wanted:
                row = conn.execute(_STATE_OF, (zone,)).fetchone()
                if row is None:
                    conn.execute(_INSERT_STATE, (zone, "held"))
                elif row[0] == "free":
                    conn.execute(_SET_STATE, ("held", zone))
                else:
                    continue
                added.add(zone)
            return frozenset(added)

        return self._transact(work) if wanted else frozenset()

    def unhold(self, zone: int) -> bool:
        """Free held ``zone`` to the back of the free order; return whether it was held."""

        def work(conn: sqlite3.Connection) -> bool:
            row = conn.execute(_STATE_OF, (zone,)).fetchone()
            if row is None or row[0] != "held":
                return False
            conn.execute(_FREE, (zone,))
            return True

        return self._transact(work)

    # -- reserved zones ---------------------------------------------------

    def _reconcile_reserved(self) -> None:
        stored = self._read(self._stored_reserved)
        if stored != self._reserved:
            self._transact(self._apply_reserved)

    @staticmethod
    def _stored_reserved(conn: sqlite3.Connection) -> frozenset[int]:
        return frozenset(row[0] for row in conn.execute(
            "SELECT zone FROM zone WHERE state = 'reserved'"))

    def _apply_reserved(self, conn: sqlite3.Connection) -> None:
        stored = self._stored_reserved(conn)
        # Where the walk over fresh zones stood before anything changes.
        gap = self._first_gap(conn)
        for zone in sorted(self._reserved - stored):
            row = conn.execute(_STATE_OF, (zone,)).fetchone()
            if row is None:
                conn.execute(_INSERT_STATE, (zone, "reserved"))
            elif row[0] == "owned":
                raise exceptions.ZoneStoreError(
                    self._path, f"refused: zone {zone} is reserved but owned by {row[1]!r}")
            else:
                conn.execute(_SET_STATE, ("reserved", zone))
        for zone in sorted(stored - self._reserved):
            # Below the first fresh zone it was passed over while reserved:
            # it joins the back of the free order.  Above, it is fresh again.
            if zone < gap:
                conn.execute(_FREE, (zone,))
            else:
                conn.execute("DELETE FROM zone WHERE zone = ?", (zone,))

    def _first_gap(self, conn: sqlite3.Connection) -> int:
        gap = self._low
        for (zone,) in conn.execute(_ROWS_FROM, (gap,)):
            if zone != gap:
                break
            gap += 1
        return gap
