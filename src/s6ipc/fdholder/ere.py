"""POSIX extended regular expressions with glibc's semantics, for s6-fdholderd's rights.

s6-fdholderd compiles its ``S6_FDHOLDER_*_REGEX`` rights with ``regcomp(REG_EXTENDED|REG_NOSUB)``
and tests identifiers with ``regexec``: an unanchored *search* whose only result is "matches or
not". Python's ``re`` speaks another dialect, so the pattern is parsed here the way glibc's
``regcomp`` parses it (same tokens, same error for the same mistake) into a small syntax tree,
which is then run by a Thompson NFA turned lazily into a DFA: a search costs a bounded number of
steps per subject byte, whatever the pattern and the subject (a backtracking matcher such as
Python's ``re`` takes exponential time on ``^([a-z0-9]+-?)+$`` and a subject that almost matches,
and the identifiers searched are chosen by the daemon's clients). The tree can also be re-emitted
as an equivalent Python pattern over bytes (:func:`python_pattern`), used only for back-references.

Some facts about glibc's ERE (2.36, checked with ``regcomp`` through ctypes and against the
s6-fdholderd binary) that this relies on:

* s6-fdholderd never calls ``setlocale``: it runs in the C locale, where a character is a byte,
  ranges compare byte values, and the classes (``[:alpha:]``…) are ASCII only — ``é`` (0xe9) is
  matched by ``.``, ``[^a]`` and ``[\\x80-\\xff]`` but by no class.
* ``^`` and ``$`` are anchors anywhere (``a^b`` never matches). For a subject without a newline
  they match only at its ends — ``$`` does not match before a final newline as Python's does.
  With a newline, glibc's DFA (used when the pattern has no back-reference) has a quirk even
  without REG_NEWLINE: ``^`` also matches right after a newline *that the match consumed*, and
  ``$`` right before a newline that the match goes on to consume (``.^`` matches ``"a\\n"``,
  ``^b`` does not match ``"a\\nb"``, ``$\\n`` matches ``"\\n"``, ``a$`` does not match
  ``"a\\nb"``). No Python pattern says "the match consumed that newline"; the NFA checks
  anchors the way glibc's transition tables do.
* Backslash: ``\\1``-``\\9`` are back-references (only to groups already closed, and not
  across ``|``), ``\\w \\W \\s \\S \\b \\B \\< \\> \\``` \\'`` are GNU
  operators, any other escaped byte is itself — so ``\\d`` is the letter ``d``, not a digit
  class. Inside brackets a backslash is an ordinary byte (``[\\d]`` is ``\\`` or ``d``).
* A repetition operator with nothing to repeat (pattern start, after ``(``, ``|`` or an anchor)
  is "Invalid preceding regular expression"; stacked operators (``a**``, ``a{2}{3}``) are valid.
  An unmatched ``)`` and a ``}`` outside an interval are literal; ``{,n}`` means ``{0,n}``;
  counts above 32767 are "Regular expression too big"; ``[`` or ``[^`` at the very end is
  "Invalid regular expression".
* Brackets: ``]`` first is literal, ``-`` is literal first or last, ``[:name:]``,
  ``[=c=]`` and ``[.c.]`` take single bytes only in the C locale (else "Invalid collation
  character"), a class cannot bound a range, a reversed range is "Invalid range end".
* With REG_NOSUB only the existence of a match matters, so POSIX's leftmost-longest rule and
  Python's leftmost-first rule give the same answer for the same language.
* The subject is a C string: it ends at its first NUL byte.
"""

from __future__ import annotations

import functools

from ..base.typeshim import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, FrozenSet, List, Optional, Set, Tuple, Union

__all__ = [
    "REG_BADPAT", "REG_ECOLLATE", "REG_ECTYPE", "REG_EESCAPE", "REG_ESUBREG", "REG_EBRACK", "REG_EPAREN",
    "REG_EBRACE", "REG_BADBR", "REG_ERANGE", "REG_ESPACE", "REG_BADRPT", "REG_ESIZE", "RE_DUP_MAX",
    "EreError", "Chars", "Anchor", "Concat", "Alt", "Repeat", "Group", "BackRef", "EMPTY",
    "python_pattern", "Ere", "parse", "compile_ere", "search",
]

