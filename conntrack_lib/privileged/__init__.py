"""The only code of conntrack_lib that runs as root.

One privsep context with exactly the capabilities conntrack needs:
CAP_NET_ADMIN for ctnetlink and CAP_SYS_ADMIN to enter a network namespace.
Its options live in the ``[conntrack_lib_privileged]`` section, where a
deployment sets ``helper_command`` (see docs/deployment.rst).

The context differs from a plain ``PrivContext`` in two ways, both about a
daemon that died:

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

import logging
import os
from typing import Any

from oslo_privsep import capabilities as caps
from oslo_privsep import daemon, priv_context

PRIVSEP_SECTION = "conntrack_lib_privileged"

LOG = logging.getLogger(__name__)


class _FailPendingOnReset:
    """Mixin for privsep client channels: a reset socket fails pending calls."""

    lock: Any
    outstanding_msgs: dict[str, Any]
    running: bool

    def _reader_main(self, reader: Any) -> None:
        try:
            super()._reader_main(reader)  # type: ignore[misc]
        except OSError as err:
            LOG.warning("privsep channel lost: %s", err)
            # Plain OSError, not ConnectionResetError: the request may have
            # reached the daemon, so callers must not assume it did not.
            lost = OSError(f"privsep daemon connection lost: {err}")
            with self.lock:
                for mbox in self.outstanding_msgs.values():
                    mbox.set_exception(lost)
                self.running = False


class _ForkingChannel(_FailPendingOnReset, daemon.ForkingClientChannel):  # type: ignore[misc]
    """Daemon started by fork (this process is already root)."""


class _HelperChannel(_FailPendingOnReset, daemon.RootwrapClientChannel):  # type: ignore[misc]
    """Daemon started through ``helper_command`` (sudo, rootwrap)."""


class ConntrackPrivContext(priv_context.PrivContext):  # type: ignore[misc]
    """A privsep context that chooses its start method on every start."""

    channel: Any

    def start(self, method: Any = None) -> None:
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

    def default_method(self) -> Any:
        """Return FORK for root without a ``helper_command``, else ROOTWRAP."""
        if os.geteuid() == 0 and not self.conf.helper_command:
            return priv_context.Method.FORK
        return priv_context.Method.ROOTWRAP


default = ConntrackPrivContext(
    "conntrack_lib",
    cfg_section=PRIVSEP_SECTION,
    pypath=__name__ + ".default",
    capabilities=[caps.CAP_NET_ADMIN, caps.CAP_SYS_ADMIN],
    logger_name=__name__,
)
