"""POSIX ERE rights: our translation against glibc's regcomp/regexec (the engine s6-fdholderd uses).

The oracle calls glibc through ctypes with REG_EXTENDED|REG_NOSUB in the C locale (per thread, with
``uselocale``: s6-fdholderd never calls setlocale, and CPython coerces LC_CTYPE to C.UTF-8). The
table below was read from that oracle; hypothesis then compares thousands of random patterns and
subjects over an alphabet chosen to hit every operator. Back-references are left to the table:
glibc's matcher crashes on some of them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import warnings
from typing import Iterator, Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s6ipc.fdholder import ere

REG_EXTENDED, REG_NOSUB = 1, 8
LC_ALL_MASK = 0x1FBF  # glibc: every category


class Glibc:
    def __init__(self) -> None:
        name = ctypes.util.find_library("c")
        if name is None or "libc.so" not in name:
            pytest.skip("glibc is not available for the regex oracle")
        self.libc = ctypes.CDLL(name)
        self.libc.newlocale.restype = ctypes.c_void_p
        self.libc.newlocale.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p]
        self.libc.uselocale.restype = ctypes.c_void_p
        self.libc.uselocale.argtypes = [ctypes.c_void_p]
        self.c_locale = self.libc.newlocale(LC_ALL_MASK, b"C", None)

    def search(self, pattern: bytes, subject: bytes) -> Union[bool, str]:
        """True/False, or glibc's error message."""
        previous = self.libc.uselocale(self.c_locale)
        try:
            buf = ctypes.create_string_buffer(256)  # regex_t is 64 bytes on x86_64
            code = self.libc.regcomp(buf, pattern, REG_EXTENDED | REG_NOSUB)
            if code:
                message = ctypes.create_string_buffer(256)
                self.libc.regerror(code, buf, message, 256)
                return message.value.decode()
            try:
                return self.libc.regexec(buf, subject, 0, None, 0) == 0
            finally:
                self.libc.regfree(buf)
        finally:
            self.libc.uselocale(previous)


@pytest.fixture(scope="module")
def glibc() -> Iterator[Glibc]:
    yield Glibc()


def ours(pattern: bytes, subject: bytes) -> Union[bool, str]:
    try:
        return ere.search(pattern, subject)
    except ere.EreError as e:
        return str(e)


# (pattern, subject, glibc's answer); the comment says how Python's re would differ.
CASES = [
    (b"[[:alpha:]]", b"1a", True),            # re: [[:alpha:]] is a set of ":[alph" plus "]"
    (b"[[:alpha:]]", b":", False),
    (b"[[:digit:]]+", b"x42", True),
    (b"\\d", b"d", True),                     # re: \d is a digit class
    (b"\\d", b"1", False),
    (b"[\\d]", b"\\", True),                  # a backslash is literal inside brackets
    (b"a$", b"a\n", False),                   # re: $ matches before a final newline
    (b"$", b"a\n", True),
    (b"\\w+", b"_", True),
    (b"\\s", b"\t", True),
    (b"x\\>", b"x-", True),
    (b"\\<x", b"-x", True),
    (b"\\`a", b"a", True),
    (b"a\\'", b"a", True),
    (b"\\Bx", b"ax", True),
    (b"\\B", b"", True),                      # re: \B never matches the empty string
    (b"\\b", b"", False),
    (b"a**", b"aa", True),                    # re: "multiple repeat" error
    (b"a{1,2}{3}", b"aaa", True),
    (b"a{,2}", b"", True),                    # re: {,2} is literal text... of a different meaning
    (b"a)", b"a)", True),                     # re: unbalanced parenthesis error
    (b"a}", b"a}", True),
    (b"(?:a)", b"a", "Invalid preceding regular expression"),   # no Python extensions
    (b"(?i)a", b"A", "Invalid preceding regular expression"),
    (b"a|*b", b"b", "Invalid preceding regular expression"),
    (b"^*", b"", "Invalid preceding regular expression"),
    (b"*a", b"a", "Invalid preceding regular expression"),
    (b"(", b"", "Unmatched ( or \\("),
    (b"a{", b"", "Unmatched \\{"),
    (b"a{x}", b"", "Invalid content of \\{\\}"),
    (b"a{2,1}", b"", "Invalid content of \\{\\}"),
    (b"a{32768}", b"", "Regular expression too big"),
    (b"[a", b"", "Unmatched [, [^, [:, [., or [="),
    (b"[", b"", "Invalid regular expression"),
    (b"[z-a]", b"", "Invalid range end"),
    (b"[a-b-c]", b"", "Invalid range end"),
    (b"[[:foo:]]", b"", "Invalid character class name"),
    (b"[[.space.]]", b"", "Invalid collation character"),
    (b"x\\", b"", "Trailing backslash"),
    (b"\\1", b"", "Invalid back reference"),
    (b"(a)|b\\1", b"", "Invalid back reference"),
    (b"(a)\\1", b"aa", True),
    (b"(a)(b)\\2", b"abb", True),
    (b"[]a]", b"]", True),
    (b"[^]a]", b"b", True),
    (b"[a-]", b"-", True),
    (b"[[.-.]]", b"-", True),
    (b"[[=a=]]", b"a", True),
    (b"\xe9", b"\xe9", True),                 # C locale: a byte is a character
    (b".", b"\xe9", True),
    (b"[[:alpha:]]", b"\xe9", False),
    (b"[\x80-\xff]", b"\x90", True),
    (b".^", b"a\nb", True),                   # glibc's DFA: ^ after a newline the match consumed
    (b"^b", b"a\nb", False),                  # ... but not where the match starts
    (b"$\n", b"\n", True),
    (b"a$", b"a\nb", False),
    (b"", b"anything", True),
    (b".*", b"", True),
    (b".^", b"abc", False),                   # what an absent right compiles to
    (b"^pub", b"pubthing", True),
    (b"^pub", b"xpub", False),
]