#: glibc's regerror() texts.
REG_BADPAT = "Invalid regular expression"
REG_ECOLLATE = "Invalid collation character"
REG_ECTYPE = "Invalid character class name"
REG_EESCAPE = "Trailing backslash"
REG_ESUBREG = "Invalid back reference"
REG_EBRACK = "Unmatched [, [^, [:, [., or [="
REG_EPAREN = "Unmatched ( or \\("
REG_EBRACE = "Unmatched \\{"
REG_BADBR = "Invalid content of \\{\\}"
REG_ERANGE = "Invalid range end"
REG_ESPACE = "Memory exhausted"
REG_BADRPT = "Invalid preceding regular expression"
REG_ESIZE = "Regular expression too big"

RE_DUP_MAX = 0x7FFF
_BRACKET_NAME_MAX = 32


class EreError(ValueError):
    """The pattern does not compile; ``str()`` is glibc's ``regerror`` text."""


def _range(a: int, b: int) -> FrozenSet[int]:
    return frozenset(range(a, b + 1))


_CLASSES = {
    b"alpha": _range(65, 90) | _range(97, 122),
    b"upper": _range(65, 90),
    b"lower": _range(97, 122),
    b"digit": _range(48, 57),
    b"xdigit": _range(48, 57) | _range(65, 70) | _range(97, 102),
    b"space": frozenset({9, 10, 11, 12, 13, 32}),
    b"blank": frozenset({9, 32}),
    b"print": _range(32, 126),
    b"graph": _range(33, 126),
    b"cntrl": _range(0, 31) | {127},
    b"punct": _range(33, 47) | _range(58, 64) | _range(91, 96) | _range(123, 126),
}
_CLASSES[b"alnum"] = _CLASSES[b"alpha"] | _CLASSES[b"digit"]
_WORD = _CLASSES[b"alnum"] | frozenset({95})
_ALL = _range(0, 255)

_NEWLINE = 10
# token types (outside brackets)
_CHAR, _ALT, _STAR, _PLUS, _QMARK, _OPEN_DUP, _CLOSE_DUP = range(7)
_OPEN_SUB, _CLOSE_SUB, _OPEN_BRACKET, _PERIOD, _ANCHOR, _BACKREF = range(7, 13)
_SET, _BACKSLASH_END, _END = range(13, 16)
# token types inside brackets
_B_CHAR, _B_RANGE, _B_CLOSE, _B_NONMATCH, _B_COLL, _B_EQUIV, _B_CLASS, _B_END = range(8)
# bracket element kinds
_SB_CHAR, _COLL_SYM, _EQUIV_CLASS, _CHAR_CLASS = range(4)

_BACKSLASH_SETS = {
    ord("w"): _WORD,
    ord("W"): _ALL - _WORD,
    ord("s"): _CLASSES[b"space"],
    ord("S"): _ALL - _CLASSES[b"space"],
}
_BACKSLASH_ANCHORS = {
    ord("<"): "word_first",
    ord(">"): "word_last",
    ord("b"): "word_delim",
    ord("B"): "not_word_delim",
    ord("`"): "buf_first",
    ord("'"): "buf_last",
}
_PLAIN = {
    ord("|"): _ALT,
    ord("*"): _STAR,
    ord("+"): _PLUS,
    ord("?"): _QMARK,
    ord("{"): _OPEN_DUP,
    ord("}"): _CLOSE_DUP,
    ord("("): _OPEN_SUB,
    ord(")"): _CLOSE_SUB,
    ord("["): _OPEN_BRACKET,
    ord("."): _PERIOD,
}


@dataclass
class _Token:
    type: int
    c: int = 0
    length: int = 1
    anchor: str = ""
    chars: Optional[FrozenSet[int]] = None


@dataclass
class _Elem:
    kind: int
    c: int = 0
    name: bytes = b""


# -- the syntax tree --------------------------------------------------------------------------
@dataclass(frozen=True)
class Chars:
    """One byte out of a set."""

    chars: FrozenSet[int]


