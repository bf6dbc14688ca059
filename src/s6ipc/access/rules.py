"""Access rules by uid and gid, from a rules directory or a cdb (s6's ``s6_accessrules_*``).

Some facts about s6 2.11's access rules this module reproduces:

* A check tries keys in this order and stops at the first that is found: ``uid/self`` (only when
  the client's uid is our euid), ``uid/<uid>``, ``gid/self`` (only when the client's gid is our
  egid), ``gid/<gid>``, ``uid/default``. There is no ``gid/default``. Nothing found: refusal with
  ENOENT; an explicit ``deny``: refusal with EACCES.
* **Directory backend**, per key ``DIR/<key>/``: ``allow`` readable (``access(R_OK)``) means
  allow, else ``deny`` readable means deny, else not found; an error other than EACCES or ENOENT
  on either is a backend error. On allow, ``env/`` is read as an envdir (missing is fine, any
  other failure is a backend error) and the first 4096 bytes of ``exec`` are taken verbatim
  (missing, unreadable or empty: no exec). Nothing is cached: every lookup reads the disk.
  ``access`` checks the real uid; this module learns the errno of a failed ``os.access`` from
  ``stat`` on the same path, which gives the same answer when real and effective ids agree (they
  do in every process of the chain: applyuidgid sets both).
* **cdb backend**: key ``uid/0``, value ``D`` (deny, rest ignored), or ``A`` + envlen (16-bit
  big-endian) + env modifs + execlen + exec bytes, with envlen and execlen at most 4096 and the
  whole value at most 8197 bytes, else the lookup fails with EINVAL. Any other first byte means
  "not found". The env bytes are kept as they are stored and applied verbatim (an unterminated
  last modif behaves as in s6: it runs into the next one).
* **IP keys** (s6-tcpserver-access): an IPv4 client tries ``ip4/<network>_<len>`` for len = 32
  down to 0 — ``ip4/127.0.0.2_32``, ``ip4/127.0.0.2_31``, ``ip4/127.0.0.0_30`` … ``ip4/0.0.0.0_0``,
  longest prefix first, the network address in canonical dotted form; an IPv6 client (IPv4-mapped
  ones included) tries ``ip6/<network>_<len>`` for len = 128 down to 0, the network printed as
  skalibs' ``ip6_fmt`` does. Non-canonical spellings (``ip4/127.000.0.1_32``, no ``_len``) never
  match. **Difference from s6 2.11.3.2**: its ``keycheck_ip6`` clears the bits of each byte in the
  wrong order (LSB first), so for prefix lengths that are not multiples of 8 it looks up keys that
  do not name the network (``ip6/::1_127`` where ``ip6/::_127`` is meant). s6 2.13.1.0 fixed it;
  s6ipc looks up the real network address, as 2.13.1.0 and later do.
* **reversedns keys**: the remote name without one final dot, then with its first label removed,
  and so on down to the last label, then ``reversedns/@`` (``a.b.example.`` gives
  ``reversedns/a.b.example``, ``reversedns/b.example``, ``reversedns/example``, ``reversedns/@``).
* **Compiling** a directory into a cdb (``s6-accessrules-cdb-from-fs``): every ``DIR/E/R`` whose
  ``allow`` *exists* (``access(F_OK)``, not R_OK) gives ``A…``, else one whose ``deny`` exists
  gives ``D``, else no record at all. An env block over 4100 bytes is refused (exit 100) although
  readers refuse over 4096; an ``exec`` of 4096 bytes or more is cut at 4096 with a warning.
* **Expanding** a cdb into a directory (``s6-accessrules-fs-from-cdb``) creates directories with
  mode 02755 under umask 0, files with 0666 under the process umask, env files ``value\\n`` (an
  unset becomes an empty file), and removes the whole target directory on any error. Paths are C
  strings there: a NUL byte in a key ends the path at that byte.
"""

from __future__ import annotations

import enum
import errno
import functools
import os
import struct

