"""Command-line parsing exactly as skalibs' ``subgetopt`` and its number scanners do it.

Facts this module reproduces (s6 2.11 / skalibs 2.13):

* Short options only; parsing stops at the first argument that does not start with ``-``,
  at a lone ``-`` (kept as a positional argument) or after ``--`` (consumed). No permutation.
* Options group (``-qv``); values attach (``-c5``) or follow (``-c 5``).
* ``--foo``, an unknown letter or a missing value is a usage error (exit 100, usage line only).
* Numbers are unsigned 32-bit decimal, digits only: ``""``, ``+5``, `` 5``, ``5x``, ``-1`` and
  anything above 4294967295 are rejected; leading zeros are decimal.
* Every number read from argv or the environment, by every program, is scanned by
  :func:`scan_magnitude`: ASCII digits only (``int()`` would also take ``" 5"``, ``"+5"``,
  ``"5_0"`` and non-ASCII digits such as ``"٥"``), a bound checked before conversion, and never
  more digits converted than the bound has (CPython's ``int()`` refuses strings of more than
  4300 digits with ValueError — a 5000-digit UID or LISTEN_PID must be "invalid", not a crash).
* Group lists are numbers separated by runs of ``,:;`` space, tab, CR, LF; scanning stops at the
  first token that is not a number; only an entirely unparseable non-empty string is an error.

A program declares its command line once, as a :class:`Command`: a table of option letters, each
an :class:`Option` saying whether it takes a value and what it records (:func:`flag`,
:func:`setting`, :func:`collect`, or a function of its own), and how many operands must follow.
The option string :func:`getopt` takes is read off the table, so the letters a program accepts and
what they do cannot drift apart; families of letters several programs share are tables too
(:mod:`s6ipc.chain.options`).
"""

from __future__ import annotations

from .errors import BadInput

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Mapping, Optional, Tuple

__all__ = [
    "UINT32_MAX", "INT_MAX", "UINT64_MAX", "UsageError", "getopt", "gol", "scan_magnitude", "parse_uint",
    "parse_octal", "parse_gidlist", "env_uint", "Option", "flag", "setting", "collect", "parse_gids",
    "Command",
]

UINT32_MAX = 0xFFFFFFFF
INT_MAX = 0x7FFFFFFF
UINT64_MAX = (1 << 64) - 1


class UsageError(Exception):
    """The command line does not parse: the program prints its usage line and exits 100."""


if TYPE_CHECKING:
    Parsed = Tuple[List[Tuple[str, Optional[str]]], List[str]]


