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
from typing import ClassVar, TypeVar

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
from conntrack_lib.parser.summary import summary_count
from conntrack_lib.values import FieldMap, Fields, FieldValue, FilterValue, PrimitiveDict

_C = TypeVar("_C", bound="Command")

# --- command classes ----------------------------------------------------------

class Command:
    """Base class of every conntrack command: frozen, hashable, equal by value."""

    kind: ClassVar[str]
    affected_word: ClassVar[str | None] = None
    #: Safe to run again after a transient failure (it changes nothing, or
    #: running it twice leaves the table as running it once).
    retryable: ClassVar[bool] = False
    #: Fails with EntryNotFoundError when nothing matches (an exact lookup).
    lookup: ClassVar[bool] = False
    _profile: ClassVar[_Profile]
    __slots__ = ("_fields",)
    _fields: tuple[tuple[str, FieldValue], ...]

    def __init__(self) -> None:
        raise TypeError("Command is abstract; build one of its subclasses")

    @classmethod
    def from_fields(cls: type[_C], fields: Mapping[str, object]) -> _C:
        """Build the command from keyword fields as a caller gives them, validating all.

        :param fields: the constructor's keywords; their values are checked
            here, whatever their type.
        :returns: the command.
        :raises InvalidArgumentError: for an unknown keyword or a bad value.
        """
        return cls(**fields)

    def _freeze(self, fields: FieldMap) -> None:
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
        return type(self) is type(other) and self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._identity()))

    def _identity(self) -> tuple[object, ...]:
        """Return what equality and the hash compare: the set fields."""
        return self._fields

    def __reduce__(self) -> tuple[Callable[[Mapping[str, object]], Command],
                                  tuple[PrimitiveDict]]:
        return (from_primitive, (self.to_primitive(),))

    def _repr_items(self) -> list[str]:
        return [f"{name}={value!r}" for name, value in self._fields]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(self._repr_items())})"

    __str__ = __repr__

    @property
    def fields(self) -> Fields:
        """Return the set fields in their canonical form."""
        return dict(self._fields)

    def get(self, name: str, default: FieldValue | None = None) -> FieldValue | None:
        """Return one field's canonical value, or ``default`` when unset."""
        return self.fields.get(name, default)

    def get_int(self, name: str) -> int | None:
        """Return an integer field (a zone, a port, an id), or None when it is unset.

        :raises InvalidArgumentError: the field holds something else (a
            masked mark, a word).
        """
        value = self.get(name)
        if value is None or isinstance(value, int):
            return value
        raise InvalidArgumentError(name, value, "not an integer field")

    def _words(self, name: str) -> tuple[str, ...]:
        """Return a word-list field (output, event mask) as strs; ``()`` when unset."""
        value = self.get(name, ())
        return tuple(map(str, value)) if isinstance(value, tuple) else (str(value),)

    def _number(self, name: str) -> float:
        """Return a numeric field that the constructor made sure is set."""
        value = self.get(name)
        if not isinstance(value, int | float):
            raise InvalidArgumentError(name, value, "expected a number")
        return value

    @property
    def loadable(self) -> bool:
        """Tell whether this command may be a line of a ``-R`` load file."""
        return False

    def reported_count(self, stdout: str, stderr: str) -> int | None:
        """Return the number a successful run reports, or None when it reports none.

        :param stdout: what conntrack printed on stdout.
        :param stderr: what it printed on stderr (the summary line).
        :returns: the N of ``N flow entries have been <affected_word>.``.
        """
        word = self.affected_word
        return None if word is None else summary_count(stderr, word)

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

    def to_primitive(self) -> PrimitiveDict:
        """Return a dict of str/int/list values that :func:`from_primitive` reads."""
        data: PrimitiveDict = {"kind": self.kind}
        data.update((name, _primitive(value)) for name, value in self._fields)
        return data