from ..base.cstrings import cut_bytes, peer_text
from ..base.envdir import decode_modifs, encode_modifs, read_envdir, read_file_head, split_modifs
from ..base.errors import BadInput, SystemFailure, Unusable
from ..base.typeshim import Protocol, dataclass
from ..sockets.inet import ip_fmt, network
from .cdb import CdbFormatError, CdbReader, load_cdb_bytes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Sequence, Tuple

    from ..base.envdir import Modifs

__all__ = [
    "EXECLINEB", "MAX_EXEC", "MAX_ENV", "MAX_VALUE", "MAX_ENV_COMPILED", "MAX_VALUE_EXPANDED", "Verdict",
    "Decision", "NOT_FOUND", "DENIED", "RuleSet", "FsRules", "parse_rule_value", "encode_rule_value",
    "CdbRules", "rules_from_dir", "rules_from_cdb", "check", "ip_keys", "reversedns_keys", "first_found",
    "check_ip", "check_reversedns", "compile_rules", "InvalidRules", "expand_rules",
]

#: Where s6 (Debian's execline 2.9) finds the interpreter of ``exec`` rules.
EXECLINEB = "/usr/lib/execline/bin/execlineb"
MAX_EXEC = 4096
MAX_ENV = 4096
MAX_VALUE = 5 + MAX_ENV + MAX_EXEC
#: cdb-from-fs accepts env blocks up to this size (readers then refuse 4097..4100).
MAX_ENV_COMPILED = 4100
#: fs-from-cdb accepts values up to this size.
MAX_VALUE_EXPANDED = 8201
_BE16 = struct.Struct(">H")
#: How many cdb answers a :class:`CdbRules` remembers before starting over.
_MAX_REMEMBERED = 8192


class Verdict(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    NOTFOUND = "notfound"


@dataclass(frozen=True)
class Decision:
    """The result of a rule lookup or of a whole check.

    *env* lists the rule's environment modifications in order ((NAME, value) sets, (NAME, None)
    unsets); *exec* is the raw exec string (empty: none). *raw_env*, when not None, is the modif
    block exactly as a cdb stored it, which is what gets applied (see :meth:`modif_strings`).
    """

    verdict: Verdict
    env: Modifs = ()
    exec: bytes = b""
    raw_env: Optional[bytes] = None

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW

    @property
    def errno(self) -> int:
        """The reason of a refusal: EACCES for an explicit deny, ENOENT when nothing matched, else 0."""
        if self.verdict is Verdict.DENY:
            return errno.EACCES
        if self.verdict is Verdict.NOTFOUND:
            return errno.ENOENT
        return 0

    def modif_strings(self) -> List[str]:
        """The modifications as s6 applies them (``NAME=value`` / ``NAME``), in order."""
        if self.raw_env is not None:
            return split_modifs(self.raw_env)
        return [name if value is None else f"{name}={value}" for name, value in self.env]

    def exec_string(self) -> Optional[bytes]:
        """The argument s6 gives to ``execlineb -Pc`` (a C string: cut at the first NUL), or None."""
        if not self.exec:
            return None
        return cut_bytes(self.exec)


NOT_FOUND = Decision(Verdict.NOTFOUND)
DENIED = Decision(Verdict.DENY)


class RuleSet(Protocol):
    """A source of rules: :meth:`lookup` answers for one key (``uid/0``, ``gid/100``, ``uid/self``…)."""

    description: str

    def lookup(self, key: str) -> Decision:
        """The decision of *key*, NOTFOUND if absent. Raises :class:`SystemFailure` (``check DESC``)."""
        ...


def _access_errno(path: str, mode: int) -> int:
    """0 if ``access(path, mode)`` succeeds, else its errno (see the module docstring).

    ``stat`` first: for the usual missing file it is the only call, and it fails with the errno
    ``access`` would give; for a file that exists, ``access`` decides (EACCES when it says no).
    """
    try:
        os.stat(path)
    except OSError as e:
        return e.errno or errno.EIO
    return 0 if os.access(path, mode) else errno.EACCES


class FsRules:
    """Rules in a directory ``DIR/uid/N/{allow,deny,env/,exec}``, read at every lookup."""

    def __init__(self, path: str, regular_only: bool = False) -> None:
        self.path = path
        self.description = f"fs ruleset in {path}"
        #: Refuse to open what is not a regular file (EAGAIN): see :func:`read_envdir`.
        self.regular_only = regular_only

    def _fail(self, code: int) -> SystemFailure:
        return SystemFailure(f"check {self.description}", code)

    def lookup(self, key: str) -> Decision:
        base = f"{self.path}/{key}"
        code = _access_errno(f"{base}/allow", os.R_OK)
        if code:
            if code not in (errno.EACCES, errno.ENOENT):
                raise self._fail(code)
            code = _access_errno(f"{base}/deny", os.R_OK)
            if not code:
                return DENIED
            if code not in (errno.EACCES, errno.ENOENT):
                raise self._fail(code)
            return NOT_FOUND
        try:
            env = read_envdir(f"{base}/env", self.regular_only)
        except SystemFailure as e:
            if e.errno != errno.ENOENT:
                raise self._fail(e.errno) from None
            env = ()
        try:
            exec_bytes = read_file_head(f"{base}/exec", MAX_EXEC, self.regular_only)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.ENOENT):
                raise self._fail(e.errno or errno.EIO) from None
            exec_bytes = b""
        return Decision(Verdict.ALLOW, env, exec_bytes)


