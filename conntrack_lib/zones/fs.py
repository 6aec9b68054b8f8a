"""File-system checks of a zone store: whose directory, whose file, who holds it.

A zone store decides which conntrack zone a port's flows live in, so a
local user who can replace, read or lock it can move flows between owners or
stop every allocation.  The store therefore lives in a directory owned by the
caller that nobody else can write (nor any ancestor, unless it is sticky), in
a regular file of the caller's with mode 0600, reached without following a
symbolic link.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable

from conntrack_lib import exceptions

#: Permission bits that let another user write a directory.
_FOREIGN_WRITE = stat.S_IWGRP | stat.S_IWOTH
#: Permission bits that let another user touch a file at all.
_FOREIGN_ANY = stat.S_IRWXG | stat.S_IRWXO
#: Where the kernel lists the file locks of every process.
PROC_LOCKS = "/proc/locks"


def _error(location: str, reason: str) -> exceptions.ZoneStoreError:
    return exceptions.ZoneStoreError(location, reason)


def open_private_dir(path: str, location: str) -> int:
    """Open the directory ``path`` and check that only the caller can write it.

    The last component is opened with ``O_NOFOLLOW``; the directory must be
    owned by the effective uid and not group- or world-writable, and every
    ancestor must be owned by root or the caller and not writable by others
    unless it is sticky (as ``/tmp`` is).

    :param path: the directory, absolute.
    :param location: the store's path, to name it in errors.
    :returns: a descriptor of the directory, for ``dir_fd`` calls.
    :raises exceptions.ZoneStoreError: when it is missing, a symbolic link,
        not a directory, or writable by another user.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        why = "is a symbolic link" if os.path.islink(path) else _why(exc)
        raise _error(location, f"directory {path}: {why}") from exc
    try:
        st = os.fstat(fd)
        euid = os.geteuid()
        if st.st_uid != euid:
            raise _error(location, f"directory {path} is owned by uid {st.st_uid}, "
                                   f"not by this process's uid {euid}")
        if st.st_mode & _FOREIGN_WRITE:
            raise _error(location, f"directory {path} is group- or world-writable "
                                   f"(mode {stat.S_IMODE(st.st_mode):04o})")
        check_ancestors(os.path.realpath(path), location)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_ancestors(path: str, location: str) -> None:
    """Refuse a directory another user could rename away by writing an ancestor.

    :param path: the directory, with no symbolic link in it.
    :param location: the store's path, to name it in errors.
    :raises exceptions.ZoneStoreError: when an ancestor is owned by another
        user than root and the caller, or writable by others and not sticky.
    """
    euid = os.geteuid()
    parent = os.path.dirname(path)
    while True:
        st = os.lstat(parent)
        if st.st_uid not in (0, euid):
            raise _error(location, f"ancestor {parent} is owned by uid {st.st_uid}")
        if st.st_mode & _FOREIGN_WRITE and not st.st_mode & stat.S_ISVTX:
            raise _error(location, f"ancestor {parent} is writable by other users "
                                   f"and not sticky (mode {stat.S_IMODE(st.st_mode):04o})")
        if parent == os.path.dirname(parent):
            return
        parent = os.path.dirname(parent)


def entry_status(dir_fd: int, name: str) -> os.stat_result | None:
    """Return the ``lstat`` of ``name`` in the directory, or ``None`` if it is missing."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def check_private_file(dir_fd: int, name: str, location: str) -> os.stat_result:
    """Check, without following a link, that ``name`` is the caller's private file.

    The file is opened with ``O_PATH | O_NOFOLLOW``: such a descriptor
    neither reads the file nor, when closed, drops the POSIX locks SQLite
    holds on it in this process.

    :returns: the file's status.
    :raises exceptions.ZoneStoreError: when it is a symbolic link, not a
        regular file, not owned by the caller, accessible to group or
        others, or has more than one name.
    """
    shown = f"{name!r}"
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        raise _error(location, f"{shown}: {_why(exc)}") from exc
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    check_private_status(st, shown, location)
    return st


def check_private_status(st: os.stat_result, shown: str, location: str) -> None:
    """Raise unless ``st`` describes a regular file only the caller can use.

    :raises exceptions.ZoneStoreError: otherwise.
    """
    if stat.S_ISLNK(st.st_mode):
        raise _error(location, f"{shown} is a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        raise _error(location, f"{shown} is not a regular file")
    if st.st_uid != os.geteuid():
        raise _error(location, f"{shown} is owned by uid {st.st_uid}, "
                               f"not by this process's uid {os.geteuid()}")
    if st.st_mode & _FOREIGN_ANY:
        raise _error(location, f"{shown} is accessible to other users "
                               f"(mode {stat.S_IMODE(st.st_mode):04o}); it must be 0600")
    if st.st_nlink != 1:
        raise _error(location, f"{shown} has {st.st_nlink} hard links")


def create_private_file(dir_fd: int, name: str) -> None:
    """Create the empty file ``name`` with mode 0600, failing if anything is there."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    try:
        # The umask may have removed bits we need; it never adds any.
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def sync_entry(dir_fd: int, name: str) -> None:
    """Flush the content of ``name`` to disk (a file nobody has locked)."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(dir_fd: int, source: str, target: str) -> bool:
    """Give ``source`` the name ``target`` unless ``target`` exists; drop ``source``.

    :returns: whether ``target`` is now ``source``'s content (False when
        another process published its own first).
    """
    try:
        os.link(source, target, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        return False
    finally:
        remove_quietly(dir_fd, source)
    os.fsync(dir_fd)
    return True


def remove_quietly(dir_fd: int, *names: str) -> None:
    """Remove the named entries of the directory that exist."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)


def lock_holders(paths: Iterable[str], proc_locks: str = PROC_LOCKS) -> list[str]:
    """Return who else holds a POSIX or flock lock on any of ``paths``.

    :param paths: the files to look for (missing ones are skipped).
    :param proc_locks: the kernel's lock list, ``/proc/locks``.
    :returns: ``"pid N (command)"`` for every other process holding a lock,
        sorted; empty when nobody does or the list is unreadable.
    """
    inodes = set()
    for path in paths:
        with contextlib.suppress(OSError):
            st = os.stat(path)
            inodes.add((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino))
    try:
        with open(proc_locks, encoding="ascii", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    pids = {pid for pid, inode in map(_parse_lock_line, lines)
            if inode in inodes and pid not in (None, os.getpid())}
    return [f"pid {pid} ({_command(pid)})" for pid in sorted(p for p in pids if p is not None)]


def _parse_lock_line(line: str) -> tuple[int | None, tuple[int, int, int] | None]:
    # "1: POSIX  ADVISORY  WRITE 1234 fd:01:5678 120 120"; waiters have "->".
    fields = line.split()
    if len(fields) < 6 or fields[1] == "->":
        return None, None
    try:
        pid = int(fields[4])
        major, minor, ino = fields[5].split(":")
        return (pid if pid > 0 else None), (int(major, 16), int(minor, 16), int(ino))
    except ValueError:
        return None, None


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as handle:
            return handle.read().strip() or "?"
    except OSError:
        return "?"


def _why(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "is a symbolic link"
    if exc.errno == errno.ENOENT:
        return "does not exist"
    if exc.errno == errno.ENOTDIR:
        return "is not a directory"
    return exc.strerror or str(exc)