class ListCommand(Command):
    """``conntrack -L`` with optional filters and output formats."""

    kind = "list"
    affected_word = "shown"
    retryable = True
    _profile = _LIST
    __slots__ = ()

    def __init__(self, /, *, output: Sequence[str] = (), **filters: FilterValue) -> None:
        self._freeze(_validate({**filters, "output": output}, self._profile, self.kind))

    @property
    def output(self) -> tuple[str, ...]:
        """Return the ``-o`` keywords."""
        return self._words("output")


class GetCommand(Command):
    """``conntrack -G``: an exact lookup by protocol and original tuple (zone 0)."""

    kind = "get"
    affected_word = "shown"
    retryable = True
    lookup = True
    _profile = _GET
    __slots__ = ()

    def __init__(self, /, *, output: Sequence[str] = (),
                 **tuple_fields: FilterValue) -> None:
        fields = _validate({**tuple_fields, "output": output}, self._profile, self.kind)
        _check_get(fields)
        self._freeze(fields)

    @property
    def output(self) -> tuple[str, ...]:
        """Return the ``-o`` keywords."""
        return self._words("output")


class CreateCommand(Command):
    """``conntrack -I``: create one flow."""

    kind = "create"
    affected_word = "created"
    _profile = _CREATE
    __slots__ = ()

    def __init__(self, /, *, timeout: int, **fields: FilterValue) -> None:
        checked = _validate({**fields, "timeout": timeout}, self._profile, self.kind)
        _check_create(checked)
        self._freeze(checked)

    @property
    def loadable(self) -> bool:
        """Tell whether this command may be a load-file line (always)."""
        return True

    def reported_count(self, stdout: str, stderr: str) -> int | None:
        """Return the flows created: the summary's N (``added`` on some releases), else 1.

        :param stdout: what conntrack printed on stdout.
        :param stderr: what it printed on stderr.
        :returns: the number of flows created.
        """
        for word in ("created", "added"):
            count = summary_count(stderr, word)
            if count is not None:
                return count
        return 1

    @property
    def timeout(self) -> int:
        """Return the timeout in seconds."""
        return int(self._number("timeout"))

    @classmethod
    def from_fields(cls, fields: Mapping[str, object]) -> CreateCommand:
        """Build the create from keyword fields, ``timeout`` among them, validating all.

        :param fields: the constructor's keywords; their values are checked
            here, whatever their type.
        :returns: the command.
        :raises InvalidArgumentError: for a missing timeout, an unknown
            keyword or a bad value.
        """
        rest = dict(fields)
        timeout = rest.pop("timeout", None)
        if timeout is None:
            raise InvalidArgumentError("timeout", None, "required for this command")
        return cls(timeout=val.integer("timeout", timeout, 0, constants.MAX_TIMEOUT), **rest)

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

    def __init__(self, /, *, match: Mapping[str, FilterValue], **changes: FilterValue) -> None:
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
    def _check_names(match: Mapping[str, FilterValue], changes: Mapping[str, FilterValue]
                     ) -> None:
        for name, value in match.items():
            if name in _ZONES:
                raise InvalidArgumentError(name, value, "1.4.7 -U cannot update zoned flows")
            if name not in _UPDATE_MATCH:
                raise InvalidArgumentError(name, value, "not a filter of an update command")
        for name, value in changes.items():
            if name not in _UPDATE_CHANGES:
                raise InvalidArgumentError(name, value, "not a change of an update command")

    @property
    def match(self) -> Fields:
        """Return the filters selecting the flows to change."""
        return {k: v for k, v in self._fields if k in _UPDATE_MATCH}

    @property
    def changes(self) -> Fields:
        """Return the values to set."""
        return {k: v for k, v in self._fields if k in _UPDATE_CHANGES}

    def argv(self) -> tuple[str, ...]:
        """Return the arguments; ``-f`` is always present (1.4.7 needs it)."""
        fields = self.fields
        family = _check_family(fields)
        if family is not None:  # the constructor refused an update without one
            fields["family"] = family
        return _render(self._profile.option, fields, frozenset())

    def _repr_items(self) -> list[str]:
        changes = [f"{k}={v!r}" for k, v in self.changes.items()]
        return [f"match={self.match!r}", *changes]

    def to_primitive(self) -> PrimitiveDict:
        """Return primitives; ``match`` is a list of ``[name, value]`` pairs."""
        data: PrimitiveDict = {"kind": self.kind}
        data["match"] = [[k, _primitive(v)] for k, v in self.match.items()]
        data.update((k, _primitive(v)) for k, v in self.changes.items())
        return data