@dataclass(frozen=True)
class Anchor:
    """A zero-width condition: line_first, line_last, buf_first, buf_last, word_first, word_last,
    word_delim, not_word_delim."""

    kind: str


@dataclass(frozen=True)
class Concat:
    items: Tuple[Node, ...]


@dataclass(frozen=True)
class Alt:
    items: Tuple[Node, ...]


@dataclass(frozen=True)
class Repeat:
    item: Node
    low: int
    high: int  # -1: unbounded


@dataclass(frozen=True)
class Group:
    index: int
    item: Node


@dataclass(frozen=True)
class BackRef:
    index: int


if TYPE_CHECKING:
    Node = Union[Chars, Anchor, Concat, Alt, Repeat, Group, BackRef]
EMPTY = Concat(())


class _Parser:
    """A recursive-descent copy of glibc's regcomp parser (parse_reg_exp and friends)."""

    def __init__(self, pattern: bytes) -> None:
        self.p = pattern
        self.n = len(pattern)
        self.pos = 0
        self.tok = _Token(_END, 0, 0)
        self.groups = 0
        self.completed = 0  # bitmask of closed groups 1..9, as glibc's completed_bkref_map
        self.has_backref = False

    # -- tokens --------------------------------------------------------------------------
    def _peek(self) -> _Token:
        if self.pos >= self.n:
            return _Token(_END, 0, 0)
        c = self.p[self.pos]
        if c == 0x5C:  # backslash
            if self.pos + 1 >= self.n:
                return _Token(_BACKSLASH_END, c, 1)
            c2 = self.p[self.pos + 1]
            if 0x31 <= c2 <= 0x39:
                return _Token(_BACKREF, c2, 2)
            if c2 in _BACKSLASH_ANCHORS:
                return _Token(_ANCHOR, c2, 2, anchor=_BACKSLASH_ANCHORS[c2])
            if c2 in _BACKSLASH_SETS:
                return _Token(_SET, c2, 2, chars=_BACKSLASH_SETS[c2])
            return _Token(_CHAR, c2, 2)
        if c == 0x5E:
            return _Token(_ANCHOR, c, 1, anchor="line_first")
        if c == 0x24:
            return _Token(_ANCHOR, c, 1, anchor="line_last")
        return _Token(_PLAIN.get(c, _CHAR), c, 1)

    def _fetch(self) -> None:
        self.tok = self._peek()
        self.pos += self.tok.length

    # -- grammar -------------------------------------------------------------------------
    def parse(self) -> Node:
        self._fetch()
        return self._reg_exp(0)

    def _reg_exp(self, nest: int) -> Node:
        initial = self.completed
        branches = [self._branch(nest)]
        while self.tok.type == _ALT:
            self._fetch()
            if self.tok.type not in (_ALT, _END) and (nest == 0 or self.tok.type != _CLOSE_SUB):
                accumulated = self.completed
                self.completed = initial
                branches.append(self._branch(nest))
                self.completed |= accumulated
            else:
                branches.append(EMPTY)
        return branches[0] if len(branches) == 1 else Alt(tuple(branches))

    def _branch(self, nest: int) -> Node:
        parts = [self._expression(nest)]
        while self.tok.type not in (_ALT, _END) and (nest == 0 or self.tok.type != _CLOSE_SUB):
            parts.append(self._expression(nest))
        return parts[0] if len(parts) == 1 else Concat(tuple(parts))

    def _expression(self, nest: int) -> Node:
        tok = self.tok
        t = tok.type
        node: Node
        if t in (_CHAR, _CLOSE_SUB, _CLOSE_DUP):
            # an unmatched ')' (only reachable at nesting level 0) and a lone '}' are literal
            node = Chars(frozenset((tok.c,)))
        elif t == _OPEN_SUB:
            node = self._sub_exp(nest + 1)
        elif t == _OPEN_BRACKET:
            node = Chars(frozenset(self._bracket()))
        elif t == _BACKREF:
            index = tok.c - 0x30
            if not self.completed & (1 << index):
                raise EreError(REG_ESUBREG)
            self.has_backref = True
            node = BackRef(index)
        elif t in (_OPEN_DUP, _STAR, _PLUS, _QMARK):
            raise EreError(REG_BADRPT)
        elif t == _ANCHOR:
            self._fetch()
            return Anchor(tok.anchor)  # an anchor takes no repetition: "^*" is an error
        elif t == _PERIOD:
            node = Chars(_ALL)
        elif t == _SET:
            assert tok.chars is not None
            node = Chars(tok.chars)
        elif t == _BACKSLASH_END:
            raise EreError(REG_EESCAPE)
        else:  # _ALT, _END: an empty expression
            return EMPTY
        self._fetch()
        while self.tok.type in (_STAR, _PLUS, _QMARK, _OPEN_DUP):
            node = self._dup(node)
        return node

    def _sub_exp(self, nest: int) -> Node:
        self.groups += 1
        index = self.groups
        self._fetch()
        inner: Node
        if self.tok.type == _CLOSE_SUB:
            inner = EMPTY
        else:
            inner = self._reg_exp(nest)
            if self.tok.type != _CLOSE_SUB:
                raise EreError(REG_EPAREN)
        if index <= 9:
            self.completed |= 1 << index
        return Group(index, inner)

    def _number(self) -> int:
        """glibc's fetch_number: -1 no digits, -2 invalid, else the value (capped at DUP_MAX+1)."""
        num = -1
        while True:
            self._fetch()
            tok = self.tok
            if tok.type == _END:
                return -2
            if tok.type == _CLOSE_DUP or tok.c == 0x2C:
                return num
            if tok.type != _CHAR or not 0x30 <= tok.c <= 0x39 or num == -2:
                num = -2
            elif num == -1:
                num = tok.c - 0x30
            else:
                num = min(RE_DUP_MAX + 1, num * 10 + tok.c - 0x30)

    def _dup(self, node: Node) -> Node:
        t = self.tok.type
        if t == _OPEN_DUP:
            end = 0
            start = self._number()
            if start == -1:
                if self.tok.type == _CHAR and self.tok.c == 0x2C:
                    start = 0
                else:
                    raise EreError(REG_BADBR)
            if start != -2:
                if self.tok.type == _CLOSE_DUP:
                    end = start
                elif self.tok.type == _CHAR and self.tok.c == 0x2C:
                    end = self._number()
                else:
                    end = -2
            if start == -2 or end == -2:
                raise EreError(REG_EBRACE if self.tok.type == _END else REG_BADBR)
            if (end != -1 and start > end) or self.tok.type != _CLOSE_DUP:
                raise EreError(REG_BADBR)
            if (start if end == -1 else end) > RE_DUP_MAX:
                raise EreError(REG_ESIZE)
        else:
            start, end = {_STAR: (0, -1), _PLUS: (1, -1), _QMARK: (0, 1)}[t]
        self._fetch()
        return Repeat(node, start, end)

    # -- brackets ------------------------------------------------------------------------
    def _peek_bracket(self) -> _Token:
        if self.pos >= self.n:
            return _Token(_B_END, 0, 0)
        c = self.p[self.pos]
        if c == 0x5B:
            c2 = self.p[self.pos + 1] if self.pos + 1 < self.n else 0
            kind = {0x2E: _B_COLL, 0x3D: _B_EQUIV, 0x3A: _B_CLASS}.get(c2)
            if kind is not None:
                return _Token(kind, c2, 2)
            return _Token(_B_CHAR, c, 1)
        kind = {0x2D: _B_RANGE, 0x5D: _B_CLOSE, 0x5E: _B_NONMATCH}.get(c, _B_CHAR)
        return _Token(kind, c, 1)

    def _bracket_symbol(self, tok: _Token) -> _Elem:
        if self.pos >= self.n:
            raise EreError(REG_EBRACK)
        name = bytearray()
        while True:
            if len(name) >= _BRACKET_NAME_MAX:
                raise EreError(REG_EBRACK)
            ch = self.p[self.pos]
            self.pos += 1
            if self.pos >= self.n:
                raise EreError(REG_EBRACK)
            if ch == tok.c and self.p[self.pos] == 0x5D:
                break
            name.append(ch)
        self.pos += 1
        kind = {_B_COLL: _COLL_SYM, _B_EQUIV: _EQUIV_CLASS, _B_CLASS: _CHAR_CLASS}[tok.type]
        return _Elem(kind, name=bytes(name))

    def _bracket_element(self, tok: _Token, accept_hyphen: bool) -> _Elem:
        self.pos += tok.length
        if tok.type in (_B_COLL, _B_EQUIV, _B_CLASS):
            return self._bracket_symbol(tok)
        if tok.type == _B_RANGE and not accept_hyphen and self._peek_bracket().type != _B_CLOSE:
            raise EreError(REG_ERANGE)
        return _Elem(_SB_CHAR, c=tok.c)

    @staticmethod
    def _single(elem: _Elem) -> int:
        """The byte a COLL_SYM or EQUIV_CLASS names (C locale: exactly one byte)."""
        if len(elem.name) != 1:
            raise EreError(REG_ECOLLATE)
        return elem.name[0]

    def _add(self, chars: Set[int], elem: _Elem) -> None:
        if elem.kind == _SB_CHAR:
            chars.add(elem.c)
        elif elem.kind == _CHAR_CLASS:
            cls = _CLASSES.get(elem.name)
            if cls is None:
                raise EreError(REG_ECTYPE)
            chars |= cls
        else:
            chars.add(self._single(elem))

    def _add_range(self, chars: Set[int], start: _Elem, end: _Elem) -> None:
        if {start.kind, end.kind} & {_EQUIV_CLASS, _CHAR_CLASS}:
            raise EreError(REG_ERANGE)
        a = start.c if start.kind == _SB_CHAR else self._single(start)
        b = end.c if end.kind == _SB_CHAR else self._single(end)
        if a > b:
            raise EreError(REG_ERANGE)
        chars |= _range(a, b)

    def _bracket(self) -> Set[int]:
        chars: Set[int] = set()
        tok = self._peek_bracket()
        if tok.type == _B_END:
            raise EreError(REG_BADPAT)
        negate = False
        if tok.type == _B_NONMATCH:
            negate = True
            self.pos += tok.length
            tok = self._peek_bracket()
            if tok.type == _B_END:
                raise EreError(REG_BADPAT)
        if tok.type == _B_CLOSE:
            tok = _Token(_B_CHAR, tok.c, tok.length)
        first = True
        while True:
            start = self._bracket_element(tok, first)
            first = False
            tok = self._peek_bracket()
            end_tok: Optional[_Token] = None
            if start.kind not in (_CHAR_CLASS, _EQUIV_CLASS):
                if tok.type == _B_END:
                    raise EreError(REG_EBRACK)
                if tok.type == _B_RANGE:
                    self.pos += tok.length
                    tok2 = self._peek_bracket()
                    if tok2.type == _B_END:
                        raise EreError(REG_EBRACK)
                    if tok2.type == _B_CLOSE:
                        self.pos -= tok.length
                        tok = _Token(_B_CHAR, tok.c, tok.length)
                    else:
                        end_tok = tok2
            if end_tok is not None:
                end = self._bracket_element(end_tok, True)
                tok = self._peek_bracket()
                self._add_range(chars, start, end)
            else:
                self._add(chars, start)
            if tok.type == _B_END:
                raise EreError(REG_EBRACK)
            if tok.type == _B_CLOSE:
                break
        self.pos += tok.length
        return set(_ALL - chars) if negate else chars