@pytest.mark.parametrize(("pattern", "subject", "expected"), CASES)
def test_table(pattern: bytes, subject: bytes, expected: Union[bool, str]) -> None:
    assert ours(pattern, subject) == expected


@pytest.mark.parametrize(("pattern", "subject", "expected"), CASES)
def test_table_is_glibc(glibc: Glibc, pattern: bytes, subject: bytes, expected: Union[bool, str]) -> None:
    """The table is what glibc says (so the table above is a fact, not our opinion)."""
    assert glibc.search(pattern, subject) == expected


def test_python_re_differs_on_the_table() -> None:
    """The cases where a naive ``re.search`` gives another answer (the reason for ere.py)."""
    differing = 0
    for pattern, subject, expected in CASES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                naive: Union[bool, str] = re.search(pattern, subject) is not None
        except re.error:
            naive = "error"
        if naive != expected:
            differing += 1
    assert differing >= 20


def test_subject_is_a_c_string() -> None:
    assert ere.search(b"b", b"a\0b") is False
    assert ere.search(b"^a$", b"a\0b") is True


TOKENS = [b"a", b"b", b"(", b")", b"[", b"]", b"{", b"}", b"|", b"*", b"+", b"?", b".", b"^", b"$",
          b"\\", b"-", b":", b"=", b",", b"1", b"2", b"w", b"d", b"\n", b"\xe9", b"[[:alpha:]]",
          b"[[:digit:]", b"[[.a.]", b"[=b=]", b"\\<", b"\\>", b"\\b", b"\\B", b"\\w", b"\\s", b"\\`",
          b"\\'", b"{1,2}", b"{,1}", b"[^", b"\\d", b"\\(", b"\\{"]
PATTERNS = st.lists(st.sampled_from(TOKENS), max_size=8).map(b"".join).filter(
    lambda p: re.search(rb"\\[1-9]", p) is None)
SUBJECT_BYTES = [b"a", b"b", b"\n", b"_", b" ", b"-", b"1", b"\xe9", b"]", b"{"]
SUBJECTS = st.binary(max_size=8).map(lambda s: s.replace(b"\0", b"")) | st.lists(
    st.sampled_from(SUBJECT_BYTES), max_size=8).map(b"".join)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern=PATTERNS, subject=SUBJECTS)
def test_same_answer_as_glibc(glibc: Glibc, pattern: bytes, subject: bytes) -> None:
    assert ours(pattern, subject) == glibc.search(pattern, subject)


@settings(max_examples=500, deadline=None)
@given(pattern=PATTERNS, subject=SUBJECTS)
def test_nfa_agrees_with_glibc_everywhere(glibc: Glibc, pattern: bytes, subject: bytes) -> None:
    """The NFA (which the DFA runs) is right for every subject, not only those."""
    try:
        tree, has_backref = ere.parse(pattern)
    except ere.EreError:
        return
    assert not has_backref
    assert ere._Nfa(tree).search(subject) == glibc.search(pattern, subject)
