"""Typed, validated conntrack commands.

A command object holds every option of one ``conntrack`` invocation in a
validated, canonical form.  It renders an argv (without the binary path), a
``-R`` load-file line for the commands the load file accepts, and a
primitive dict that can cross the privsep boundary; :func:`from_primitive`
rebuilds it on the root side and validates everything again.  The field
tables, the per-field normalisation, the cross-field checks and the argv
rendering the classes share live in :mod:`conntrack_lib.command_fields`.

The builders know the option legality matrix of conntrack-tools 1.4.7 and
avoid its rendering pitfalls: ``-p`` comes before protocol options, ``-m``
after ``-u``, keywords are spelled in full, every value is its own argv
element, ``-U`` always carries ``-f`` and the table is never attached.
Options that 1.4.7 accepts but then misapplies are refused, each measured in
a namespace: ``-F -f FAMILY`` empties every family, ``-D`` ignores ``-t``,
``!FLAG`` and ``UNREPLIED`` (and deletes the other matches anyway), and
``-U`` breaks on NAT addresses and SCTP vtags.  Nothing here runs a process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

from conntrack_lib import constants, models
from conntrack_lib import validators as val
from conntrack_lib.command_fields import (
    _CREATE,
    _DELETE,
    _EVENTS,
    _FLUSH,
    _GET,
    _LIST,
    _UPDATE,
    _UPDATE_CHANGES,
    _UPDATE_MATCH,
    _ZONES,
    _check_create,
    _check_get,
    _field_rank,
    _make_profile,
    _primitive,
    _Profile,
    _render,
    _validate,
)

# Re-exported for their readers outside this module: planner.py calls
# commands._check_family, the functional tests read commands._OPTIONS.
from conntrack_lib.command_fields import _OPTIONS as _OPTIONS  # noqa: PLC0414
from conntrack_lib.command_fields import _check_family as _check_family  # noqa: PLC0414
from conntrack_lib.exceptions import InvalidArgumentError

# --- command classes ----------------------------------------------------------

class Command:
    """Base class of every conntrack command: frozen, hashable, equal by value."""

    kind: ClassVar[str]
    affected_word: ClassVar[str | None] = None
    _profile: ClassVar[_Profile]
    __slots__ = ("_fields",)
    _fields: tuple[tuple[str, Any], ...]

    def __init__(self) -> None:
        raise TypeError("Command is abstract; build one of its subclasses")

    def _freeze(self, fields: Mapping[str, Any]) -> None:
        # Sorting the few set fields by rank beats scanning every option
        # name: this runs for each of the many flows of a netlink batch.
        ordered = tuple(sorted(fields.items(), key=_field_rank))
        object.__setattr__(self, "_fields", ordered)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Command):
            return NotImplemented
        return type(self) is type(other) and self._fields == other._fields

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._fields))

    def __reduce__(self) -> tuple[Any, ...]:
        return (from_primitive, (self.to_primitive(),))

    def _repr_items(self) -> list[str]:
        return [f"{name}={value!r}" for name, value in self._fields]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(self._repr_items())})"

    __str__ = __repr__

    @property
    def fields(self) -> dict[str, Any]:
        """Return the set fields in their canonical form."""
        return dict(self._fields)

    def get(self, name: str, default: Any = None) -> Any:
        """Return one field's canonical value, or ``default`` when unset."""
        return self.fields.get(name, default)

    @property
    def loadable(self) -> bool:
        """Tell whether this command may be a line of a ``-R`` load file."""
        return False

    def argv(self) -> tuple[str, ...]:
        """Return the conntrack arguments, without the binary path."""
        profile = self._profile
        return _render(profile.option, self.fields, profile.hidden)

    def load_line(self) -> str:
        """Return this command as one ``-R`` load-file line.

        :raises InvalidArgumentError: if the load file does not accept it.
        """
        if not self.loadable:
            raise InvalidArgumentError("kind", self.kind, "not accepted in a load file")
        # Safe to join: every value token was checked to hold no blank or quote.
        return " ".join(self.argv())

    def to_primitive(self) -> dict[str, Any]:
        """Return a dict of str/int/list values that :func:`from_primitive` reads."""
        data: dict[str, Any] = {"kind": self.kind}
        data.update((name, _primitive(value)) for name, value in self._fields)
        return data