class DeleteCommand(Command):
    """``conntrack -D``: delete every flow matching the filters."""

    kind = "delete"
    affected_word = "deleted"
    retryable = True
    _profile = _DELETE
    __slots__ = ()

    def __init__(self, /, **filters: FilterValue) -> None:
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
    retryable = True
    _profile = _FLUSH
    __slots__ = ()

    def __init__(self, /, *, family: str | None = None, **fields: FilterValue) -> None:
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
    retryable = True
    _profile = _make_profile("-C", ())
    __slots__ = ()

    def reported_count(self, stdout: str, stderr: str) -> int | None:
        """Return the number ``-C`` prints on stdout, or None for other output.

        :param stdout: what conntrack printed on stdout.
        :param stderr: what it printed on stderr.
        :returns: the number of entries.
        """
        text = stdout.strip()
        return int(text) if text.isdigit() else None

    def __init__(self, /, **fields: FilterValue) -> None:
        self._freeze(_validate(fields, self._profile, self.kind))


class StatsCommand(Command):
    """``conntrack -S``: per-CPU statistics."""

    kind = "stats"
    retryable = True
    _profile = _make_profile("-S", ())
    __slots__ = ()

    def __init__(self, /, **fields: FilterValue) -> None:
        self._freeze(_validate(fields, self._profile, self.kind))


class VersionCommand(Command):
    """``conntrack --version``: the release of the binary."""

    kind = "version"
    _profile = _make_profile("--version", ())
    __slots__ = ()

    def __init__(self, /, **fields: FilterValue) -> None:
        self._freeze(_validate(fields, self._profile, self.kind))


class EventsCommand(Command):
    """``conntrack -E`` for a bounded ``duration`` (seconds) the executor enforces."""

    kind = "events"
    _profile = _EVENTS
    __slots__ = ()
    DEFAULT_DURATION: ClassVar[float] = 10.0

    def __init__(self, /, *, event_mask: Sequence[str] = ("ALL",), output: Sequence[str] = (),
                 duration: float = DEFAULT_DURATION, **filters: FilterValue) -> None:
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
        return float(self._number("duration"))

    @property
    def event_mask(self) -> tuple[str, ...]:
        """Return the ``-e`` keywords."""
        return self._words("event_mask")

    @property
    def output(self) -> tuple[str, ...]:
        """Return the ``-o`` keywords."""
        return self._words("output")

    def reported_count(self, stdout: str, stderr: str) -> int | None:
        """Return the N of ``N flow events have been shown.``, if printed.

        :param stdout: what conntrack printed on stdout.
        :param stderr: what it printed on stderr.
        :returns: the number of events, or None.
        """
        return summary_count(stderr, "shown", noun="flow events")

    def with_filters(self, filters: FieldMap) -> EventsCommand:
        """Return this capture (event mask, output, duration) with other filters.

        :param filters: the filters of the new command; its own event
            mask, output and duration are kept whatever ``filters`` says.
        :returns: the new command, validated.
        :raises InvalidArgumentError: for a bad filter.
        """
        kept = ("event_mask", "output", "duration")
        return EventsCommand(event_mask=self.event_mask, output=self.output,
                             duration=self.duration,
                             **{k: v for k, v in filters.items() if k not in kept})

    def to_primitive(self) -> PrimitiveDict:
        """Return primitives; the duration travels as whole milliseconds."""
        data = super().to_primitive()
        del data["duration"]
        data["duration_ms"] = round(self.duration * 1000)
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
    __slots__ = ("_commands",)
    _commands: tuple[Command, ...]

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
        # The commands are no field: they stay objects, in their own slot.
        object.__setattr__(self, "_fields", ())
        object.__setattr__(self, "_commands", tuple(commands))

    def _identity(self) -> tuple[object, ...]:
        return self._commands

    def _repr_items(self) -> list[str]:
        return [f"commands={self._commands!r}"]

    @property
    def commands(self) -> tuple[Command, ...]:
        """Return the batched commands in order."""
        return self._commands

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

    def to_primitive(self) -> PrimitiveDict:
        """Return primitives; each command is a list of ``[name, value]`` pairs."""
        return {"kind": self.kind,
                "commands": [[[k, v] for k, v in c.to_primitive().items()]
                             for c in self.commands]}