def parse_rule_value(data: bytes) -> Decision:
    """Decode a cdb rule value as s6-ipcserver-access does. Raises ValueError (EINVAL in s6)."""
    if not data or len(data) > MAX_VALUE:
        raise ValueError("bad value length")
    first = data[0]
    if first == ord("D"):
        return DENIED
    if first != ord("A"):
        return NOT_FOUND
    if len(data) < 5:
        raise ValueError("value too short")
    (envlen,) = _BE16.unpack_from(data, 1)
    if envlen > MAX_ENV or len(data) - 5 < envlen:
        raise ValueError("bad env length")
    (execlen,) = _BE16.unpack_from(data, 3 + envlen)
    if execlen > MAX_EXEC or 5 + envlen + execlen != len(data):
        raise ValueError("bad exec length")
    block = data[3 : 3 + envlen]
    return Decision(Verdict.ALLOW, decode_modifs(block), data[5 + envlen :], block)


def encode_rule_value(decision: Decision) -> bytes:
    """The cdb value of *decision* (``D``, or ``A`` + env + exec); NOTFOUND has no value."""
    if decision.verdict is Verdict.DENY:
        return b"D"
    if decision.verdict is not Verdict.ALLOW:
        raise ValueError("a NOTFOUND decision has no cdb value")
    block = decision.raw_env if decision.raw_env is not None else encode_modifs(decision.env)
    return b"A" + _BE16.pack(len(block)) + block + _BE16.pack(len(decision.exec)) + decision.exec