def getopt(args: List[str], optstring: str) -> Parsed:
    """Parse *args* (argv without argv[0]) against a getopt-style *optstring*.

    Returns ``(options, rest)`` where options is a list of ``(letter, value or None)`` in
    command-line order. Raises :class:`UsageError`.
    """
    takes_value = {c: optstring[i + 1 : i + 2] == ":" for i, c in enumerate(optstring) if c != ":"}
    options: List[Tuple[str, Optional[str]]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        if arg.startswith("--"):
            raise UsageError(arg)
        j = 1
        while j < len(arg):
            letter = arg[j]
            if letter not in takes_value:
                raise UsageError(letter)
            if takes_value[letter]:
                if j + 1 < len(arg):
                    value = arg[j + 1 :]
                else:
                    i += 1
                    if i >= len(args):
                        raise UsageError(letter)
                    value = args[i]
                options.append((letter, value))
                break
            options.append((letter, None))
            j += 1
        i += 1
    return options, args[i:]


def gol(args: List[str], flags: str, valued: str, long_names: Mapping[str, str]) -> Parsed:
    """Parse *args* as skalibs' ``gol`` (2.14+, the newer programs such as proxy-server) does.

    Facts: short flags in *flags* group (``-12``); a letter of *valued* takes the rest of its word
    or the next word (unless that is ``--``; with no next word the option is silently not set);
    ``--NAME`` is a long flag, ``--NAME=VALUE`` a long option with a value (``--NAME VALUE`` is not);
    *long_names* maps each long name to its letter. ``--`` ends the options (consumed), a word not
    starting with ``-`` or a lone ``-`` ends them (kept). Errors are not usage lines but one fatal
    line (exit 100): ``unrecognized short option: x``, ``invalid option: --=x``,
    ``unrecognized boolean option: --x``, ``unrecognized option with argument: --x=1``.
    Returns ``(options, rest)`` as :func:`getopt`, options named by their letters.
    """
    options: List[Tuple[str, Optional[str]]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg == "-":
            break
        i += 1
        if arg == "--":
            break
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if eq and not name:
                raise BadInput(f"invalid option: {arg}")
            letter = long_names.get(name)
            if letter is None or letter not in (valued if eq else flags):
                kind = "option with argument" if eq else "boolean option"
                raise BadInput(f"unrecognized {kind}: {arg}")
            options.append((letter, value if eq else None))
            continue
        for j, letter in enumerate(arg[1:], 1):
            if letter in valued:
                if j + 1 < len(arg):
                    options.append((letter, arg[j + 1 :]))
                elif i < len(args) and args[i] != "--":
                    options.append((letter, args[i]))
                    i += 1
                break
            if letter not in flags:
                raise BadInput(f"unrecognized short option: {letter}")
            options.append((letter, None))
    return options, args[i:]


_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_DECIMAL_DIGITS = frozenset(_DIGITS[:10])
_OCTAL_DIGITS = frozenset(_DIGITS[:8])


def scan_magnitude(text: str, base: int, limit: int) -> Optional[int]:
    """The value of *text*, one or more ASCII digits of *base* (2-36, lower or upper case), or
    None when that value is above *limit*. Raises ValueError when *text* is empty or holds
    anything else. The one place where a number from outside becomes an ``int``."""
    digits = _DIGITS[:base]
    if not text or not text.isascii() or not all(c in digits for c in text.lower()):
        raise ValueError(text)
    significant = text.lstrip("0")
    if len(significant) > len(_magnitude_text(limit, base)):
        return None
    value = int(significant or "0", base)
    return value if value <= limit else None


def _magnitude_text(limit: int, base: int) -> str:
    out = ""
    while limit:
        limit, digit = divmod(limit, base)
        out = _DIGITS[digit] + out
    return out or "0"


def _scan_whole(text: str, digits: frozenset[str], base: int, limit: int = UINT32_MAX) -> int:
    if not digits.issuperset(text):
        raise UsageError(text)
    try:
        value = scan_magnitude(text, base, limit)
    except ValueError:
        raise UsageError(text) from None
    if value is None:
        raise UsageError(text)
    return value


def parse_uint(text: str, limit: int = UINT32_MAX) -> int:
    """Whole-string unsigned decimal up to *limit*, by default 32 bits (skalibs ``uint0_scan``).
    Raises :class:`UsageError`."""
    return _scan_whole(text, _DECIMAL_DIGITS, 10, limit)


def parse_octal(text: str) -> int:
    """Whole-string octal (skalibs ``uint0_oscan``). Raises :class:`UsageError`."""
    return _scan_whole(text, _OCTAL_DIGITS, 8)


_GID_SEPARATORS = ",:; \t\r\n"


def parse_gidlist(text: str) -> Optional[List[int]]:
    """Scan a supplementary group list as skalibs' ``gid_scanlist`` does (checked on the binary).

    Each number is scanned greedily while it fits in 32 bits (``42949672951`` is 4294967295 then
    1); a run of separators follows each number; scanning stops silently at the first position
    where no digit starts (``5,,x,6`` is [5]). Returns the list, possibly empty for ``""``, or
    None when *text* is non-empty and no number could be scanned at all (``,5``, ``abc``): the
    only case s6 rejects.
    """
    gids: List[int] = []
    pos, n = 0, len(text)
    while pos < n:
        value, start = 0, pos
        while pos < n and "0" <= text[pos] <= "9" and value * 10 + int(text[pos]) <= UINT32_MAX:
            value = value * 10 + int(text[pos])
            pos += 1
        if pos == start:
            break
        gids.append(value)
        while pos < n and text[pos] in _GID_SEPARATORS:
            pos += 1
    if not gids and text:
        return None
    return gids


def env_uint(env: Mapping[str, str], name: str) -> int:
    """``$NAME`` of *env* as skalibs' ``uint0_scan`` reads it, with s6's messages: raises
    :class:`~s6ipc.base.errors.BadInput` ``NAME not set`` or ``invalid $NAME`` (exit 100)."""
    value = env.get(name)
    if value is None:
        raise BadInput(f"{name} not set")
    try:
        return parse_uint(value)
    except UsageError:
        raise BadInput(f"invalid ${name}") from None


# -- a program's command line, declared ------------------------------------------------------------
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Union

    #: Where a program's options land: the keyword arguments of the call it makes (a dict) or an
    #: object whose attributes they set.
    Target = Union[Dict[str, Any], object]
    Apply = Callable[[Any, str], None]


def _put(into: Target, name: str, value: object) -> None:
    if isinstance(into, dict):
        into[name] = value
    else:
        setattr(into, name, value)


def _get(into: Target, name: str) -> Any:
    return into.setdefault(name, []) if isinstance(into, dict) else getattr(into, name)


class Option:
    """What one option letter does: whether it takes a value, and *apply(into, value)*, which
    records it (``""`` as the value of a letter that takes none). Made by :func:`flag`,
    :func:`setting`, :func:`collect`, or directly for anything else (``-U`` reading the
    environment, ``-i``/``-x`` setting two things)."""

    __slots__ = ("takes_value", "apply")

    def __init__(self, takes_value: bool, apply: Apply) -> None:
        self.takes_value = takes_value
        self.apply = apply


def flag(name: str, value: object = True) -> Option:
    """A letter without a value that sets *name* to *value* (``-d``: reuse True, ``-D``: False)."""
    return Option(False, lambda into, _: _put(into, name, value))


def setting(name: str, convert: Callable[[str], object] = str) -> Option:
    """A letter with a value that sets *name* to ``convert(value)``; the last one given wins.
    *convert* raises :class:`UsageError` for a value s6 rejects (``parse_uint``, ``parse_octal``…)."""
    return Option(True, lambda into, value: _put(into, name, convert(value)))


def collect(name: str, convert: Callable[[str], object] = str) -> Option:
    """A letter with a value that may be given again: ``convert(value)`` is appended to the list
    *name* (``-n name``, ``-f fd`` of listen-fds), in command-line order."""
    return Option(True, lambda into, value: _get(into, name).append(convert(value)))


def parse_gids(text: str) -> List[int]:
    """``-G gidlist`` as s6 reads it (:func:`parse_gidlist`); an unusable list is a usage error."""
    groups = parse_gidlist(text)
    if groups is None:
        raise UsageError(text)
    return groups


class Command:
    """A program's command line as s6 declares it: the option letters (each an :class:`Option`),
    then the operands, of which at least *operands* must follow.

    With *program*, the operands are a command line to run: its first word must be there and not
    be empty (``no program``). *missing* is the :class:`UsageError`'s text when operands are short
    (``s6ipc preflight`` prints it; a program prints only its usage line).
    """

    __slots__ = ("options", "optstring", "operands", "missing", "program")

    def __init__(self, options: Mapping[str, Option], operands: int = 0, *,
                 missing: str = "too few arguments", program: bool = False) -> None:
        self.options = dict(options)
        self.optstring = "".join(letter + ":" * option.takes_value for letter, option in options.items())
        self.operands = max(operands, 1) if program else operands
        self.missing = "no program" if program else missing
        self.program = program

    def parse(self, args: List[str], into: Target) -> List[str]:
        """Record the options of *args* (argv without argv[0]) in *into*, in command-line order,
        and return the operands. Raises :class:`UsageError`."""
        opts, rest = getopt(args, self.optstring)
        for letter, value in opts:
            self.options[letter].apply(into, value or "")
        if len(rest) < self.operands or (self.program and not rest[0]):
            raise UsageError(self.missing)
        return rest

    def parse_one(self, args: List[str], into: Target) -> str:
        """:meth:`parse`, for a program that takes exactly one non-empty operand (``pid|name``):
        returns it. Raises :class:`UsageError`."""
        rest = self.parse(args, into)
        if len(rest) != 1 or not rest[0]:
            raise UsageError("one operand")
        return rest[0]
