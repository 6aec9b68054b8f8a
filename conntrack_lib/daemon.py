"""Start, watch and stop the privsep daemon: the agent's side of the channel.

Nothing here is a privileged entrypoint.  :class:`ConntrackPrivContext` is
the class of ``conntrack_lib.privileged.default``, the one context whose
entrypoints run as root; the code below decides how its daemon is started
and what happens when it dies.  The context differs from a plain
``PrivContext`` in two ways, both about a daemon that died:

* every (re)start picks its own method: fork when this process is root and
  no ``helper_command`` is configured, the helper command otherwise.  Plain
  oslo.privsep restarts a dead daemon with the helper command even when it
  was forked, which fails without sudo.
* when the daemon dies with unread data the client's socket gets ECONNRESET;
  plain oslo.privsep's reader thread then dies silently and every pending
  call waits forever.  Our channels fail the pending calls instead and mark
  themselves stopped, so the next call starts a new daemon.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

from oslo_log import log as logging
from oslo_privsep import comm, priv_context
from oslo_privsep import daemon as privsep_daemon

LOG = logging.getLogger(__name__)


class _FailPendingOnReset:
    """Mixin for privsep client channels: a reset socket fails pending calls."""

    lock: threading.Lock
    outstanding_msgs: dict[str, comm.Future]
    running: bool

    def _reader_main(self, reader: comm.Deserializer) -> None:
        try:
            super()._reader_main(reader)  # type: ignore[misc]
        except OSError as err:
            # The executor restarts the daemon and logs that at WARNING.
            LOG.debug("privsep channel lost: %s", err)
            # Plain OSError, not ConnectionResetError: the request may have
            # reached the daemon, so callers must not assume it did not.
            lost = OSError(f"privsep daemon connection lost: {err}")
            with self.lock:
                for mbox in self.outstanding_msgs.values():
                    mbox.set_exception(lost)
                self.running = False


class _ForkingChannel(_FailPendingOnReset, privsep_daemon._ClientChannel):  # type: ignore[misc]
    """Daemon started by fork (this process is already root).

    Unlike oslo.privsep's own forking channel it keeps the daemon's pid, so
    a daemon that died or was stopped can be reaped instead of lingering as
    a zombie of the agent (see :func:`reap`).
    """

    def __init__(self, context: ConntrackPrivContext) -> None:
        ours, theirs = socket.socketpair()
        for end in (ours, theirs):
            end.setblocking(True)
            end.set_inheritable(False)  # no conntrack child may hold the channel
        # Flush first so buffered output is not written twice after the fork.
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the daemon
            _serve(theirs, ours, context)
        theirs.close()
        self.pid = pid
        super().__init__(ours, context)


def _serve(sock: socket.socket, peer: socket.socket, context: ConntrackPrivContext) -> None:
    """Run the privileged daemon in the forked child; never return.

    Whatever happens, the child ends here: an exception must not unwind
    into the caller's code, which would then run a second time as root.
    """
    code = 1
    try:
        privsep_daemon.un_monkey_patch()
        # Before any thread exists and before the daemon drops CAP_SETPCAP:
        # every later thread, and so every child, inherits the small set.
        from conntrack_lib.privileged import bounding  # noqa: PLC0415 - daemon only

        bounding.drop_bounding_set()
        channel = comm.ServerChannel(sock)
        peer.close()
        privsep_daemon.replace_logging(
            privsep_daemon.PrivsepLogHandler(channel, processName=str(context)))
        privsep_daemon.Daemon(channel, context=context).run()
        code = 0
    finally:
        os._exit(code)


#: Forked daemons stopped but not yet reaped.
_unreaped: set[int] = set()


def reap(channel: object, wait: float = 1.0) -> None:
    """Collect the exit status of a stopped forked daemon (and older ones).

    Only pids this module forked are waited for, never other children of
    the agent.  A daemon still shutting down after ``wait`` seconds is
    collected by a later call.
    """
    pid = getattr(channel, "pid", None)
    if isinstance(pid, int):
        _unreaped.add(pid)
    deadline = time.monotonic() + wait
    while _unreaped:
        for child in list(_unreaped):
            try:
                done, _ = os.waitpid(child, os.WNOHANG)
            except ChildProcessError:
                done = child  # already collected elsewhere
            if done:
                _unreaped.discard(child)
        if not _unreaped or time.monotonic() >= deadline:
            return
        time.sleep(0.01)


class _HelperChannel(_FailPendingOnReset, privsep_daemon.RootwrapClientChannel):  # type: ignore[misc]
    """Daemon started through ``helper_command`` (sudo, rootwrap)."""


class ConntrackPrivContext(priv_context.PrivContext):  # type: ignore[misc]
    """A privsep context that chooses its start method on every start."""

    channel: _ForkingChannel | _HelperChannel | None

    def start(self, method: priv_context.Method | None = None) -> None:
        """Start the daemon unless it runs; ``None`` picks fork or helper."""
        if method is None:
            method = self.default_method()
        with self.start_lock:
            if self.channel is not None:
                return
            if method is priv_context.Method.FORK:
                self.channel = _ForkingChannel(context=self)
            else:
                self.channel = _HelperChannel(context=self)

    def default_method(self) -> priv_context.Method:
        """Return FORK for root without a ``helper_command``, else ROOTWRAP."""
        if os.geteuid() == 0 and not self.conf.helper_command:
            return priv_context.Method.FORK
        return priv_context.Method.ROOTWRAP


def alive(channel: object) -> bool:
    """Return whether a privsep client channel can still get answers.

    oslo.privsep clears ``running`` only on a clean EOF; when the daemon dies
    with unread data the reader thread ends on ECONNRESET and ``running``
    stays true, so the thread itself is checked too.
    """
    if channel is None or not getattr(channel, "running", False):
        return False
    reader = getattr(channel, "reader_thread", None)
    return reader is None or bool(reader.is_alive())


def stop(context: ConntrackPrivContext) -> None:
    """Close the context's channel and reap its daemon if we forked it."""
    channel = context.channel
    try:
        context.stop()
    except OSError:
        # The socket of a killed daemon may refuse the shutdown.
        context.channel = None
    # oslo.privsep only shuts the socket down; an error or log record that
    # still references the old channel would keep its descriptor open.
    writer = getattr(channel, "writer", None)
    if writer is not None:
        writer.writesock.close()
    reap(channel)
