"""oslo.config options of conntrack_lib.

Nothing is registered when this module is imported: callers (the executors,
an agent's ``main()``) call :func:`register_opts`, and oslo-config-generator
calls :func:`list_opts` through the ``oslo.config.opts`` entry point.
"""

from __future__ import annotations

import copy

from oslo_config import cfg
from oslo_privsep import priv_context

from conntrack_lib import constants

GROUP = "conntrack_lib"
#: Same name as ``conntrack_lib.privileged.PRIVSEP_SECTION``; repeated here
#: so that listing options does not build the privsep context.
PRIVSEP_SECTION = "conntrack_lib_privileged"

#: 4 MiB keeps each privsep reply far below the 100 MiB that hangs its channel.
DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024
#: Upper bound on a chunk: even at 4 UTF-8 bytes a character it stays
#: below privsep's 100 MiB reader limit.
MAX_CHUNK_SIZE = 16 * 1024 * 1024

OPTS = [
    cfg.StrOpt(
        "conntrack_binary",
        default=constants.CONNTRACK_BINARY,
        help="Absolute path of the conntrack binary. A relative path is refused: "
        "the command runs with root's capabilities and must not depend on PATH. "
        "The privileged daemon reads this value from its own configuration.",
    ),
    cfg.FloatOpt(
        "command_timeout",
        default=60.0,
        min=0.1,
        help="Seconds a conntrack command may run before it is killed and "
        "CommandTimeoutError is raised.",
    ),
    cfg.IntOpt(
        "retries",
        default=2,
        min=0,
        max=10,
        help="How many times a command that failed with a transient kernel error "
        "(EINTR, EBUSY, ENOBUFS) is run again. Only read-only commands, deletes "
        "and flushes are retried; creates, updates, batches and event captures "
        "never are, because running them twice could apply them twice.",
    ),
    cfg.IntOpt(
        "chunk_size",
        default=DEFAULT_CHUNK_SIZE,
        min=1,
        max=MAX_CHUNK_SIZE,
        help="Largest piece of command output, in characters, returned by one call "
        "to the privileged daemon. Longer output stays in the daemon and is "
        "fetched piece by piece.",
    ),
    cfg.IntOpt(
        "batch_size",
        default=1000,
        min=1,
        max=100000,
        help="Lines per conntrack -R process when many flows are created or deleted.",
    ),
    cfg.StrOpt(
        "exact_delete_backend",
        default="auto",
        choices=[
            ("auto", "netlink when it is usable, else the CLI"),
            ("netlink", "one netlink delete message per flow"),
            ("cli", "conntrack -D, one full table dump per flow"),
        ],
        help="How exact flows (full tuples) are deleted.",
    ),
    cfg.StrOpt(
        "zone_store_path",
        default=None,
        help="SQLite database that keeps the zone map of ConntrackHelper objects built "
        "without a zone_store, and that the CLI's zones command reads when --store is "
        "not given. It survives restarts and is shared by every process using the same "
        "path. Unset (the default), the map lives in memory only. Its directory must "
        "exist, belong to the process's user and not be group- or world-writable.",
    ),
    cfg.StrOpt(
        "zone_store_migrate_from",
        default=None,
        help="JSON file of the deprecated FileZoneStore, imported once into "
        "zone_store_path when that database is created. The JSON file is kept, "
        "unchanged, as a backup.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register the library's and the privsep context's options on ``conf``.

    Registering twice is harmless: oslo.config accepts an identical option.
    """
    conf.register_opts(OPTS, group=GROUP)
    conf.register_opts(priv_context.OPTS, group=PRIVSEP_SECTION)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Return ``(group, options)`` pairs for oslo-config-generator."""
    return [
        (GROUP, copy.deepcopy(OPTS)),
        (PRIVSEP_SECTION, copy.deepcopy(priv_context.OPTS)),
    ]