# -- Python emission --------------------------------------------------------------------------
_W = "[0-9A-Za-z_]"
_PYTHON_ANCHORS = {
    "line_first": r"\A",
    "line_last": r"\Z",
    "buf_first": r"\A",
    "buf_last": r"\Z",
    "word_first": rf"(?<!{_W})(?={_W})",
    "word_last": rf"(?<={_W})(?!{_W})",
    "word_delim": rf"(?:(?<={_W})(?!{_W})|(?<!{_W})(?={_W}))",
    "not_word_delim": rf"(?:(?<={_W})(?={_W})|(?<!{_W})(?!{_W}))",
}


def _set_pattern(chars: FrozenSet[int]) -> str:
    """A Python class matching exactly the bytes in *chars*."""
    if not chars:
        return "[^\\x00-\\xff]"
    parts: List[str] = []
    ordered = sorted(chars)
    start = prev = ordered[0]
    for c in ordered[1:] + [-2]:
        if c == prev + 1:
            prev = c
            continue
        parts.append(f"\\x{start:02x}" if start == prev else f"\\x{start:02x}-\\x{prev:02x}")
        start = prev = c
    return "[" + "".join(parts) + "]"


def python_pattern(node: Node) -> str:
    """The Python pattern (text over latin-1 code points) for *node*, anchors at the string ends."""
    if isinstance(node, Chars):
        return _set_pattern(node.chars)
    if isinstance(node, Anchor):
        return _PYTHON_ANCHORS[node.kind]
    if isinstance(node, Concat):
        return "".join(python_pattern(item) for item in node.items)
    if isinstance(node, Alt):
        return "(?:" + "|".join(python_pattern(item) for item in node.items) + ")"
    if isinstance(node, Repeat):
        high = "" if node.high < 0 else str(node.high)
        return f"(?:{python_pattern(node.item)}){{{node.low},{high}}}"
    if isinstance(node, Group):
        return "(" + python_pattern(node.item) + ")"
    return f"(?:\\{node.index})"


