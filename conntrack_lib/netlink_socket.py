"""Delete and create flows through ctnetlink, in batches, from this process.

The one implementation of exact deletes and netlink creates: the privileged
entrypoints of :mod:`conntrack_lib.privileged.netlink` call it in the
privsep daemon, and :class:`~conntrack_lib.executor.ProcessExecutor` calls
it in a process that already holds CAP_NET_ADMIN.  Flows arrive in
primitive form (see :func:`conntrack_lib.netlink.validate_flow` for deletes
and :func:`conntrack_lib.netlink_create.from_primitive` for creates) and
every one of them is validated again here before a socket is opened.  No
process is started.

Entering a namespace: ``setns(2)`` changes the namespace of the calling
thread only, so the socket is created in a dedicated short-lived thread
that joins the namespace and exits; the socket stays bound to the
namespace it was created in.  A namespace that does not exist is an error;
it is never created.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import select
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Final, NamedTuple, TypeVar

from conntrack_lib import commands, constants, exceptions, netlink, netlink_create, netns

#: Requests per ``send``; every acknowledgement of one batch is read before
#: the next batch is sent, so this is also the in-flight window.
DEFAULT_BATCH: Final = 256
MAX_BATCH: Final = 4096
#: Flows per call; bounds the daemon's memory and the reply size.
MAX_FLOWS: Final = 1_000_000
#: Socket buffers asked for with the FORCE variants (root may exceed
#: net.core.rmem_max); the kernel doubles the value it is given.
SOCKET_BUFFER: Final = 4 * 1024 * 1024
#: Upper bound on the kernel's memory charge for one queued acknowledgement
#: (measured: 768 bytes on a 64-bit kernel); sizes the in-flight window.
ACK_TRUESIZE: Final = 1024
#: Seconds to wait for an acknowledgement that the kernel already queued.
RECV_TIMEOUT: Final = 10.0
SOL_NETLINK: Final = 270
NETLINK_CAP_ACK: Final = 10
SO_SNDBUFFORCE: Final = 32
SO_RCVBUFFORCE: Final = 33
CLONE_NEWNET: Final = 0x40000000

_RECV_SIZE: Final = 65536
_T = TypeVar("_T")


class _Request(NamedTuple):
    """What one kind of batched request sends, and whether a lost one may be re-sent."""

    name: str
    msg_type: int
    flags: int
    resend: bool


# A delete re-sent after a lost acknowledgement answers ENOENT at worst.  A
# re-sent create would answer EEXIST for a flow it created itself, so lost
# create acknowledgements are reported as ENOBUFS instead.
_DELETE: Final = _Request("delete", netlink.MSG_CT_DELETE, netlink.REQUEST_FLAGS, True)
_CREATE: Final = _Request("create", netlink_create.MSG_CT_NEW, netlink_create.CREATE_FLAGS,
                          False)


def delete_flows(namespace: str | None, flows: Sequence[Mapping[str, object]],
                 batch_size: int = DEFAULT_BATCH) -> list[int]:
    """Delete exact flows in ``namespace`` and return one errno per flow.

    Every flow is validated again (:func:`conntrack_lib.netlink.validate_flow`)
    before the first message is sent.

    :param namespace: a name under /run/netns, or ``None`` for this process's own.
    :param flows: flows in primitive form.
    :param batch_size: requests per send (1..MAX_BATCH).
    :returns: 0 deleted, ``errno.ENOENT`` not found, any other errno: failed.
    :raises InvalidArgumentError: a flow, the name or the batch size is invalid.
    :raises NamespaceNotFoundError: the namespace does not exist.
    :raises PermissionDeniedError: the kernel refused (no CAP_NET_ADMIN).
    """
    bodies = _validated_bodies(flows, _delete_body)
    return _send_requests(namespace, bodies, batch_size, _DELETE)


def create_flows(namespace: str | None, flows: Sequence[Mapping[str, object]],
                 batch_size: int = DEFAULT_BATCH) -> list[int]:
    """Create flows in ``namespace`` (IPCTNL_MSG_CT_NEW) and return one errno per flow.

    Every flow is rebuilt as a :class:`~conntrack_lib.commands.CreateCommand`
    and validated again before the first message is sent.

    :param namespace: a name under /run/netns, or ``None`` for this process's own.
    :param flows: create commands in primitive form
        (:func:`conntrack_lib.netlink_create.to_primitive`).
    :param batch_size: requests per send (1..MAX_BATCH).
    :returns: 0 created, ``errno.EEXIST`` exists, any other errno: failed.
    :raises InvalidArgumentError: a flow, the name or the batch size is invalid.
    :raises NamespaceNotFoundError: the namespace does not exist.
    :raises PermissionDeniedError: the kernel refused (no CAP_NET_ADMIN).
    """
    bodies = _validated_bodies(flows, _create_body)
    return _send_requests(namespace, bodies, batch_size, _CREATE)


def create_commands(namespace: str | None, creates: Sequence[commands.CreateCommand],
                    batch_size: int = DEFAULT_BATCH) -> list[int]:
    """Create flows from CreateCommand objects, for a caller that is already privileged.

    The commands were validated when they were built and never crossed a
    privilege boundary, so they are encoded directly, without the primitive
    round trip that :func:`create_flows` makes for the daemon.

    :returns: one errno per command, as :func:`create_flows`.
    """
    if not isinstance(creates, (list, tuple)) or len(creates) > MAX_FLOWS:
        raise exceptions.InvalidArgumentError("creates", type(creates).__name__,
                                              f"expected a list of at most {MAX_FLOWS}")
    bodies = [netlink_create.encode_body(command) for command in creates]
    return _send_requests(namespace, bodies, batch_size, _CREATE)


def _send_requests(namespace: str | None, bodies: Sequence[bytes], batch_size: int,
                   request: _Request) -> list[int]:
    batch = _validate_batch_size(batch_size)
    _validate_namespace(namespace)
    if not bodies:
        return []
    with open_socket(namespace) as sock:
        return _exchange(sock, bodies, batch, request)


def _delete_body(flow: dict[str, object]) -> bytes:
    return netlink.encode_body(netlink.validate_flow(flow))


def _create_body(flow: dict[str, object]) -> bytes:
    # encode_body refuses what netlink create does not encode (NAT, labels).
    return netlink_create.encode_body(netlink_create.rebuild(flow))


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------

def _validated_bodies(flows: Sequence[Mapping[str, object]],
                      encode: Callable[[dict[str, object]], bytes]) -> list[bytes]:
    if not isinstance(flows, (list, tuple)):
        raise exceptions.InvalidArgumentError("flows", type(flows).__name__,
                                              "expected a list of flows")
    if len(flows) > MAX_FLOWS:
        raise exceptions.InvalidArgumentError("flows", len(flows),
                                              f"at most {MAX_FLOWS} flows per call")
    return [encode(flow) for flow in flows]


def _validate_batch_size(batch_size: int) -> int:
    if type(batch_size) is not int or not 1 <= batch_size <= MAX_BATCH:
        raise exceptions.InvalidArgumentError("batch_size", batch_size,
                                              f"expected an int in 1..{MAX_BATCH}")
    return batch_size


def _validate_namespace(name: str | None) -> str | None:
    return None if name is None else netns.validate_name(name)


# --------------------------------------------------------------------------
# Socket in the right namespace
# --------------------------------------------------------------------------

def open_socket(namespace: str | None) -> socket.socket:
    name = _validate_namespace(namespace)
    if name is None:
        return _new_socket()
    fd = _open_namespace(name)
    try:
        return _run_in_namespace(fd, name, _new_socket)
    finally:
        os.close(fd)


def _open_namespace(name: str) -> int:
    # The one check the CLI path uses too: no symlink, no blocking open of
    # a FIFO, and the file must be a network namespace.
    return netns.open_namespace(name, ("setns", os.path.join(constants.NETNS_RUN_DIR, name)))


def _namespace_error(name: str, reason: str) -> exceptions.NamespaceNotFoundError:
    return exceptions.NamespaceNotFoundError(
        ("setns", os.path.join(constants.NETNS_RUN_DIR, name)), None, "", reason)


def _run_in_namespace(fd: int, name: str, func: Callable[[], _T]) -> _T:
    """Run ``func`` in a fresh OS thread that first joins the namespace ``fd``."""
    values: list[_T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            _setns(fd, name)
            values.append(func())
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = _os_thread_class()(target=target, name=f"ctnl-setns-{name}", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return values[0]


def _os_thread_class() -> type[threading.Thread]:
    # Under eventlet monkey-patching threading.Thread is a green thread that
    # shares the OS thread of its caller; setns() there would move the whole
    # process.  Use the original module in that case.
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched("thread"):
        thread_class: type[threading.Thread] = patcher.original("threading").Thread
        return thread_class
    return threading.Thread


@functools.cache
def _libc() -> ctypes.CDLL:
    # Python 3.11 has no os.setns; loaded on first use, not at import.
    return ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, name: str) -> None:
    if _libc().setns(fd, CLONE_NEWNET) == 0:
        return
    err = ctypes.get_errno()
    if err == errno.EPERM:
        raise exceptions.PermissionDeniedError(("setns", name), None, "",
                                               os.strerror(err))
    raise _namespace_error(name, f"setns: {os.strerror(err)}")


def _new_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                         netlink.NETLINK_NETFILTER)
    try:
        sock.bind((0, 0))
        # Error acks then carry only the request's header, not its body.
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        _grow_buffer(sock, SO_SNDBUFFORCE, socket.SO_SNDBUF)
        _grow_buffer(sock, SO_RCVBUFFORCE, socket.SO_RCVBUF)
        # Non-blocking: the kernel queues every ack of a send before send
        # returns, so a recv normally finds one; poll only when it does not.
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _grow_buffer(sock: socket.socket, force_option: int, option: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, force_option, SOCKET_BUFFER)
    except PermissionError:
        # Without CAP_NET_ADMIN the kernel caps the size at net.core.*mem_max.
        sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)


# --------------------------------------------------------------------------
# The exchange
# --------------------------------------------------------------------------

def ack_window(sock: socket.socket, batch_size: int) -> int:
    """Return how many requests may be in flight without overrunning ``sock``.

    The kernel answers a whole ``send`` before it returns and drops an
    acknowledgement (setting ENOBUFS) when the receive queue is full, so a
    batch must fit the receive buffer.
    """
    capacity = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // ACK_TRUESIZE
    return max(1, min(batch_size, capacity))


def _exchange(sock: socket.socket, bodies: Sequence[bytes], batch_size: int,
              request: _Request = _DELETE) -> list[int]:
    results = [-1] * len(bodies)
    pending = list(range(len(bodies)))
    window = ack_window(sock, batch_size)
    seq_base = 1
    while pending:
        lost = _send_all(sock, bodies, pending, results, window=window, seq_base=seq_base,
                         request=request)
        seq_base += len(pending)
        if lost and not request.resend:
            for index in lost:
                results[index] = errno.ENOBUFS
            break
        if lost and window == 1:
            raise exceptions.CommandError(("netlink", request.name), None, "",
                                          "acknowledgements lost with a window of 1")
        # An overrun means the window was too large for this socket: halve
        # it and re-send what was not acknowledged.  A re-sent delete of a
        # flow whose first acknowledgement was lost answers ENOENT.
        pending, window = lost, max(1, window // 2) if lost else window
    return results


def _send_all(sock: socket.socket, bodies: Sequence[bytes], indexes: Sequence[int],
              results: list[int], *, window: int, seq_base: int,
              request: _Request = _DELETE) -> list[int]:
    """Send ``indexes`` in windows, fill ``results``; return the unacknowledged ones."""
    lost: list[int] = []
    for start in range(0, len(indexes), window):
        chunk = indexes[start:start + window]
        first_seq = seq_base + start
        sock.send(netlink.encode_batch((bodies[i] for i in chunk), first_seq,
                                       request.msg_type, request.flags))
        acks = read_acks(sock, len(chunk))
        _record(acks, chunk, first_seq, results, request.name)
        lost.extend(i for i in chunk if results[i] < 0)
    return lost


def _record(acks: Sequence[netlink.Ack], chunk: Sequence[int], first_seq: int,
            results: list[int], name: str = "delete") -> None:
    for seq, err in acks:
        position = seq - first_seq
        if 0 <= position < len(chunk):
            if err == errno.EPERM:
                raise exceptions.PermissionDeniedError(
                    ("netlink", name), None, "", os.strerror(err))
            results[chunk[position]] = err


def read_acks(sock: socket.socket, expected: int) -> list[netlink.Ack]:
    """Read up to ``expected`` acknowledgements; stop early after an overrun."""
    buf = bytearray(_RECV_SIZE)
    acks: list[netlink.Ack] = []
    while len(acks) < expected:
        try:
            size = sock.recv_into(buf)
        except BlockingIOError:
            _wait_readable(sock)
            continue
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
            # Some acks were dropped; take what is still queued, then stop.
            acks.extend(_drain(sock, buf))
            break
        acks.extend(netlink.iter_acks(memoryview(buf)[:size]))
    return acks


def _wait_readable(sock: socket.socket) -> None:
    readable, _, _ = select.select([sock], [], [], RECV_TIMEOUT)
    if not readable:
        raise exceptions.CommandTimeoutError(
            ("netlink", "recv"), None, "", f"no acknowledgement within {RECV_TIMEOUT} s")


def _drain(sock: socket.socket, buf: bytearray) -> list[netlink.Ack]:
    acks: list[netlink.Ack] = []
    while True:
        try:
            size = sock.recv_into(buf)
        except BlockingIOError:
            return acks
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                continue
            raise
        acks.extend(netlink.iter_acks(memoryview(buf)[:size]))


__all__ = ["DEFAULT_BATCH", "MAX_BATCH", "ack_window", "create_commands", "create_flows",
           "delete_flows", "open_socket", "read_acks"]
