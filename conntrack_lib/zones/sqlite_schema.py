"""The SQLite zone store's schema: creating it, and refusing any other file.

One table holds every zone that is not fresh (never handed out), one row per
zone, so a zone is in exactly one state at a time (the primary key), owned
by at most one key and a key owns at most one zone (a unique index on
``owner``), and the free order is a unique sequence number (``freed``).
The CHECK constraints tie each state to its columns.  A file is ours when
its ``application_id`` is :data:`APPLICATION_ID`, its ``user_version`` is a
schema version we know and its objects are exactly ours.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Mapping, Set

from conntrack_lib import exceptions
from conntrack_lib.zones.validation import MAX_KEY_LENGTH

#: Marks the file as a conntrack_lib zone store (``"CTZS"``).
APPLICATION_ID = 0x43545A53
#: Version of the schema this library writes; a newer one is refused.
SCHEMA_VERSION = 1
#: Value of ``meta.format``.
FORMAT_NAME = "conntrack_lib.zones"
#: The smallest pages SQLite allows.  Every commit appends each page it
#: changed, whole, to the WAL, and the next checkpoint flushes the WAL to
#: disk.  A single allocation changes 3 to 4 pages on average (its table and
#: owner-index leaves, and the splits): 1.6 to 2.0 KB of WAL at 512 bytes a
#: page against 2.7 to 3.2 KB at 1,024 (5,000 keys, sequential or random).
#: Stores created with another size keep it.
PAGE_SIZE = 512
#: Bytes of WAL before a checkpoint copies its pages into the database.
AUTOCHECKPOINT_BYTES = 4 * 1024 * 1024

# The state CHECK is a chain of ORs: an IN list builds a small table for
# every row checked, which made bulk inserts several times slower.
_TABLES = """
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE zone (
    zone  INTEGER PRIMARY KEY CHECK (zone BETWEEN {low} AND {high}),
    state TEXT NOT NULL CHECK (state = 'owned' OR state = 'free' OR state = 'held'
                               OR state = 'reserved'),
    owner TEXT CHECK (owner IS NULL OR length(owner) BETWEEN 1 AND {max_key}),
    freed INTEGER,
    CHECK ((state = 'owned') = (owner IS NOT NULL)),
    CHECK ((state = 'free') = (freed IS NOT NULL))
);
CREATE UNIQUE INDEX zone_owner ON zone (owner) WHERE owner IS NOT NULL;
CREATE UNIQUE INDEX zone_free_order ON zone (freed) WHERE freed IS NOT NULL;
"""

#: (type, name) of every object of the schema.
OBJECTS = frozenset({
    ("table", "meta"),
    ("table", "zone"),
    ("index", "zone_owner"),
    ("index", "zone_free_order"),
})


def uri(path: str, mode: str) -> str:
    """Return the URI opening ``path`` in ``mode`` (``ro``, ``rw`` or ``peek``; never create).

    ``peek`` reads the main file alone, as immutable: no lock, no ``-wal`` or
    ``-shm`` file is created, so a file that is not ours is not touched.
    """
    if mode == "peek":
        return f"file:{urllib.parse.quote(path)}?mode=ro&immutable=1"
    return f"file:{urllib.parse.quote(path)}?mode={mode}"


def connect(path: str, mode: str, timeout: float) -> sqlite3.Connection:
    """Open ``path`` (which must exist) without an implicit transaction.

    :param path: the database.
    :param mode: ``ro`` or ``rw``.
    :param timeout: seconds to wait for a lock before ``database is locked``.
    :returns: the connection, with triggers and views unable to call
        functions (``trusted_schema=OFF``).
    """
    conn = sqlite3.connect(uri(path, mode), uri=True, timeout=timeout, isolation_level=None,
                           check_same_thread=False, cached_statements=64)
    try:
        conn.execute("PRAGMA trusted_schema = OFF")
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def create(conn: sqlite3.Connection, low: int, high: int, meta: Mapping[str, str]) -> None:
    """Create the schema for ``low..high`` in an open transaction of an empty database.

    :param conn: the connection, inside ``BEGIN IMMEDIATE``.
    :param low: lowest zone of the range (a validated int).
    :param high: highest zone of the range (a validated int).
    :param meta: extra ``meta`` rows (e.g. where a migration came from).
    """
    # Validated ints only: the range becomes a CHECK constraint of the table.
    ddl = _TABLES.format(low=int(low), high=int(high), max_key=MAX_KEY_LENGTH)
    for statement in filter(None, (part.strip() for part in ddl.split(";"))):
        conn.execute(statement)
    rows = {"format": FORMAT_NAME, "low": str(low), "high": str(high), **meta}
    conn.executemany("INSERT INTO meta (name, value) VALUES (?, ?)", sorted(rows.items()))
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def check_identity(conn: sqlite3.Connection, location: str) -> None:
    """Check, from the main file alone, that it is a zone store of a known version.

    :param conn: a ``peek`` connection (see :func:`uri`).
    :param location: the store's path, to name it in errors.
    :raises exceptions.ZoneStoreError: for a file that is not an SQLite
        database, another application's database or a newer or unknown
        schema version.
    """
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        # The main file alone can be mid-checkpoint (a writer was killed, or
        # is copying WAL pages now): its header still says whose it is, and
        # the read-only connection that follows validates it with the WAL.
        if _header_names_a_store(location):
            return
        raise exceptions.ZoneStoreError(location, f"unreadable database: {exc}") from exc
    _check_identity(app_id, version, OBJECTS if tables else set(), location)


def _header_names_a_store(path: str) -> bool:
    """Tell whether the 100-byte SQLite header of ``path`` carries our application id."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except OSError:
        return False
    return (len(header) == 100 and header.startswith(b"SQLite format 3\x00")
            and int.from_bytes(header[68:72], "big") == APPLICATION_ID)


