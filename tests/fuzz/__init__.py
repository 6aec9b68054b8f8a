"""Invariants shared by the hypothesis fuzz tests and the atheris targets.

Everything here is written independently of :mod:`conntrack_lib.commands`:
the option spellings come from the conntrack-tools 1.4.7 manual, and values
are checked with the standard library's own parsers, so a defect in the
builders' tables cannot also hide in the checks that judge them.
"""

from __future__ import annotations

import ipaddress
import pickle
import re
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

#: Keyword names the builders know (DESIGN.md filters plus command fields).
KNOWN_KEYS = (
    "family", "proto", "src", "dst", "reply_src", "reply_dst", "mask_src", "mask_dst",
    "sport", "dport", "reply_sport", "reply_dport", "state", "icmp_type", "icmp_code",
    "icmp_id", "srckey", "dstkey", "reply_srckey", "reply_dstkey", "orig_vtag", "reply_vtag",
    "role", "timeout", "status", "mark", "zone", "orig_zone", "reply_zone", "secmark",
    "labels", "label_add", "label_del", "src_nat", "dst_nat", "any_nat", "id", "output",
    "event_mask", "duration", "match", "commands", "kind", "argv", "binary",
)
#: Strings that look like options, shell syntax, lenient address forms or near-keywords.
HOSTILE_STRINGS = (
    "", " ", "-", "--", "-F", "--flush", "-L -F", "10.0.0.1 -F", "10.0.0.1\n-F", "$(reboot)",
    "`id`", "a;b", "a|b", "\x00", "10.0.0.1\x00", "#", "\\", "'", '"', "::1%eth0", "1.2.3",
    "0x01020304", "01.2.3.4", "1.2.3.4 ", " 1.2.3.4", "\u0663", "\u00b2", "\uff11", "tcp\n",
    "TCP", "Tcp", "ipv4 ", "IPV4", "ALL,", ",", "!", "!ASSURED", "ASSURED,!ASSURED",
    "UNREPLIED", "10.0.0.0/33", "10.0.0.0/08", "10.0.0.0/-1", "::/129", "[::1]:80",
    "1.2.3.4:80", "ffff:ffff::", "255.255.0.0", "255.0.255.0", "xml,save", "save",
    "userspace", "SYN_SENT2", "client", "SERVER", "a,b", "a,,b", "a b", "label\t",
    "\u202e10.0.0.1", "10.0.0.1\u200b", "\ud7ff", "NEW,ALL",
)
VALID_STRINGS = (
    "10.0.0.1", "10.0.0.2", "192.0.2.0/24", "::1", "fe80::1", "2001:db8::/32", "tcp", "udp",
    "icmp", "icmpv6", "gre", "sctp", "dccp", "udplite", "ipv4", "ipv6", "ESTABLISHED",
    "ASSURED", "SEEN_REPLY", "xml", "extended", "id", "ALL", "NEW", "client", "lbl",
)
#: The conntrack command words the builders may start an argv with.
COMMAND_WORDS = frozenset({"-L", "-G", "-I", "-U", "-D", "-F", "-C", "-S", "-E", "-R"})

_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_WORD_LIST = re.compile(r"!?[A-Z_]+(,!?[A-Z_]+)*")
_LABELS = re.compile(r"[A-Za-z0-9_]+(,[A-Za-z0-9_]+)*")
_LOWER_LIST = re.compile(r"[a-z]+(,[a-z]+)*")
_UPPER_LIST = re.compile(r"[A-Z]+(,[A-Z]+)*")
_PROTO_NAMES = frozenset({"tcp", "udp", "udplite", "sctp", "dccp", "gre", "icmp", "icmpv6"})
#: Any value token: no blank, quote, backslash, '#', NUL, and not an option.
SAFE_VALUE = re.compile(r"[A-Za-z0-9_.:/,!\[\]]+")
#: Characters that must never appear in any rendered token.
FORBIDDEN_CHARS = frozenset(" \t\n\r\x00\"'\\#;$`&|<>(){}*?~")


def _number(low: int, high: int) -> Callable[[str], bool]:
    def check(token: str) -> bool:
        return bool(_DECIMAL.fullmatch(token)) and low <= int(token) <= high
    return check


def _address(token: str) -> bool:
    try:
        parsed = ipaddress.ip_address(token)
    except ValueError:
        return False
    # Canonical text only: the all-hex compressed form (Python's before
    # 3.13), Python's own, or glibc inet_ntop's (the last two keep the dotted
    # tail of IPv4-mapped addresses).
    if parsed.version == 4:
        return token in (str(parsed), socket.inet_ntop(socket.AF_INET, parsed.packed))
    return token in (_hex_text(parsed.packed), str(parsed),
                     socket.inet_ntop(socket.AF_INET6, parsed.packed))


