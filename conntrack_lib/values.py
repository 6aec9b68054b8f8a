"""The value types of filters, command fields and privsep primitives.

A caller passes filter and field keywords as :data:`FilterValue`; the
validators of :mod:`conntrack_lib.command_fields` turn each into its
canonical :data:`FieldValue`, which a command object holds and the
planner and matcher read.  :data:`Primitive` is what crosses the privsep
boundary (plain str, int, float, bool and lists of them).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TypeAlias, Union

import netaddr

#: The canonical value of one validated field: a word or address (str), a
#: number (int, bool for a bare flag, float for a duration), a word list
#: (status, labels, output), a ``(mark, mask)`` pair or a NAT
#: ``(address, port)``.
FieldValue: TypeAlias = str | int | float | tuple[str, ...] | tuple[int, int] | tuple[str, int]

#: The set fields of a validated command or request, by name.
Fields: TypeAlias = dict[str, FieldValue]

#: Read-only view of :data:`Fields`.
FieldMap: TypeAlias = Mapping[str, FieldValue]

#: What a caller may pass for one filter or field keyword; None means unset.
FilterValue: TypeAlias = (
    FieldValue | Collection[str] | netaddr.IPAddress | netaddr.IPNetwork | None)

#: A value that crosses the privsep boundary (what msgpack carries).
Primitive: TypeAlias = Union[str, int, float, list["Primitive"], None]  # noqa: UP007 - recursive

#: A command or flow as primitives, by key.
PrimitiveDict: TypeAlias = dict[str, Primitive]

__all__ = ["FieldMap", "FieldValue", "Fields", "FilterValue", "Primitive", "PrimitiveDict"]