def validate(conn: sqlite3.Connection, location: str) -> tuple[int, int]:
    """Check that ``conn`` is a sound zone store of a known version; return its range.

    Only reads: a refused file is left as it was.

    :param conn: a read-only connection to the file.
    :param location: the store's path, to name it in errors.
    :returns: ``(low, high)`` the store was created for.
    :raises exceptions.ZoneStoreError: for a file that is not an SQLite
        database, another application's database, a newer or unknown
        schema version, missing or extra objects, or a damaged file.
    """
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        objects = {tuple(row) for row in conn.execute(
            "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")}
        _check_identity(app_id, version, objects, location)
        meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as exc:
        raise exceptions.ZoneStoreError(location, f"unreadable database: {exc}") from exc
    if problems != ["ok"]:
        raise exceptions.ZoneStoreError(location, f"damaged database: {'; '.join(problems[:3])}")
    return _range_of(meta, location)


def _check_identity(app_id: int, version: int, objects: Set[tuple[str, ...]],
                    location: str) -> None:
    if app_id != APPLICATION_ID:
        what = ("an empty database (a truncated file?)" if not objects and app_id == 0
                else f"another application's database (application_id {app_id:#x})")
        raise exceptions.ZoneStoreError(location, f"refused: {what}, not a zone store")
    if version > SCHEMA_VERSION:
        raise exceptions.ZoneStoreError(
            location, f"refused: schema version {version} is newer than this library's "
            f"{SCHEMA_VERSION}; upgrade conntrack_lib")
    if version != SCHEMA_VERSION:
        raise exceptions.ZoneStoreError(location, f"refused: unknown schema version {version}")
    if objects != OBJECTS:
        found = ", ".join(sorted(f"{kind} {name}" for kind, name in objects))
        raise exceptions.ZoneStoreError(location, f"refused: foreign schema ({found})")


def _range_of(meta: Mapping[str, str], location: str) -> tuple[int, int]:
    if meta.get("format") != FORMAT_NAME:
        raise exceptions.ZoneStoreError(location, f"refused: format is not {FORMAT_NAME!r}")
    try:
        return int(meta["low"]), int(meta["high"])
    except (KeyError, ValueError) as exc:
        raise exceptions.ZoneStoreError(location, "refused: no valid range in meta") from exc