# -- the NFA for glibc's newline quirk ---------------------------------------------------------
_CTX_WORD, _CTX_NEWLINE, _CTX_BEGBUF, _CTX_ENDBUF = 1, 2, 4, 8
#: beyond, the pattern is refused ("Memory exhausted"); glibc would take seconds to compile it
_NFA_MAX_STATES = 1 << 18


def _anchor_ok(kind: str, prev: int, nxt: int) -> bool:
    """Whether anchor *kind* holds between contexts *prev* and *next* (glibc's constraints)."""
    if kind == "line_first":
        return bool(prev & _CTX_NEWLINE)
    if kind == "line_last":
        return bool(nxt & _CTX_NEWLINE)
    if kind == "buf_first":
        return bool(prev & _CTX_BEGBUF)
    if kind == "buf_last":
        return bool(nxt & _CTX_ENDBUF)
    prev_word, next_word = bool(prev & _CTX_WORD), bool(nxt & _CTX_WORD)
    if kind == "word_first":
        return not prev_word and next_word
    if kind == "word_last":
        return prev_word and not next_word
    if kind == "word_delim":
        return prev_word != next_word
    return prev_word == next_word  # not_word_delim


class _TooBig(Exception):
    pass


class _Nfa:
    """A Thompson NFA: states are ("chars", set, next), ("anchor", kind, next), ("split", a, b),
    ("match",). Anchors are checked like glibc's DFA does: the context before a position is the
    byte the match consumed to get there (a newline counts as a line boundary) or, where the
    match starts, the byte before it (a newline does not count); the context after a position is
    the byte the match consumes next (newline counts) or, where the match ends, the byte after
    it (newline does not count)."""

    def __init__(self, node: Node) -> None:
        self.kinds: List[str] = []
        self.args: List[Tuple[object, int]] = []
        self.match = self._add("match", None, -1)
        self.start = self._build(node, self.match)

    def _add(self, kind: str, arg: object, nxt: int) -> int:
        if len(self.kinds) >= _NFA_MAX_STATES:
            raise _TooBig()
        self.kinds.append(kind)
        self.args.append((arg, nxt))
        return len(self.kinds) - 1

    def _build(self, node: Node, nxt: int) -> int:
        if isinstance(node, Chars):
            return self._add("chars", node.chars, nxt)
        if isinstance(node, Anchor):
            return self._add("anchor", node.kind, nxt)
        if isinstance(node, Concat):
            for item in reversed(node.items):
                nxt = self._build(item, nxt)
            return nxt
        if isinstance(node, Alt):
            entries = [self._build(item, nxt) for item in node.items]
            state = entries[-1]
            for entry in reversed(entries[:-1]):
                state = self._add("split", entry, state)
            return state
        if isinstance(node, Group):
            return self._build(node.item, nxt)
        assert isinstance(node, Repeat)
        state = nxt
        if node.high < 0:
            loop = self._add("split", -1, nxt)
            body = self._build(node.item, loop)
            self.args[loop] = (body, nxt)
            state = loop
        else:
            for _ in range(node.high - node.low):
                body = self._build(node.item, state)
                state = self._add("split", body, state)
        for _ in range(node.low):
            state = self._build(node.item, state)
        return state

    def _closure(self, states: Set[int], prev: int, nxt: int) -> Set[int]:
        seen: Set[int] = set()
        stack = list(states)
        while stack:
            s = stack.pop()
            if s in seen:
                continue
            seen.add(s)
            kind = self.kinds[s]
            arg, follow = self.args[s]
            if kind == "split":
                stack.append(arg)  # type: ignore[arg-type]
                stack.append(follow)
            elif kind == "anchor" and _anchor_ok(arg, prev, nxt):  # type: ignore[arg-type]
                stack.append(follow)
        return seen

    def search(self, s: bytes) -> bool:
        n = len(s)

        def byte_ctx(c: int, newline_counts: bool) -> int:
            if c in _WORD:
                return _CTX_WORD
            return _CTX_NEWLINE if (newline_counts and c == _NEWLINE) else 0

        # threads: states reached after consuming s[i-1] (their "prev" context is that byte's)
        threads: Set[int] = set()
        for i in range(n + 1):
            halt_ctx = _CTX_NEWLINE | _CTX_ENDBUF if i == n else byte_ctx(s[i], False)
            start_prev = _CTX_NEWLINE | _CTX_BEGBUF if i == 0 else byte_ctx(s[i - 1], False)
            groups = [(threads, byte_ctx(s[i - 1], True) if i else 0), ({self.start}, start_prev)]
            advanced: Set[int] = set()
            for origin, prev in groups:
                if not origin:
                    continue
                if self.match in self._closure(origin, prev, halt_ctx):
                    return True
                if i == n:
                    continue
                c = s[i]
                for st in self._closure(origin, prev, byte_ctx(c, True)):
                    if self.kinds[st] == "chars":
                        chars, follow = self.args[st]
                        if c in chars:  # type: ignore[operator]
                            advanced.add(follow)
            threads = advanced
        return False