def _stamp(st: os.stat_result) -> Tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class CdbRules:
    """Rules in a cdb file, held in memory.

    The file is read at construction (``cdb_init`` errors raised then). :meth:`reload` reads it
    again (fdholderd's SIGHUP); :meth:`refresh` does so only when ``stat`` shows another file or
    another content (device, inode, size, mtime, ctime), which makes a replacement by ``rename`` —
    or an in-place rewrite — visible at the cost of one ``stat``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.description = f"cdb ruleset in {path}"
        self._reader = CdbReader.from_bytes(b"", path)
        self._answers: Dict[str, Decision] = {}
        self._stamp: Optional[Tuple[int, int, int, int, int]] = None
        self.reload()

    def reload(self) -> None:
        """Read the file again. Raises :class:`SystemFailure` ``cdb_init PATH``."""
        before = self._stat()
        data = load_cdb_bytes(self.path)
        self._reader = CdbReader.from_bytes(data, self.path)
        self._answers.clear()
        self._stamp = before

    def _stat(self) -> Tuple[int, int, int, int, int]:
        try:
            return _stamp(os.stat(self.path))
        except OSError as e:
            raise SystemFailure(f"cdb_init {self.path}", e.errno or errno.EIO) from None

    def refresh(self) -> bool:
        """Reload if the file changed since it was read; True if it did. Raises like :meth:`reload`."""
        if self._stat() == self._stamp:
            return False
        self.reload()
        return True

    def lookup(self, key: str) -> Decision:
        """The decision of *key*; answers are remembered until the file is read again (a long-lived
        user asks the same keys over and over: up to 33 per IPv4 client)."""
        known = self._answers.get(key)
        if known is not None:
            return known
        try:
            data = self._reader.get(os.fsencode(key))
        except CdbFormatError as e:
            raise SystemFailure(f"check {self.description}", e.errno) from None
        if data is None:
            decision = NOT_FOUND
        else:
            try:
                decision = parse_rule_value(data)
            except ValueError:
                raise SystemFailure(f"check {self.description}", errno.EINVAL) from None
        if len(self._answers) >= _MAX_REMEMBERED:
            self._answers.clear()
        self._answers[key] = decision
        return decision


def rules_from_dir(path: str, never_block: bool = False) -> FsRules:
    """A rule set over directory *path* (read at every lookup; a missing directory finds nothing).

    With *never_block* (a daemon), an ``env`` or ``exec`` entry that is not a regular file fails
    the lookup with EAGAIN instead of waiting for a FIFO's writer."""
    return FsRules(path, never_block)


def rules_from_cdb(path: str) -> CdbRules:
    """A rule set over cdb file *path*, read now. Raises :class:`SystemFailure` ``cdb_init PATH``."""
    return CdbRules(path)


def check(rules: RuleSet, uid: int, gid: int, *, euid: Optional[int] = None,
          egid: Optional[int] = None) -> Decision:
    """The decision for a client (uid, gid), trying keys in s6's order (see the module docstring).

    *euid*/*egid* (default: ours) say which ids the ``self`` keys stand for.
    Raises :class:`SystemFailure` (``check fs ruleset in DIR`` / ``check cdb ruleset in FILE``).
    """
    if euid is None:
        euid = os.geteuid()
    if egid is None:
        egid = os.getegid()
    keys = ["uid/self"] if uid == euid else []
    keys.append(f"uid/{uid}")
    if gid == egid:
        keys.append("gid/self")
    keys.append(f"gid/{gid}")
    keys.append("uid/default")
    return first_found(rules, keys)


@functools.lru_cache(maxsize=1024)
def ip_keys(ip: bytes) -> Tuple[str, ...]:
    """The keys an IPv4 (4 bytes) or IPv6 (16 bytes) client is looked up under, in order
    (remembered for the last 1024 addresses: a daemon sees the same clients again)."""
    family = "ip4" if len(ip) == 4 else "ip6"
    bits = len(ip) * 8
    return tuple(f"{family}/{ip_fmt(network(ip, n))}_{n}" for n in range(bits, -1, -1))


def reversedns_keys(name: str) -> List[str]:
    """The keys a client whose reverse name is *name* is looked up under, in order."""
    if name.endswith("."):
        name = name[:-1]
    keys = []
    while name:
        keys.append(f"reversedns/{name}")
        dot = name.find(".")
        if dot < 0:
            break
        name = name[dot + 1 :]
    keys.append("reversedns/@")
    return keys


def first_found(rules: RuleSet, keys: Sequence[str]) -> Decision:
    """The decision of the first of *keys* that is found, else NOTFOUND. Raises like
    :meth:`RuleSet.lookup`."""
    for key in keys:
        decision = rules.lookup(key)
        if decision.verdict is not Verdict.NOTFOUND:
            return decision
    return NOT_FOUND


