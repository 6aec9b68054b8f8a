"""Make every error of a privileged entrypoint able to cross the privsep wire.

oslo.privsep sends an entrypoint's exception back as its class name and its
``args``, packed with msgpack.  When an argument cannot be packed (a set, a
netaddr object, an int beyond 64 bits) the daemon's reply itself fails and
the caller gets a bare ``TypeError`` that names neither the entrypoint nor
the real error.  :func:`wire_safe` turns such an error into a
:class:`~conntrack_lib.exceptions.CommandError` that names both, in the
daemon, before oslo.privsep packs it.  Nothing here needs root: the
entrypoints of ``conntrack_lib.privileged`` import it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import msgpack

from conntrack_lib import exceptions

_F = TypeVar("_F", bound=Callable[..., Any])


def packable(value: object) -> bool:
    """Tell whether oslo.privsep's msgpack encoding accepts ``value``."""
    try:
        msgpack.packb(value, use_bin_type=True, unicode_errors="surrogateescape")
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def describe(error: BaseException) -> str:
    """Return ``module.Class: message`` for ``error``, even when str() fails."""
    cls = type(error)
    try:
        text = str(error)
    except Exception:  # a broken __str__ must not hide the error's class
        text = "<message not printable>"
    return f"{cls.__module__}.{cls.__qualname__}: {text[:exceptions.MAX_SHOWN * 5]}"


def wire_safe(func: _F) -> _F:
    """Wrap an entrypoint so that what it raises always reaches the caller.

    An error whose ``args`` pack is raised unchanged.  A conntrack_lib
    error whose arguments do not is raised again as the same class, each
    unpackable argument replaced by its short ``repr`` (an
    ``InvalidArgumentError`` naming a command object stays one).  Any
    other becomes a ``CommandError`` whose stderr names the entrypoint and
    the original error.  Apply it under ``@entrypoint`` so the wrapped
    function keeps the name oslo.privsep exports.
    """
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as error:
            if packable(list(error.args)):
                raise
            raise _packable_twin(error, func.__name__) from error
    return wrapper  # type: ignore[return-value]


def _packable_twin(error: Exception, entry: str) -> Exception:
    """Return an error that says what ``error`` says and crosses the wire."""
    if isinstance(error, exceptions.ConntrackError):
        shown = [arg if packable(arg) else exceptions.shown(arg) for arg in error.args]
        try:
            twin = type(error)(*shown)
        except Exception:  # noqa: S110 - a class that refuses its own args falls through
            pass
        else:
            if packable(list(twin.args)):
                return twin
    return exceptions.CommandError(
        (entry,), None, "",
        f"{describe(error)} (its arguments cannot be sent back from the privsep daemon)\n",
    )