def _hex_text(packed: bytes) -> str:
    """Return the RFC 5952 text of an IPv6 address in hex groups only."""
    groups = [f"{int.from_bytes(packed[i:i + 2], 'big'):x}" for i in range(0, 16, 2)]
    best_start, best_len, start = -1, 1, None
    for index, group in enumerate([*groups, "end"]):
        if group == "0":
            start = index if start is None else start
            continue
        if start is not None and index - start > best_len:
            best_start, best_len = start, index - start
        start = None
    if best_start < 0:
        return ":".join(groups)
    head = ":".join(groups[:best_start])
    tail = ":".join(groups[best_start + best_len:])
    return f"{head}::{tail}"


def _address_or_network(token: str) -> bool:
    address, slash, prefix = token.partition("/")
    if not slash:
        return _address(address)
    limit = 32 if "." in address and ":" not in address else 128
    return _address(address) and bool(_DECIMAL.fullmatch(prefix)) and int(prefix) <= limit


def _netmask(token: str) -> bool:
    if not _address(token):
        return False
    value = int(ipaddress.ip_address(token))
    width = ipaddress.ip_address(token).max_prefixlen
    inverted = ~value & ((1 << width) - 1)
    return inverted & (inverted + 1) == 0  # ones then zeros only


def _nat(token: str) -> bool:
    if _address(token):
        return True
    host, colon, port = token.rpartition(":")
    if not colon or not _number(0, 65535)(port):
        return False
    if host.startswith("[") and host.endswith("]"):
        return ":" in host and _address(host[1:-1])
    return "." in host and _address(host)


def _mark(token: str) -> bool:
    value, slash, mask = token.partition("/")
    u32 = _number(0, 2**32 - 1)
    return u32(value) and (not slash or u32(mask))


def _proto(token: str) -> bool:
    return token in _PROTO_NAMES or _number(0, 255)(token)


_U8 = _number(0, 255)
_U16 = _number(0, 65535)
_U32 = _number(0, 2**32 - 1)

#: Options that always take one value, with a check of that value.
VALUE_OPTIONS: dict[str, Callable[[str], bool]] = {
    "-f": lambda t: t in ("ipv4", "ipv6"),
    "-p": _proto,
    "-s": _address_or_network, "-d": _address_or_network,
    "-r": _address, "-q": _address,
    "--mask-src": _netmask, "--mask-dst": _netmask,
    "--sport": _U16, "--dport": _U16, "--reply-port-src": _U16, "--reply-port-dst": _U16,
    "--state": lambda t: bool(re.fullmatch(r"[A-Z][A-Z0-9_]*", t)),
    "--icmp-type": _U8, "--icmp-code": _U8, "--icmp-id": _U16,
    "--icmpv6-type": _U8, "--icmpv6-code": _U8, "--icmpv6-id": _U16,
    "--srckey": _U16, "--dstkey": _U16, "--reply-key-src": _U16, "--reply-key-dst": _U16,
    "--orig-vtag": _U32, "--reply-vtag": _U32,
    "--role": lambda t: bool(re.fullmatch(r"[a-z]+", t)),
    "-t": _number(0, 2**31 - 1),
    "-u": lambda t: bool(_WORD_LIST.fullmatch(t)),
    "-m": _mark,
    "-w": _U16, "--orig-zone": _U16, "--reply-zone": _U16,
    "-c": _U32, "-i": _U32,
    "-l": lambda t: bool(_LABELS.fullmatch(t)),
    "--label-add": lambda t: bool(_LABELS.fullmatch(t)),
    "-o": lambda t: bool(_LOWER_LIST.fullmatch(t)),
    "-e": lambda t: bool(_UPPER_LIST.fullmatch(t)),
}
#: Options that may stand alone or take one value.
OPTIONAL_VALUE_OPTIONS: dict[str, Callable[[str], bool]] = {
    "-n": _nat, "-g": _nat, "-j": _nat,
    "--label-del": lambda t: bool(_LABELS.fullmatch(t)),
}
OPTION_TOKENS = frozenset(VALUE_OPTIONS) | frozenset(OPTIONAL_VALUE_OPTIONS)
#: Options rendered once per value: label names (a comma list loses all but
#: its first name on 1.4.9; every release merges repeated label options).
REPEATABLE_OPTIONS = frozenset({"-l", "--label-add", "--label-del"})


def _value_problem(option: str, value: str | None) -> str | None:
    """Return why ``value`` may not follow ``option``, or None when it may."""
    if value is None:
        return None if option in OPTIONAL_VALUE_OPTIONS else f"{option} needs a value"
    if not SAFE_VALUE.fullmatch(value) or value.startswith("-"):
        return f"unsafe value {value!r} after {option}"
    check = VALUE_OPTIONS.get(option) or OPTIONAL_VALUE_OPTIONS[option]
    return None if check(value) else f"malformed value {value!r} after {option}"