# --- entries --------------------------------------------------------------------

def _entry_identity(entry: models.Entry) -> dict[str, FilterValue]:
    """Return the fields naming ``entry`` in the kernel: family, proto, tuple, zone."""
    proto: str | int = entry.proto if entry.proto in constants.PROTOCOL_NUMBERS \
        else entry.protonum
    flow = entry.original
    fields: dict[str, FilterValue] = {"family": entry.family, "proto": proto,
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


def _reply_fields(entry: models.Entry) -> dict[str, FilterValue]:
    """Return the reply tuple of ``entry`` as create fields."""
    flow = entry.reply
    fields: dict[str, FilterValue] = {"reply_src": flow.src, "reply_dst": flow.dst}
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

def _pairs(field: str, value: object) -> dict[str, object]:
    """Return a dict from a list of ``[name, value]`` pairs."""
    if not isinstance(value, list | tuple):
        raise InvalidArgumentError(field, value, "expected a list of [name, value] pairs")
    result: dict[str, object] = {}
    for pair in value:
        if not isinstance(pair, list | tuple) or len(pair) != 2 or not isinstance(pair[0], str) \
                or pair[0] in result:
            raise InvalidArgumentError(field, pair, "expected distinct [name, value] pairs")
        result[pair[0]] = pair[1]
    return result


def _events_from(data: Mapping[str, object]) -> Command:
    fields = dict(data)
    if "duration" in fields:
        raise InvalidArgumentError("duration", fields["duration"], "unknown key")
    millis = val.integer("duration_ms", fields.pop("duration_ms", 10000), 1, 3_600_000)
    fields["duration"] = millis / 1000
    return EventsCommand.from_fields(fields)


def _update_from(data: Mapping[str, object]) -> Command:
    fields = dict(data)
    fields["match"] = _pairs("match", fields.pop("match", None))
    return UpdateCommand.from_fields(fields)


def _batch_from(data: Mapping[str, object]) -> Command:
    fields = dict(data)
    commands = fields.pop("commands", None)
    if fields:
        raise InvalidArgumentError(next(iter(fields)), None, "unknown key")
    if not isinstance(commands, list | tuple):
        raise InvalidArgumentError("commands", commands, "expected a list")
    return BatchCommand([from_primitive(_pairs("commands", item)) for item in commands])


_BUILDERS: dict[str, Callable[[Mapping[str, object]], Command]] = {
    "list": ListCommand.from_fields,
    "get": GetCommand.from_fields,
    "create": CreateCommand.from_fields,
    "update": _update_from,
    "delete": DeleteCommand.from_fields,
    "flush": FlushCommand.from_fields,
    "count": CountCommand.from_fields,
    "stats": StatsCommand.from_fields,
    "version": VersionCommand.from_fields,
    "events": _events_from,
    "batch": _batch_from,
}


def from_primitive(data: Mapping[str, object]) -> Command:
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
    return _BUILDERS[kind](fields)


#: Every command class, one per kind.
COMMAND_CLASSES: tuple[type[Command], ...] = (
    ListCommand, GetCommand, CreateCommand, UpdateCommand, DeleteCommand, FlushCommand,
    CountCommand, StatsCommand, VersionCommand, EventsCommand, BatchCommand)

__all__ = [
    "COMMAND_CLASSES",
    "LABEL_FIELDS",
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
    "load_chunks",
    "names_labels",
]