#: contexts of the byte before a position, as the NFA's anchors see them
_PREV_BEGIN, _PREV_OTHER, _PREV_WORD, _PREV_NEWLINE = 0, 1, 2, 3
_PREV_CONTEXTS = (  # (for threads that consumed the byte, for a match starting after it)
    (0, _CTX_NEWLINE | _CTX_BEGBUF), (0, 0), (_CTX_WORD, _CTX_WORD), (_CTX_NEWLINE, 0))
_DFA_MAX_STATES = 2048  # beyond, the cache is dropped and rebuilt: still linear per byte
_UNKNOWN, _MATCHED = -1, -2


def _prev_class(c: int) -> int:
    if c in _WORD:
        return _PREV_WORD
    return _PREV_NEWLINE if c == _NEWLINE else _PREV_OTHER


class _Dfa:
    """The NFA's subset construction, built lazily while searching (as glibc's DFA is).

    A DFA state is (the NFA threads alive after the last byte, the class of that byte). Row
    ``table[state]`` has one entry per next byte: the next state, :data:`_UNKNOWN` until the
    NFA computed it, or :data:`_MATCHED` when the match can end before that byte. Each entry is
    computed once; afterwards a search costs one list look-up per subject byte, whatever the
    pattern, and never backtracks.
    """

    def __init__(self, nfa: _Nfa) -> None:
        self.nfa = nfa
        self._reset()

    def _reset(self) -> None:
        self.states: List[Tuple[FrozenSet[int], int]] = []
        self.index: Dict[Tuple[FrozenSet[int], int], int] = {}
        self.table: List[List[int]] = []
        self.final: List[Optional[bool]] = []
        self.begin = self._state(frozenset(), _PREV_BEGIN)

    def _state(self, threads: FrozenSet[int], prev: int) -> int:
        key = (threads, prev)
        found = self.index.get(key)
        if found is None:
            found = self.index[key] = len(self.states)
            self.states.append(key)
            self.table.append([_UNKNOWN] * 256)
            self.final.append(None)
        return found

    def _origins(self, state: int) -> List[Tuple[Set[int], int]]:
        threads, prev = self.states[state]
        consumed, fresh = _PREV_CONTEXTS[prev]
        return [(set(threads), consumed), ({self.nfa.start}, fresh)]

    def _halts(self, state: int, ctx: int) -> bool:
        nfa = self.nfa
        return any(origin and nfa.match in nfa._closure(origin, prev, ctx)
                   for origin, prev in self._origins(state))

    def _fill(self, state: int, c: int) -> int:
        nfa = self.nfa
        if self._halts(state, _CTX_WORD if c in _WORD else 0):
            self.table[state][c] = _MATCHED
            return _MATCHED
        advanced: Set[int] = set()
        after = _CTX_WORD if c in _WORD else (_CTX_NEWLINE if c == _NEWLINE else 0)
        for origin, prev in self._origins(state):
            for st in nfa._closure(origin, prev, after) if origin else ():
                if nfa.kinds[st] == "chars":
                    chars, follow = nfa.args[st]
                    if c in chars:  # type: ignore[operator]
                        advanced.add(follow)
        nxt = self._state(frozenset(advanced), _prev_class(c))
        self.table[state][c] = nxt
        return nxt

    def search(self, s: bytes) -> bool:
        if len(self.states) > _DFA_MAX_STATES:
            self._reset()
        table = self.table
        state = self.begin
        for c in s:
            nxt = table[state][c]
            if nxt < 0:
                if nxt == _MATCHED or self._fill(state, c) == _MATCHED:
                    return True
                nxt = table[state][c]
            state = nxt
        verdict = self.final[state]
        if verdict is None:
            verdict = self.final[state] = self._halts(state, _CTX_NEWLINE | _CTX_ENDBUF)
        return verdict