class ListCommand(Command):
    """``conntrack -L`` with optional filters and output formats."""

    kind = "list"
    affected_word = "shown"
    _profile = _LIST
    __slots__ = ()

    def __init__(self, /, *, output: Sequence[str] = (), **filters: Any) -> None:
        self._freeze(_validate({**filters, "output": output}, self._profile, self.kind))

    @property
    def output(self) -> tuple[str, ...]:
        """Return the ``-o`` keywords."""
        return tuple(self.get("output", ()))


class GetCommand(Command):
    """``conntrack -G``: an exact lookup by protocol and original tuple (zone 0)."""

    kind = "get"
    affected_word = "shown"
    _profile = _GET
    __slots__ = ()

    def __init__(self, /, *, output: Sequence[str] = (), **tuple_fields: Any) -> None:
        fields = _validate({**tuple_fields, "output": output}, self._profile, self.kind)
        _check_get(fields)
        self._freeze(fields)

    @property
    def output(self) -> tuple[str, ...]:
        """Return the ``-o`` keywords."""
        return tuple(self.get("output", ()))


class CreateCommand(Command):
    """``conntrack -I``: create one flow."""

    kind = "create"
    affected_word = "created"
    _profile = _CREATE
    __slots__ = ()

    def __init__(self, /, *, timeout: int, **fields: Any) -> None:
        checked = _validate({**fields, "timeout": timeout}, self._profile, self.kind)
        _check_create(checked)
        self._freeze(checked)

    @property
    def loadable(self) -> bool:
        """Tell whether this command may be a load-file line (always)."""
        return True

    @property
    def timeout(self) -> int:
        """Return the timeout in seconds."""
        return int(self.get("timeout"))

    @classmethod
    def from_entry(cls, entry: models.Entry, timeout: int | None = None) -> CreateCommand:
        """Build the command that recreates ``entry`` (both tuples, zone, mark)."""
        fields = _entry_identity(entry)
        fields.update(_reply_fields(entry))
        fields.update(state=entry.state, mark=entry.mark, status=_entry_status(entry) or None)
        if entry.labels:
            fields["label_add"] = sorted(entry.labels)
        if fields.get("zone") == 0:
            del fields["zone"]
        chosen = entry.timeout if timeout is None else timeout
        if chosen is None:
            raise InvalidArgumentError("timeout", None, "the entry has no timeout")
        return cls(timeout=chosen, **fields)