def check_ip(rules: RuleSet, ip: bytes) -> Decision:
    """The decision for a TCP client at address *ip* (:func:`ip_keys`, first found wins)."""
    return first_found(rules, ip_keys(ip))


def check_reversedns(rules: RuleSet, name: str) -> Decision:
    """The decision for a TCP client whose reverse name is *name* (:func:`reversedns_keys`)."""
    return first_found(rules, reversedns_keys(name))


# -- compiling a directory into cdb records (s6-accessrules-cdb-from-fs) -----------------------

def _compile_rule(path: str, on_warning: Callable[[str], None]) -> Optional[bytes]:
    """The cdb value for rule directory *path* (``DIR/E/R``), or None when it has no record."""
    for name, verdict in (("allow", Verdict.ALLOW), ("deny", Verdict.DENY)):
        target = f"{path}/{name}"
        try:
            os.stat(target)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.EACCES):
                raise SystemFailure(f"access {target}", e.errno or errno.EIO) from None
            continue
        if verdict is Verdict.DENY:
            return b"D"
        break
    else:
        return None
    envpath = f"{path}/env"
    try:
        block = encode_modifs(read_envdir(envpath))
    except SystemFailure as e:
        if e.errno != errno.ENOENT:
            raise SystemFailure(f"envdir {envpath}", e.errno) from None
        block = b""
    if len(block) > MAX_ENV_COMPILED:
        raise BadInput(f"{envpath} too big: {os.strerror(0)}")
    execpath = f"{path}/exec"
    try:
        exec_bytes = read_file_head(execpath, MAX_EXEC)
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise SystemFailure(f"openreadnclose {execpath}", e.errno or errno.EIO) from None
        exec_bytes = b""
    if len(exec_bytes) == MAX_EXEC:
        on_warning(f"possibly truncated file {execpath}")
    return b"A" + _BE16.pack(len(block)) + block + _BE16.pack(len(exec_bytes)) + exec_bytes


def _entries(path: str) -> List[str]:
    """Names in *path* not starting with a dot, in readdir order. Raises OSError."""
    with os.scandir(path) as it:
        return [e.name for e in it if not e.name.startswith(".")]


def compile_rules(directory: str, on_warning: Callable[[str], None] = lambda text: None
                  ) -> List[Tuple[bytes, bytes]]:
    """The cdb records for rules directory *directory*, as s6-accessrules-cdb-from-fs builds them.

    Every ``DIR/E/R`` gives key ``E/R`` (any E: ``uid``, ``gid``, anything). *on_warning* gets
    ``possibly truncated file PATH`` lines as they happen. Raises :class:`SystemFailure`
    (``opendir``, ``access``, ``envdir``, ``openreadnclose`` PATH) or :class:`BadInput` (exit 100,
    ``PATH/env too big``).
    """
    try:
        tops = _entries(directory)
    except OSError as e:
        raise SystemFailure(f"opendir {directory}", e.errno or errno.EIO) from None
    records: List[Tuple[bytes, bytes]] = []
    for top in tops:
        sub = f"{directory}/{top}"
        try:
            names = _entries(sub)
        except OSError as e:
            raise SystemFailure(f"opendir {sub}", e.errno or errno.EIO) from None
        for name in names:
            value = _compile_rule(f"{sub}/{name}", on_warning)
            if value is not None:
                records.append((os.fsencode(f"{top}/{name}"), value))
    return records


# -- expanding cdb records into a directory (s6-accessrules-fs-from-cdb) ------------------------

class InvalidRules(Unusable):
    """The cdb does not hold access rules s6 can expand (exit 111)."""


def _text(path: bytes) -> str:
    return peer_text(path)


