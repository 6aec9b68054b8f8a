"""Faults of the zone store's disk, injected at every step of a write.

Each failing step (creating the temporary file, writing it, syncing it,
renaming it over the document, taking the lock, reading the document) is
made to fail with the errors a full, read-only or broken disk gives.  The
promise under test: the caller gets :class:`ZoneStoreError`, the document
and the allocator stay as they were, no temporary file is left, and once
the disk recovers the next operation behaves as if the failure never
happened.  A truncated document is refused at every possible cut, never
silently reset.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from conntrack_lib import exceptions
from conntrack_lib.zones import FileZoneStore, ZoneAllocator
from conntrack_lib.zones import file_store as zones

# FileZoneStore is deprecated; these tests keep covering it until it goes.
pytestmark = pytest.mark.filterwarnings("ignore:FileZoneStore is deprecated:DeprecationWarning")

RANGE = (100, 120)
#: The errors a full disk, a quota, a read-only mount and a dying disk give.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)


def disk_error(code: int) -> OSError:
    """Return the OSError the kernel reports for ``code``."""
    return OSError(code, os.strerror(code))


def store_in(tmp_path: Path) -> FileZoneStore:
    """Return a store whose lock lives apart from the document, as deployments do."""
    locks = tmp_path / "locks"
    locks.mkdir(exist_ok=True)
    return FileZoneStore(tmp_path / "zones.json", lock_path=str(locks))


def populated(tmp_path: Path) -> ZoneAllocator:
    """Return an allocator with owners, a released zone and a held zone on disk."""
    allocator = ZoneAllocator(RANGE, store=store_in(tmp_path))
    for key in ("port-a", "port-b", "port-c", "port-d"):
        allocator.allocate(key)
    allocator.release("port-b")
    allocator.hold([110])
    return allocator


class FailingWriter(io.RawIOBase):
    """A file object whose writes fail, standing in for a full disk."""

    def __init__(self, fd: int, code: int) -> None:
        self.fd = fd
        self.code = code

    def writable(self) -> bool:
        """Return True: the file was opened for writing."""
        return True

    def write(self, data: Any) -> int:
        """Raise the disk's error instead of writing."""
        raise disk_error(self.code)

    def close(self) -> None:
        """Close the descriptor mkstemp opened."""
        if not self.closed:
            os.close(self.fd)
        super().close()


def fail_at(step: str, code: int) -> contextlib.AbstractContextManager[Any]:
    """Return a patch that makes ``step`` of a store write fail with ``code``."""
    error = disk_error(code)
    if step == "create":
        return mock.patch.object(zones.tempfile, "mkstemp", side_effect=error)
    if step == "write":
        return mock.patch.object(zones.os, "fdopen",
                                 side_effect=lambda fd, mode: FailingWriter(fd, code))
    if step == "sync":
        return mock.patch.object(zones.os, "fsync", side_effect=error)
    return mock.patch.object(zones.os, "replace", side_effect=error)


MUTATIONS: dict[str, Callable[[ZoneAllocator], object]] = {
    "allocate": lambda a: a.allocate("port-new"),
    "release": lambda a: a.release("port-a"),
    "hold": lambda a: a.hold([115]),
    "unhold": lambda a: a.unhold(110),
    "restore": lambda a: a.restore({"port-old": 118}),
}


def state(allocator: ZoneAllocator) -> tuple[dict[str, int], frozenset[int]]:
    """Return what a caller can observe of ``allocator``: owners and held zones."""
    return allocator.items(), allocator.held()


def temporaries(directory: Path) -> list[str]:
    """Return the temporary files a writer left in ``directory``."""
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


@pytest.mark.parametrize("code", DISK_ERRORS, ids=errno.errorcode.get)
@pytest.mark.parametrize("step", ["create", "write", "sync", "rename"])
def test_failed_write_changes_nothing(tmp_path: Path, step: str, code: int) -> None:
    allocator = populated(tmp_path)
    path = tmp_path / "zones.json"
    stored = path.read_bytes()
    before = state(allocator)
    with fail_at(step, code):
        for name, mutate in MUTATIONS.items():
            with pytest.raises(exceptions.ZoneStoreError) as caught:
                mutate(allocator)
            assert os.strerror(code) in caught.value.reason, name
            assert caught.value.path == str(path)
            assert state(allocator) == before, f"{name} changed the allocator"
    assert path.read_bytes() == stored
    assert temporaries(tmp_path) == []