class UpdateCommand(Command):
    """``conntrack -U``: change timeout, mark, status, state or labels of matches."""

    kind = "update"
    affected_word = "updated"
    _profile = _UPDATE
    __slots__ = ()

    def __init__(self, /, *, match: Mapping[str, Any], **changes: Any) -> None:
        if not isinstance(match, Mapping):
            raise InvalidArgumentError("match", match, "expected a mapping of filters")
        self._check_names(match, changes)
        fields = _validate({**match, **changes}, self._profile, self.kind)
        if not _UPDATE_CHANGES & fields.keys():
            raise InvalidArgumentError("changes", None, "nothing to change")
        if _check_family(fields) is None:
            raise InvalidArgumentError("family", None, "needs family or an address")
        self._freeze(fields)

    @staticmethod
    def _check_names(match: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
        for name, value in match.items():
            if name in _ZONES:
                raise InvalidArgumentError(name, value, "1.4.7 -U cannot update zoned flows")
            if name not in _UPDATE_MATCH:
                raise InvalidArgumentError(name, value, "not a filter of an update command")
        for name, value in changes.items():
            if name not in _UPDATE_CHANGES:
                raise InvalidArgumentError(name, value, "not a change of an update command")

    @property
    def match(self) -> dict[str, Any]:
        """Return the filters selecting the flows to change."""
        return {k: v for k, v in self._fields if k in _UPDATE_MATCH}

    @property
    def changes(self) -> dict[str, Any]:
        """Return the values to set."""
        return {k: v for k, v in self._fields if k in _UPDATE_CHANGES}

    def argv(self) -> tuple[str, ...]:
        """Return the arguments; ``-f`` is always present (1.4.7 needs it)."""
        fields = self.fields
        fields["family"] = _check_family(fields)
        return _render(self._profile.option, fields, frozenset())

    def _repr_items(self) -> list[str]:
        changes = [f"{k}={v!r}" for k, v in self.changes.items()]
        return [f"match={self.match!r}", *changes]

    def to_primitive(self) -> dict[str, Any]:
        """Return primitives; ``match`` is a list of ``[name, value]`` pairs."""
        data: dict[str, Any] = {"kind": self.kind}
        data["match"] = [[k, _primitive(v)] for k, v in self.match.items()]
        data.update((k, _primitive(v)) for k, v in self.changes.items())
        return data


class DeleteCommand(Command):
    """``conntrack -D``: delete every flow matching the filters."""

    kind = "delete"
    affected_word = "deleted"
    _profile = _DELETE
    __slots__ = ()

    def __init__(self, /, **filters: Any) -> None:
        self._freeze(_validate(filters, self._profile, self.kind))

    @property
    def loadable(self) -> bool:
        """Tell whether this command may be a load-file line (always)."""
        return True

    @classmethod
    def for_entry(cls, entry: models.Entry) -> DeleteCommand:
        """Build the command deleting exactly ``entry``: family, proto, tuple, zone."""
        return cls(**_entry_identity(entry))


class FlushCommand(Command):
    """``conntrack -F``: empty the whole table (every zone and family).

    ``family`` is refused: with 1.4.7 on the kernels measured, ``-F -f ipv6``
    empties IPv4 as well.  ``DeleteCommand(family=...)`` removes one family.
    """

    kind = "flush"
    _profile = _FLUSH
    __slots__ = ()

    def __init__(self, /, *, family: str | None = None, **fields: Any) -> None:
        checked = _validate({**fields, "family": family}, self._profile, self.kind)
        if "family" in checked:
            raise InvalidArgumentError("family", family,
                                       "-F -f flushes every family; delete by family instead")
        self._freeze(checked)

    @property
    def loadable(self) -> bool:
        """Tell whether this command may be a load-file line (always)."""
        return True


class CountCommand(Command):
    """``conntrack -C``: the number of entries (all zones and families)."""

    kind = "count"
    _profile = _make_profile("-C", ())
    __slots__ = ()

    def __init__(self, /, **fields: Any) -> None:
        self._freeze(_validate(fields, self._profile, self.kind))


class StatsCommand(Command):
    """``conntrack -S``: per-CPU statistics."""

    kind = "stats"
    _profile = _make_profile("-S", ())
    __slots__ = ()

    def __init__(self, /, **fields: Any) -> None:
        self._freeze(_validate(fields, self._profile, self.kind))


class VersionCommand(Command):
    """``conntrack --version``: the release of the binary."""

    kind = "version"
    _profile = _make_profile("--version", ())
    __slots__ = ()

    def __init__(self, /, **fields: Any) -> None:
        self._freeze(_validate(fields, self._profile, self.kind))


class EventsCommand(Command):
    """``conntrack -E`` for a bounded ``duration`` (seconds) the executor enforces."""

    kind = "events"
    _profile = _EVENTS
    __slots__ = ()
    DEFAULT_DURATION: ClassVar[float] = 10.0

    def __init__(self, /, *, event_mask: Sequence[str] = ("ALL",), output: Sequence[str] = (),
                 duration: float = DEFAULT_DURATION, **filters: Any) -> None:
        # None would read as "unset" and silently change the command's meaning.
        for name, value in (("event_mask", event_mask), ("duration", duration)):
            if value is None:
                raise InvalidArgumentError(name, None, "must not be None")
        raw = {**filters, "event_mask": event_mask, "output": output,
               "duration": duration}
        self._freeze(_validate(raw, self._profile, self.kind))

    @property
    def duration(self) -> float:
        """Return how long the executor lets the event monitor run."""
        return float(self.get("duration"))

    @property
    def event_mask(self) -> tuple[str, ...]:
        """Return the ``-e`` keywords."""
        return tuple(self.get("event_mask"))

    @property
    def output(self) -> tuple[str, ...]:
        """Return the ``-o`` keywords."""
        return tuple(self.get("output", ()))

    def to_primitive(self) -> dict[str, Any]:
        """Return primitives; the duration travels as whole milliseconds."""
        data = super().to_primitive()
        data["duration_ms"] = round(data.pop("duration") * 1000)
        return data


#: Fields that name labels.  After a load-file line with any of them,
#: ``conntrack -R`` (1.4.7 to 1.4.9) dies of SIGSEGV on the next line, having
#: run the lines before it: such a line must end its batch.
LABEL_FIELDS = frozenset(("labels", "label_add", "label_del"))


def names_labels(command: Command) -> bool:
    """Tell whether ``command`` carries a label filter or label change."""
    return not LABEL_FIELDS.isdisjoint(command.fields)


def load_chunks(commands: Sequence[Command], size: int) -> Iterator[list[Command]]:
    """Yield ``commands`` in order as batches of at most ``size`` that ``-R`` can run.

    A batch also ends after each command that names labels (see
    :data:`LABEL_FIELDS`).

    :param commands: loadable commands.
    :param size: the most commands per batch (at least 1).
    """
    chunk: list[Command] = []
    for command in commands:
        chunk.append(command)
        if len(chunk) >= size or names_labels(command):
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class BatchCommand(Command):
    """``conntrack -R -``: many create/delete/flush commands in one process."""

    kind = "batch"
    _profile = _make_profile("-R", ())
    __slots__ = ()

    def __init__(self, commands: Sequence[Command]) -> None:
        if not isinstance(commands, list | tuple) or not commands:
            raise InvalidArgumentError("commands", commands, "expected a non-empty sequence")
        for command in commands:
            if not isinstance(command, Command) or not command.loadable:
                raise InvalidArgumentError("commands", command,
                                           "only create, delete and flush commands")
        for command in commands[:-1]:
            if names_labels(command):
                raise InvalidArgumentError(
                    "commands", command, "a command naming labels must end its batch: "
                    "conntrack -R crashes on the line after it (see load_chunks)")
        object.__setattr__(self, "_fields", (("commands", tuple(commands)),))

    @property
    def commands(self) -> tuple[Command, ...]:
        """Return the batched commands in order."""
        commands: tuple[Command, ...] = self._fields[0][1]
        return commands

    def __len__(self) -> int:
        return len(self.commands)

    def __iter__(self) -> Iterator[Command]:
        return iter(self.commands)

    def argv(self) -> tuple[str, ...]:
        """Return ``('-R', '-')``: the load file comes on stdin."""
        return ("-R", "-")

    def stdin(self) -> str:
        """Return the load-file text: one line per command, newline-terminated."""
        return "".join(command.load_line() + "\n" for command in self.commands)

    def to_primitive(self) -> dict[str, Any]:
        """Return primitives; each command is a list of ``[name, value]`` pairs."""
        return {"kind": self.kind,
                "commands": [[[k, v] for k, v in c.to_primitive().items()]
                             for c in self.commands]}


# --- entries --------------------------------------------------------------------

def _entry_identity(entry: models.Entry) -> dict[str, Any]:
    """Return the fields naming ``entry`` in the kernel: family, proto, tuple, zone."""
    proto: str | int = entry.proto if entry.proto in constants.PROTOCOL_NUMBERS \
        else entry.protonum
    flow = entry.original
    fields: dict[str, Any] = {"family": entry.family, "proto": proto,
                              "src": flow.src, "dst": flow.dst}
    if proto in constants.PORT_PROTOCOLS:
        fields.update(sport=flow.sport, dport=flow.dport)
    elif proto in constants.ICMP_PROTOCOLS:
        fields.update(icmp_type=flow.icmp_type, icmp_code=flow.icmp_code, icmp_id=flow.icmp_id)
    elif proto == "gre":
        fields.update(srckey=flow.srckey, dstkey=flow.dstkey)
    if entry.orig_zone is not None or entry.reply_zone is not None:
        # A directional zone is not matched by -w, so name it instead.
        fields.update(orig_zone=entry.orig_zone, reply_zone=entry.reply_zone)
    else:
        fields["zone"] = entry.zone
    return fields


def _reply_fields(entry: models.Entry) -> dict[str, Any]:
    """Return the reply tuple of ``entry`` as create fields."""
    flow = entry.reply
    fields: dict[str, Any] = {"reply_src": flow.src, "reply_dst": flow.dst}
    if entry.proto in constants.PORT_PROTOCOLS:
        fields.update(reply_sport=flow.sport, reply_dport=flow.dport)
    elif entry.proto == "gre":
        fields.update(reply_srckey=flow.srckey, reply_dstkey=flow.dstkey)
    return fields


def _entry_status(entry: models.Entry) -> list[str]:
    """Return the settable status words that describe ``entry``."""
    settable = ("ASSURED", "FIXED_TIMEOUT", "EXPECTED")
    words: list[str] = [word for word in settable if word in entry.status]
    if entry.status and "UNREPLIED" not in entry.status:
        words.insert(0, "SEEN_REPLY")
    return words


# --- primitives -------------------------------------------------------------------

def _pairs(field: str, value: object) -> dict[str, Any]:
    """Return a dict from a list of ``[name, value]`` pairs."""
    if not isinstance(value, list | tuple):
        raise InvalidArgumentError(field, value, "expected a list of [name, value] pairs")
    result: dict[str, Any] = {}
    for pair in value:
        if not isinstance(pair, list | tuple) or len(pair) != 2 or not isinstance(pair[0], str) \
                or pair[0] in result:
            raise InvalidArgumentError(field, pair, "expected distinct [name, value] pairs")
        result[pair[0]] = pair[1]
    return result


def _events_from(data: dict[str, Any]) -> Command:
    if "duration" in data:
        raise InvalidArgumentError("duration", data["duration"], "unknown key")
    millis = val.integer("duration_ms", data.pop("duration_ms", 10000), 1, 3_600_000)
    return EventsCommand(duration=millis / 1000, **data)


def _update_from(data: dict[str, Any]) -> Command:
    return UpdateCommand(match=_pairs("match", data.pop("match", None)), **data)


def _batch_from(data: dict[str, Any]) -> Command:
    commands = data.pop("commands", None)
    if data:
        raise InvalidArgumentError(next(iter(data)), None, "unknown key")
    if not isinstance(commands, list | tuple):
        raise InvalidArgumentError("commands", commands, "expected a list")
    return BatchCommand([from_primitive(_pairs("commands", item)) for item in commands])


_BUILDERS: dict[str, Callable[[dict[str, Any]], Command]] = {
    "list": lambda d: ListCommand(**d),
    "get": lambda d: GetCommand(**d),
    "create": lambda d: CreateCommand(**d),
    "update": _update_from,
    "delete": lambda d: DeleteCommand(**d),
    "flush": lambda d: FlushCommand(**d),
    "count": lambda d: CountCommand(**d),
    "stats": lambda d: StatsCommand(**d),
    "version": lambda d: VersionCommand(**d),
    "events": _events_from,
    "batch": _batch_from,
}


def from_primitive(data: Mapping[str, Any]) -> Command:
    """Rebuild a command from :meth:`Command.to_primitive` output, validating all of it.

    :raises InvalidArgumentError: for anything that is not a valid command:
        unknown kind or key, wrong type, value out of range, illegal combination.
    """
    if not isinstance(data, Mapping):
        raise InvalidArgumentError("kind", data, "expected a mapping")
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in _BUILDERS:
        raise InvalidArgumentError("kind", kind, "unknown command kind")
    fields = dict(data)
    del fields["kind"]
    # One C-level scan; the loop that names the culprit runs only on failure.
    if not all(type(key) is str for key in fields):
        bad = next(key for key in fields if not isinstance(key, str))
        raise InvalidArgumentError("key", bad, "keys must be strings")
    if kind == "create" and "timeout" not in fields:
        raise InvalidArgumentError("timeout", None, "required for this command")
    return _BUILDERS[kind](fields)


__all__ = [
    "BatchCommand",
    "Command",
    "CountCommand",
    "CreateCommand",
    "DeleteCommand",
    "EventsCommand",
    "FlushCommand",
    "GetCommand",
    "ListCommand",
    "StatsCommand",
    "UpdateCommand",
    "VersionCommand",
    "from_primitive",
]