class Ere:
    """A compiled POSIX ERE: :meth:`search` says whether it matches somewhere in a C string.

    Patterns without back-references are run by a lazily built DFA (linear in the subject,
    never backtracking: a client's identifier cannot make the daemon spin). Patterns with
    back-references, which no automaton can run, are left to Python's ``re``, as glibc leaves
    them to its own backtracking matcher.
    """

    __slots__ = ("pattern", "tree", "python_pattern", "_search", "_dfa")

    def __init__(self, pattern: bytes, tree: Node, has_backref: bool) -> None:
        self.pattern = pattern
        self.tree = tree
        self.python_pattern = python_pattern(tree)
        self._dfa: Optional[_Dfa] = None
        if has_backref:
            import re  # only for back-references: not on the daemon's start path

            try:
                self._search = re.compile(self.python_pattern.encode("latin-1")).search
            except re.error:
                raise EreError(REG_ESPACE) from None
        else:
            try:
                self._dfa = _Dfa(_Nfa(tree))
            except _TooBig:
                raise EreError(REG_ESPACE) from None

    def search(self, subject: bytes) -> bool:
        cut = subject.find(b"\0")
        if cut >= 0:
            subject = subject[:cut]
        if self._dfa is not None:
            return self._dfa.search(subject)
        return self._search(subject) is not None

    def __repr__(self) -> str:
        return f"Ere({self.pattern!r})"


def parse(pattern: bytes) -> Tuple[Node, bool]:
    """The syntax tree of ERE *pattern* and whether it has back-references.

    Raises :class:`EreError` with glibc's message when ``regcomp`` would refuse the pattern.
    """
    parser = _Parser(pattern)
    try:
        return parser.parse(), parser.has_backref
    except RecursionError:
        raise EreError(REG_ESPACE) from None


@functools.lru_cache(maxsize=256)
def compile_ere(pattern: bytes) -> Ere:
    """Compile *pattern* as ``regcomp(REG_EXTENDED|REG_NOSUB)`` would. Raises :class:`EreError`."""
    tree, has_backref = parse(pattern)
    try:
        return Ere(pattern, tree, has_backref)
    except (RecursionError, OverflowError):
        raise EreError(REG_ESPACE) from None


def search(pattern: bytes, subject: bytes) -> bool:
    """Whether ERE *pattern* matches somewhere in *subject*. Raises :class:`EreError`."""
    return compile_ere(pattern).search(subject)