def argv_problems(argv: Sequence[object]) -> list[str]:
    """Return every way ``argv`` breaks the rendering contract (empty when sound).

    The contract: a command word first, then options from the allow-list,
    each at most once, each followed by at most one well-formed value token.
    ``-R`` is followed by exactly ``-`` (the load file is on stdin).
    """
    if not argv or not all(isinstance(token, str) for token in argv):
        return [f"not a non-empty tuple of strings: {argv!r}"]
    tokens = [str(token) for token in argv]
    problems = [f"forbidden character in {t!r}" for t in tokens
                if FORBIDDEN_CHARS.intersection(t)]
    if tokens[0] not in COMMAND_WORDS:
        problems.append(f"first token {tokens[0]!r} is not a command word")
    if tokens[0] == "-R":
        return problems + ([] if tokens == ["-R", "-"] else [f"bad batch argv {tokens!r}"])
    seen: set[str] = set()
    index = 1
    while index < len(tokens):
        option = tokens[index]
        if option not in OPTION_TOKENS:
            problems.append(f"{option!r} is not an allowed option")
            index += 1
            continue
        if option in seen and option not in REPEATABLE_OPTIONS:
            problems.append(f"{option} repeated")
        seen.add(option)
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        value = None if following is None or following in OPTION_TOKENS else following
        problem = _value_problem(option, value)
        if problem:
            problems.append(problem)
        index += 1 if value is None else 2
    return problems


def assert_sound_argv(argv: Sequence[object]) -> None:
    """Fail with every broken rule when ``argv`` breaks the rendering contract."""
    problems = argv_problems(argv)
    assert not problems, f"{argv!r}: {problems}"


def assert_sound_command(command: Any) -> None:
    """Check a built command: argv, load-file line, primitive round trip."""
    from conntrack_lib import commands
    from conntrack_lib.exceptions import InvalidArgumentError

    argv = command.argv()
    assert_sound_argv(argv)
    assert isinstance(repr(command), str)
    if isinstance(command, commands.BatchCommand):
        text = command.stdin()
        assert text.endswith("\n") and text.count("\n") == len(command)
        for line, member in zip(text.splitlines(), command, strict=True):
            assert line.split() == list(member.argv())
            assert_sound_argv(member.argv())
    elif command.loadable:
        assert command.load_line().split() == list(argv)
    else:
        try:
            command.load_line()
        except InvalidArgumentError:
            pass
        else:
            raise AssertionError(f"{command!r} gave a load line but is not loadable")
    rebuilt = commands.from_primitive(command.to_primitive())
    assert rebuilt == command and rebuilt.argv() == argv


def timed(func: Callable[..., Any], *args: Any, limit: float = 1.0, **kwargs: Any) -> Any:
    """Call ``func`` and fail if it takes ``limit`` seconds or more; return its result.

    A generator result is exhausted inside the timed window.
    """
    start = time.perf_counter()
    try:
        result = func(*args, **kwargs)
        if hasattr(result, "__next__"):
            result = list(result)
    finally:
        elapsed = time.perf_counter() - start
        assert elapsed < limit, f"{getattr(func, '__name__', func)} took {elapsed:.2f} s"
    return result


# ---------------------------------------------------------------------------
# Builders: refused cleanly, or built soundly


def documented_type_error(builder: type, kwargs: Mapping[str, Any]) -> bool:
    """Tell whether the builder's signature makes ``kwargs`` a TypeError.

    ``CreateCommand`` requires ``timeout`` and ``UpdateCommand`` requires
    ``match`` as keyword-only parameters; nothing else may raise TypeError.
    """
    required = {"CreateCommand": "timeout", "UpdateCommand": "match"}.get(builder.__name__)
    return required is not None and required not in kwargs


def check_refusal(err: Any) -> None:
    """Check an InvalidArgumentError: a ValueError naming a field, rebuildable."""
    assert isinstance(err, ValueError)
    assert isinstance(err.field, str) and isinstance(err.reason, str)
    assert type(err)(*err.args).args == err.args
    assert err.field in str(err)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.field, copy.reason) == (err.field, err.reason)


def build_checked(builder: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Build a command and check it; return None when it was refused as allowed.

    :raises AssertionError: any other exception, or a built command that
        breaks the rendering contract.
    """
    from conntrack_lib.exceptions import InvalidArgumentError

    try:
        command = builder(*args, **kwargs)
    except InvalidArgumentError as err:
        check_refusal(err)
        return None
    except TypeError as err:
        if not (isinstance(builder, type) and documented_type_error(builder, kwargs)):
            raise AssertionError(f"undocumented TypeError: {err}") from err
        return None
    assert_sound_command(command)
    return command
