"""FileZoneStore: the deprecated JSON document store."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

from oslo_concurrency import lockutils
from oslo_log import log as logging

from conntrack_lib import exceptions
from conntrack_lib.zones.table import ZoneSnapshot

LOG = logging.getLogger(__name__)


class FileZoneStore:
    """Keep a zone space in a JSON file shared by the processes of a host.

    .. deprecated:: 2.0
       Every operation rewrites the whole document, so a store of *n* zones
       costs O(n) per allocation; its lock file is readable by every local
       user, who can then block writers for ever; and it trusts the
       directory it is in.  Use
       :class:`~conntrack_lib.zones.SQLiteZoneStore`, which imports an
       existing document once (its ``migrate_from`` parameter).

    The document holds the mapping, the released zones in release order,
    the held zones, the never-used cursor and the reserved zones (see
    :class:`ZoneSnapshot`).  Every process sharing the file must use the
    same range; a different range is refused.  A zone that was reserved
    when the document was written and is not reserved any more joins the
    back of the free order.

    Writes are atomic: the document goes to a temporary file in the same
    directory, which is fsynced, renamed over the target with
    :func:`os.replace`, and then the directory is fsynced.  A crash at any
    point therefore leaves either the previous or the new document.

    Read-modify-write cycles are guarded by an oslo.concurrency external
    lock named after the file; every process sharing the file must use the
    same ``lock_path``.  A missing file is an empty zone space; a file that
    cannot be decoded or has the wrong shape is refused, never reset.

    :param path: the JSON file; its directory must exist.
    :param lock_path: directory of the lock file; defaults to the
        directory of ``path``.
    """

    persistent = True

    def __init__(self, path: str | os.PathLike[str], lock_path: str | None = None) -> None:
        warnings.warn(
            "FileZoneStore is deprecated: use SQLiteZoneStore(path, migrate_from=...) "
            "which imports the JSON document once",
            DeprecationWarning,
            stacklevel=2,
        )
        self._path = os.path.abspath(os.fspath(path))
        self._dir = os.path.dirname(self._path)
        self._lock_path = lock_path if lock_path is not None else self._dir
        self._lock_name = os.path.basename(self._path) + ".lock"
        self._tmp_prefix = "." + os.path.basename(self._path) + "."
        self._swept = False

    @property
    def path(self) -> str:
        """Return the absolute path of the JSON file."""
        return self._path

    @property
    def location(self) -> str:
        """Return the absolute path of the JSON file."""
        return self._path

    def __repr__(self) -> str:
        return f"FileZoneStore({self._path!r}, lock_path={self._lock_path!r})"

    @contextlib.contextmanager
    def locked(self) -> Iterator[object]:
        """Hold the external (inter-process) lock of this file.

        :returns: a context manager holding the lock while it is entered.
        :raises exceptions.ZoneStoreError: when the lock file cannot be
            created or locked (read-only or full disk).
        """
        with contextlib.ExitStack() as stack:
            try:
                held = stack.enter_context(lockutils.lock(
                    self._lock_name, external=True, lock_path=self._lock_path, do_log=False
                ))
            except OSError as exc:
                raise self._error("cannot lock", exc) from exc
            yield held

    def load(self) -> ZoneSnapshot | None:
        """Return the stored snapshot, or ``None`` when the file is missing.

        :returns: the snapshot the file holds, or ``None``.
        :raises exceptions.ZoneStoreError: when the file cannot be read,
            decoded or has the wrong shape.
        """
        return read_document(self._path)

    def save(self, snapshot: ZoneSnapshot) -> None:
        """Write ``snapshot`` atomically; call it while holding :meth:`locked`.

        :param snapshot: the whole state to store.
        :raises exceptions.ZoneStoreError: when any step of the write fails;
            the previous file is then untouched.
        """
        data = json.dumps(snapshot.to_document(), separators=(",", ":")).encode("utf-8")
        self._sweep_stale_temps()
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=self._tmp_prefix, suffix=".tmp", dir=self._dir)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self._path)
            tmp = None
        except OSError as exc:
            raise self._error("cannot write", exc) from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        try:
            self._fsync_dir()
        except OSError as exc:
            # The rename already published the new state to every reader:
            # failing now would tell the caller "not saved" while other
            # processes see it.  Only its durability across a power loss is
            # in doubt.
            LOG.warning("zone store %s: saved, but syncing its directory failed: %s",
                        self._path, exc)

    def _fsync_dir(self) -> None:
        # Makes the rename itself durable, not only the file's content.
        fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _sweep_stale_temps(self) -> None:
        # Under the lock no other writer is mid-write, so a temporary file
        # left here is debris of a writer killed before its rename.
        if self._swept:
            return
        with contextlib.suppress(OSError):
            for name in os.listdir(self._dir):
                if name.startswith(self._tmp_prefix) and name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self._dir, name))
        self._swept = True

    def _error(self, what: str, exc: OSError) -> exceptions.ZoneStoreError:
        return exceptions.ZoneStoreError(self._path, f"{what}: {exc.strerror or exc}")


def read_document(path: str) -> ZoneSnapshot | None:
    """Return the snapshot in the JSON document at ``path``, or ``None`` if it is missing.

    :param path: the document written by :class:`FileZoneStore`.
    :returns: the snapshot, checked for shape only.
    :raises exceptions.ZoneStoreError: when the file cannot be read,
        decoded or has the wrong shape.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise exceptions.ZoneStoreError(path, f"cannot read: {exc.strerror or exc}") from exc
    return decode_document(raw, path)


def decode_document(raw: bytes, path: str) -> ZoneSnapshot:
    """Return the snapshot in the JSON document ``raw`` read from ``path``.

    :raises exceptions.ZoneStoreError: when it cannot be decoded or has the
        wrong shape.
    """
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_object)
        return ZoneSnapshot.from_document(doc)
    except (ValueError, RecursionError) as exc:
        raise exceptions.ZoneStoreError(path, f"refused: {exc}") from exc


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A repeated key would silently collapse two owners into one.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result

