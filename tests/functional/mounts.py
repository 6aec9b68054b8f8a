"""A private mount namespace for the functional tests, and overlays on /etc in it.

conntrack reads label names from ``/etc/xtables/connlabel.conf`` and nft from
``/etc/connlabel.conf``; neither takes an option naming another file.  Tests
that need labels lay a tmpfs-backed overlay on /etc for their duration, in the
test process's own mount namespace (entered once, at configure time, before
any thread starts), so the host's /etc is never written and every process the
test starts (conntrack, nft, the privsep daemon) sees the same files.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2


class MountError(OSError):
    """A mount operation of the test setup failed."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise MountError(errno, f"{what}: {os.strerror(errno)}")


def _mount_ns() -> int:
    return os.stat("/proc/self/ns/mnt").st_ino


#: The mount namespace this process left (PID 1's may not be readable, even
#: as root, inside a container).
_left: list[int] = []


def is_private() -> bool:
    """Tell whether this process runs in a mount namespace it entered itself."""
    return bool(_left) and _mount_ns() not in _left


def enter_private_mount_namespace() -> None:
    """Move this process into a new mount namespace whose mounts never propagate.

    :raises MountError: when unshare or the remount fails, or threads already
        run (the kernel refuses CLONE_NEWNS to a process with several threads).
    """
    if threading.active_count() > 1:
        raise MountError(0, "a private mount namespace must be entered before threads start")
    libc = _libc()
    before = _mount_ns()
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _left.append(before)
    # Without this, mounts made here would still reach the host through
    # shared peer groups (systemd mounts / shared).
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None),
           "mount --make-rprivate /")


@contextlib.contextmanager
def etc_overlay(files: Mapping[str, str]) -> Iterator[None]:
    """Show ``files`` (paths relative to /etc: text) over /etc while the block runs.

    :raises MountError: in the host's mount namespace (never mounts there) or
        when a mount fails.
    """
    if not is_private():
        raise MountError(0, "refusing to mount over /etc in the host's mount namespace")
    libc = _libc()
    base = tempfile.mkdtemp(prefix="ctlt-etc-")
    # The upper layer lives on tmpfs: the root file system may itself be an
    # overlay, which cannot serve as an upper layer.
    _check(libc.mount(b"tmpfs", base.encode(), b"tmpfs", 0, b"mode=0700"), "mount tmpfs")
    try:
        upper, work = os.path.join(base, "upper"), os.path.join(base, "work")
        os.mkdir(upper)
        os.mkdir(work)
        for relative, text in files.items():
            path = os.path.join(upper, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
        options = f"lowerdir=/etc,upperdir={upper},workdir={work}".encode()
        _check(libc.mount(b"overlay", b"/etc", b"overlay", 0, options), "mount overlay on /etc")
        try:
            yield
        finally:
            _check(libc.umount2(b"/etc", MNT_DETACH), "umount /etc")
    finally:
        _check(libc.umount2(base.encode(), MNT_DETACH), f"umount {base}")
        os.rmdir(base)