class _Expander:
    def __init__(self, basedir: bytes, source_name: str) -> None:
        self.base = basedir
        self.source_name = source_name

    def invalid(self) -> InvalidRules:
        return InvalidRules(f"unable to handle cdb record: {self.source_name} "
                            "does not contain valid accessrules data")

    @staticmethod
    def _mkdir(path: bytes) -> None:
        """mkdir 02755 under umask 0; EEXIST is fine (skalibs ``domkdir``)."""
        path = cut_bytes(path)
        old = os.umask(0)
        try:
            os.mkdir(path, 0o2755)
        except FileExistsError:
            pass
        except OSError as e:
            raise SystemFailure(f"mkdir {_text(path)}", e.errno or errno.EIO) from None
        finally:
            os.umask(old)

    def _mkdirp(self, path: bytes) -> None:
        path = cut_bytes(path)
        for i in range(len(self.base) + 1, len(path)):
            if path[i] == ord("/"):
                self._mkdir(path[:i])
        self._mkdir(path)

    @staticmethod
    def _write(path: bytes, content: bytes, operation: str) -> None:
        path = cut_bytes(path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        except OSError as e:
            raise SystemFailure(f"{operation} {_text(path)}", e.errno or errno.EIO) from None
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
        except OSError as e:
            raise SystemFailure(f"{operation} {_text(path)}", e.errno or errno.EIO) from None
        finally:
            os.close(fd)

    def _env(self, envdir: bytes, block: bytes) -> None:
        self._mkdir(envdir)
        i = 0
        while i < len(block):
            end = block.find(b"\0", i)
            if end < 0:
                raise self.invalid()
            modif = block[i:end]
            name, eq, value = modif.partition(b"=")
            target = envdir + b"/" + name
            if eq:
                self._write(target, value + b"\n", "openwritenclose_unsafe")
            else:
                self._write(target, b"", "open_trunc")
            i = end + 1

    def record(self, key: bytes, data: bytes) -> None:
        if not data or len(data) > MAX_VALUE_EXPANDED:
            raise self.invalid()
        rule = self.base + b"/" + key
        self._mkdirp(rule)
        if data[0] == ord("A"):
            self._write(rule + b"/allow", b"", "open_trunc")
        elif data[0] == ord("D"):
            self._write(rule + b"/deny", b"", "open_trunc")
        if len(data) < 3:
            return
        (envlen,) = _BE16.unpack_from(data, 1)
        if envlen > MAX_ENV or 3 + envlen > len(data) or 5 + envlen > len(data):
            raise self.invalid()
        (execlen,) = _BE16.unpack_from(data, 3 + envlen)
        if execlen > MAX_EXEC or 5 + envlen + execlen != len(data):
            raise self.invalid()
        if envlen:
            self._env(rule + b"/env", data[3 : 3 + envlen])
        if execlen:
            self._write(rule + b"/exec", data[5 + envlen :], "openwritenclose_unsafe")


def expand_rules(reader: CdbReader, directory: str, source_name: str) -> None:
    """Create rules directory *directory* (which must not exist) from the records of *reader*,
    as s6-accessrules-fs-from-cdb does; on any error the directory is removed.

    Raises :class:`SystemFailure` (``mkdir``, ``open_trunc``, ``openwritenclose_unsafe`` PATH) or
    :class:`InvalidRules` (``unable to cdb_traverse_next: invalid cdb``, ``unable to handle cdb
    record: SOURCE does not contain valid accessrules data``), both exit 111.
    """
    old = os.umask(0)
    try:
        os.mkdir(directory, 0o2755)
    except OSError as e:
        raise SystemFailure(f"mkdir {directory}", e.errno or errno.EIO) from None
    finally:
        os.umask(old)
    expander = _Expander(os.fsencode(directory), source_name)
    try:
        try:
            for key, data in reader:
                expander.record(key, data)
        except CdbFormatError:
            raise InvalidRules("unable to cdb_traverse_next: invalid cdb") from None
    except BaseException:
        import shutil  # only here: it imports fnmatch, hence re, which the start path avoids

        shutil.rmtree(directory, ignore_errors=True)
        raise
