"""Run commands: the executors and the entry points callers import.

Two executors, importable from here (each lives in its own module):

* :class:`PrivsepExecutor` (the default) calls the narrow entrypoints of
  :mod:`conntrack_lib.privileged.conntrack` in an oslo.privsep daemon;
* :class:`ProcessExecutor` runs conntrack directly, for a process that
  already holds CAP_NET_ADMIN.

Both render the final argv with :func:`conntrack_lib.netns.build_argv` and
give every finished command to :func:`~conntrack_lib.results.finish`, so
:mod:`conntrack_lib.results` alone gives conntrack's exit codes their
meaning and decides which failures are retried.  Its names
(:class:`~conntrack_lib.results.Result`,
:func:`~conntrack_lib.results.interpret`, the retry helpers) stay
importable from here.
"""

from __future__ import annotations

from conntrack_lib.executor_base import EXACT_DELETE_CHUNK, Executor
from conntrack_lib.privsep_executor import (
    EVENTS_IDLE_PAUSE,
    EVENTS_READ,
    PRIVSEP_MARGIN,
    EventLines,
    PrivsepExecutor,
    SpooledLines,
    StreamedLines,
)
from conntrack_lib.process_executor import ProcessExecutor
from conntrack_lib.results import (
    EXISTS_MESSAGE,
    EXIT_SEGFAULT,
    NAMESPACE_MESSAGES,
    NOT_FOUND_MESSAGE,
    PERMISSION_MESSAGES,
    RETRYABLE_KINDS,
    TRANSIENT_MESSAGES,
    UNAVAILABLE_MESSAGES,
    Result,
    finish,
    interpret,
    is_transient,
    log_failure,
    run_with_retries,
    signal_exit,
)

__all__ = [
    "EVENTS_IDLE_PAUSE",
    "EVENTS_READ",
    "EXACT_DELETE_CHUNK",
    "EXISTS_MESSAGE",
    "EXIT_SEGFAULT",
    "NAMESPACE_MESSAGES",
    "NOT_FOUND_MESSAGE",
    "PERMISSION_MESSAGES",
    "PRIVSEP_MARGIN",
    "RETRYABLE_KINDS",
    "TRANSIENT_MESSAGES",
    "UNAVAILABLE_MESSAGES",
    "EventLines",
    "Executor",
    "PrivsepExecutor",
    "ProcessExecutor",
    "Result",
    "SpooledLines",
    "StreamedLines",
    "finish",
    "interpret",
    "is_transient",
    "log_failure",
    "run_with_retries",
    "signal_exit",
]
