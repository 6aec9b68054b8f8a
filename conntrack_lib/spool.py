"""Hold long outputs in the privsep daemon and hand them out chunk by chunk.

A privsep reply over 100 MiB would hang the channel, so an output longer
than one chunk stays in the daemon under a random handle and the client
reads it piece by piece.  Limits on held output: at most
:data:`MAX_SPOOLS` outputs and :data:`MAX_SPOOL_CHARS` characters in all.
A new output past either limit is refused with
:class:`~conntrack_lib.exceptions.OutputUnavailableError`; an output being
read is never evicted for a newcomer.  An output left unread for
:data:`SPOOL_TTL` seconds is dropped (each read restarts that clock), and
so is one whose client released it or was collected.

Pure bookkeeping: the daemon's entrypoints
(:mod:`conntrack_lib.privileged.conntrack`) own one :class:`Spools`.
"""

from __future__ import annotations

import collections
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from conntrack_lib import boundary
from conntrack_lib import exceptions as exc

#: Seconds an output may sit unread in the daemon before it is dropped.
SPOOL_TTL: Final = 300.0
#: Most outputs held at once; one more is refused, none is evicted.
MAX_SPOOLS: Final = 32
#: Most characters all held outputs may total (ASCII: bytes of daemon memory).
MAX_SPOOL_CHARS: Final = 512 * 1024 * 1024


@dataclass(slots=True)
class Spool:
    """One held output, cut into chunks of ``chunk_size`` characters."""

    text: str
    chunk_size: int
    expires: float

    @property
    def chunks(self) -> int:
        """Return the number of chunks (at least one, even for no text)."""
        return max(1, -(-len(self.text) // self.chunk_size))

    def chunk(self, index: int) -> str:
        """Return chunk ``index`` (unchecked)."""
        start = index * self.chunk_size
        return self.text[start:start + self.chunk_size]


class Spools:
    """Held outputs under random handles, bounded in count and size, none evicted."""

    def __init__(self, max_spools: int = MAX_SPOOLS, max_chars: int = MAX_SPOOL_CHARS,
                 ttl: float = SPOOL_TTL) -> None:
        self.max_spools = max_spools
        self.max_chars = max_chars
        self.ttl = ttl
        self._held: collections.OrderedDict[str, Spool] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._held)

    def clear(self) -> None:
        """Drop every held output."""
        with self._lock:
            self._held.clear()

    def store(self, text: str, chunk_size: int, argv: Sequence[str] = ()) -> tuple[str, int]:
        """Hold ``text`` under a new handle, or refuse: nothing held is evicted.

        :returns: the handle and the number of chunks.
        :raises OutputUnavailableError: ``max_spools`` outputs or
            ``max_chars`` characters are already held.
        """
        spool = Spool(text, chunk_size, time.monotonic() + self.ttl)
        handle = secrets.token_hex(16)
        with self._lock:
            self._expire_locked()
            held = sum(len(kept.text) for kept in self._held.values())
            if len(self._held) >= self.max_spools or held + len(text) > self.max_chars:
                raise exc.OutputUnavailableError(
                    tuple(argv), None, "",
                    f"the privsep daemon already holds {len(self._held)} long outputs "
                    f"({held} characters; limits: {self.max_spools} outputs, "
                    f"{self.max_chars} characters); this output of {len(text)} characters "
                    "was dropped: finish or close other listings and retry\n")
            self._held[handle] = spool
        return handle, spool.chunks

    def read(self, handle: object, index: object) -> str:
        """Return chunk ``index`` of the output under ``handle``; keep it for another TTL.

        :raises InvalidArgumentError: malformed handle, bad index.
        :raises OutputUnavailableError: the output is not held (any more).
        """
        spool = self._find(handle)
        if isinstance(index, bool) or not isinstance(index, int) \
                or not 0 <= index < spool.chunks:
            raise exc.InvalidArgumentError("index", index, f"must be in 0..{spool.chunks - 1}")
        spool.expires = time.monotonic() + self.ttl
        return spool.chunk(index)

    def release(self, handle: object) -> bool:
        """Drop the output under ``handle``; return whether it was held.

        :raises InvalidArgumentError: malformed handle.
        """
        key = boundary.check_handle(handle)
        with self._lock:
            return self._held.pop(key, None) is not None

    def _find(self, handle: object) -> Spool:
        key = boundary.check_handle(handle)
        with self._lock:
            self._expire_locked()
            spool = self._held.get(key)
        if spool is None:
            raise exc.OutputUnavailableError(
                ("read_chunk",), None, "",
                f"output {key} is not held by the privsep daemon: released, unread for "
                f"more than {self.ttl:g} s, or lost when the daemon restarted\n")
        return spool

    def _expire_locked(self) -> None:
        now = time.monotonic()
        for key in [key for key, spool in self._held.items() if spool.expires <= now]:
            del self._held[key]