@pytest.mark.parametrize("step", ["create", "write", "sync", "rename"])
def test_recovered_disk_behaves_as_if_nothing_failed(tmp_path: Path, step: str) -> None:
    for name in ("faulty", "clean"):
        (tmp_path / name).mkdir()
    faulty, clean = populated(tmp_path / "faulty"), populated(tmp_path / "clean")
    with fail_at(step, errno.ENOSPC):
        for mutate in MUTATIONS.values():
            with pytest.raises(exceptions.ZoneStoreError):
                mutate(faulty)
    for mutate in MUTATIONS.values():
        assert mutate(faulty) == mutate(clean)
    assert state(faulty) == state(clean)
    # A fresh process reads what the recovered one wrote.
    reread = ZoneAllocator(RANGE, store=store_in(tmp_path / "faulty"))
    assert state(reread) == state(clean)


def test_first_write_on_a_full_disk_creates_nothing(tmp_path: Path) -> None:
    allocator = ZoneAllocator(RANGE, store=store_in(tmp_path))
    with fail_at("write", errno.ENOSPC), pytest.raises(exceptions.ZoneStoreError):
        allocator.allocate("port-a")
    assert not (tmp_path / "zones.json").exists()
    assert temporaries(tmp_path) == []
    assert allocator.items() == {}
    # No zone was burnt by the failure.
    assert allocator.allocate("port-a") == RANGE[0]


def test_unreadable_document_is_a_store_error(tmp_path: Path) -> None:
    allocator = populated(tmp_path)
    before = state(allocator)
    broken = mock.patch.object(zones, "open", create=True, side_effect=disk_error(errno.EIO))
    with broken:
        for call in (allocator.items, lambda: allocator.allocate("port-new"),
                     lambda: ZoneAllocator(RANGE, store=store_in(tmp_path))):
            with pytest.raises(exceptions.ZoneStoreError, match="cannot read"):
                call()
    assert state(allocator) == before


def test_lock_that_cannot_be_taken_is_a_store_error(tmp_path: Path) -> None:
    # The default lock sits beside the document: on a read-only disk the
    # lock file is the first thing that cannot be opened.
    allocator = populated(tmp_path)
    before = state(allocator)
    with mock.patch.object(zones.lockutils, "lock", side_effect=disk_error(errno.EROFS)):
        for name, mutate in MUTATIONS.items():
            with pytest.raises(exceptions.ZoneStoreError):
                mutate(allocator)
            assert state(allocator) == before, name


def test_directory_sync_failure_never_contradicts_the_document(tmp_path: Path) -> None:
    # The rename has already published the new document when the
    # directory cannot be synced: the caller must not be told "nothing was
    # allocated" while every other process already sees the allocation.
    allocator = populated(tmp_path)
    path = tmp_path / "zones.json"
    real_fsync = os.fsync
    calls = iter(range(1_000))

    def directory_sync_fails(fd: int) -> None:
        if next(calls) % 2:  # the second fsync of each write is the directory's
            raise disk_error(errno.EIO)
        real_fsync(fd)

    with mock.patch.object(zones.os, "fsync", side_effect=directory_sync_fails):
        try:
            zone: int | None = allocator.allocate("port-new")
        except exceptions.ZoneStoreError:
            zone = None
    on_disk = ZoneAllocator(RANGE, store=store_in(tmp_path)).items()
    assert on_disk.get("port-new") == zone, (
        f"allocate reported {zone}, the document at {path} says {on_disk.get('port-new')}")


# -- truncation -------------------------------------------------------------


@pytest.fixture
def document(tmp_path: Path) -> Iterator[bytes]:
    """Yield the bytes of a valid document written to ``tmp_path``."""
    populated(tmp_path)
    yield (tmp_path / "zones.json").read_bytes()


def test_every_truncation_is_refused_and_left_alone(tmp_path: Path, document: bytes) -> None:
    path = tmp_path / "zones.json"
    assert len(document) > 100
    for cut in range(len(document)):
        path.write_bytes(document[:cut])
        with pytest.raises(exceptions.ZoneStoreError) as caught:
            ZoneAllocator(RANGE, store=store_in(tmp_path))
        assert caught.value.path == str(path), cut
        assert path.read_bytes() == document[:cut], f"cut at {cut} was rewritten"


def test_truncation_under_a_running_allocator_is_refused(tmp_path: Path,
                                                         document: bytes) -> None:
    allocator = ZoneAllocator(RANGE, store=store_in(tmp_path))
    path = tmp_path / "zones.json"
    half = document[: len(document) // 2]
    path.write_bytes(half)
    for call in (lambda: allocator.allocate("port-new"), lambda: allocator.release("port-a"),
                 lambda: allocator.hold([115]), lambda: allocator.get("port-a"),
                 allocator.items, allocator.held):
        with pytest.raises(exceptions.ZoneStoreError, match="refused"):
            call()
    assert path.read_bytes() == half, "a damaged document must never be reset"
    # Once an operator restores the document, everything is back.
    path.write_bytes(document)
    assert allocator.items() == {"port-a": 100, "port-c": 102, "port-d": 103}
    assert allocator.held() == frozenset({110})
