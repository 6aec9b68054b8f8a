"""SQLiteZoneStore against another local user, a full disk and a real kernel table."""

from __future__ import annotations

import errno
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conntrack_lib import exceptions
from conntrack_lib.executor import ProcessExecutor
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.zones import SQLiteZoneStore, ZoneAllocator

pytestmark = pytest.mark.functional

NOBODY = 65534
MOUNT = "/usr/bin/mount"
UMOUNT = "/usr/bin/umount"

# Runs as nobody: tries every way a local user could read or lock the store,
# reports what the kernel said, then stays alive (holding whatever it got).
INTRUDER = """
import fcntl, os, sqlite3, sys, time
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
path = sys.argv[1]
results = []
for name in (path, path + "-wal", path + "-shm"):
    try:
        fd = os.open(name, os.O_RDONLY)
    except OSError as exc:
        results.append(f"{os.path.basename(name)}:{exc.errno}")
        continue
    fcntl.lockf(fd, fcntl.LOCK_SH)
    results.append(f"{os.path.basename(name)}:locked")
try:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.1)
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM zone").fetchone()
    results.append("sqlite:reading")
except sqlite3.Error as exc:
    results.append("sqlite:refused")
print(" ".join(results), flush=True)
time.sleep(600)
"""


def test_another_user_can_neither_read_nor_block_the_store(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)  # others may traverse: the file's own mode must stop them
    store_dir = tmp_path / "store"
    store_dir.mkdir(mode=0o755)
    path = store_dir / "zones.db"
    alloc = ZoneAllocator((1, 100), store=SQLiteZoneStore(path, timeout=1.0))
    alloc.allocate("a")
    intruder = subprocess.Popen([sys.executable, "-c", INTRUDER, str(path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert intruder.stdout is not None
        report = intruder.stdout.readline().split()
        assert report == [f"zones.db:{errno.EACCES}", f"zones.db-wal:{errno.EACCES}",
                          f"zones.db-shm:{errno.EACCES}", "sqlite:refused"], report
        assert intruder.poll() is None  # still there, holding nothing
        began = time.monotonic()
        assert alloc.allocate_many([f"k{n}" for n in range(50)])["k49"] == 51
        assert alloc.release("a") == 1
        assert time.monotonic() - began < 1.0
    finally:
        intruder.kill()
        intruder.communicate(timeout=10)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """Yield a private directory on a fresh 256 KiB tmpfs; unmount it afterwards."""
    tmp_path.chmod(0o700)
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run([MOUNT, "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount)],
                   check=True, capture_output=True)
    try:
        yield mount
    finally:
        # Lazy: a connection the garbage collector has not closed yet keeps it busy.
        subprocess.run([UMOUNT, "--lazy", str(mount)], check=True, capture_output=True)


def test_a_full_disk_refuses_the_change_and_keeps_the_state(small_disk: Path) -> None:
    path = small_disk / "zones.db"
    store = SQLiteZoneStore(path)
    alloc = ZoneAllocator((1, 65535), store=store)
    assert alloc.allocate_many(["a", "b"]) == {"a": 1, "b": 2}
    with open(small_disk / "filler", "wb", buffering=0) as handle, \
            pytest.raises(OSError):
        while True:
            handle.write(b"\0" * 4096)
    with pytest.raises(exceptions.ZoneStoreError, match="full"):
        alloc.allocate_many([f"k{n}" for n in range(20000)])
    assert alloc.items() == {"a": 1, "b": 2}
    (small_disk / "filler").unlink()
    assert alloc.allocate("c") == 3, "the failed transaction must not burn a zone"
    reopened = SQLiteZoneStore(path)
    assert ZoneAllocator((1, 65535), store=reopened).items() == {"a": 1, "b": 2, "c": 3}
    for each in (store, reopened):
        each.close()  # the tmpfs is unmounted next


def test_zones_with_live_flows_are_held_across_a_restart(ns: str, tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    path = tmp_path / "zones.db"
    seed = ConntrackHelper(namespace=ns, executor=ProcessExecutor())
    seed.create_entries([{"proto": "udp", "src": "10.1.0.1", "dst": "10.1.0.2",
                          "sport": 1000 + z, "dport": 53, "timeout": 600, "zone": z}
                         for z in (21, 23)])
    first = ConntrackHelper(namespace=ns, executor=ProcessExecutor(), zone_range=(20, 26),
                            zone_store=SQLiteZoneStore(path))
    assert first.allocate_zones(["p0", "p1", "p2"]) == {"p0": 20, "p1": 22, "p2": 24}
    # A restarted agent keeps its owners and still holds the orphaned zones.
    second = ConntrackHelper(namespace=ns, executor=ProcessExecutor(), zone_range=(20, 26),
                             zone_store=SQLiteZoneStore(path))
    assert second.allocate_zones(["p1", "p3", "p4"]) == {"p1": 22, "p3": 25, "p4": 26}
    assert second.allocator.held() == frozenset({21, 23})
    with pytest.raises(exceptions.ZoneExhaustedError):
        second.allocate_zone("p5")
    assert second.flush_zone(23) == 1
    assert second.allocate_zone("p5") == 23
