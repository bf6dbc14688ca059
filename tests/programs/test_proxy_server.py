"""proxy-server behind a real HAProxy (Debian's haproxy, ``send-proxy`` and ``send-proxy-v2``), and
on hostile headers.

The chain under test is the one docs/proxy-server.md gives: ``s6ipc tcpserver … s6ipc proxy-server
s6ipc tcpserver-access -i RULES prog``. HAProxy listens on 127.0.0.1 and connects to our server
from 127.0.0.3, an address no rule names; clients come from 127.0.0.1 (allowed by the rules) and
127.0.0.2 (denied). The same rules on a chain without the proxy decide the same way, and without
proxy-server everything would be decided on 127.0.0.3. s6-networking's own proxy-server is not
packaged by Debian: the reference is its source (2.7.2.0) and the PROXY specification.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import ssl
import subprocess
import time
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from s6ipc.base.errors import SystemFailure
from s6ipc.serve.proxy import BadHeader, read_header
from tests.support.access import make_rules
from tests.support.processes import S6IPC, read_all, run, stop_process
from tests.support.tcp import TcpServer, connect

HAPROXY = "/usr/sbin/haproxy"
BASE = {"PATH": "/usr/bin:/bin", "DNSCACHEIP": "127.53.0.1"}
PROXY = [S6IPC, "proxy-server"]
#: the handler: the variables a server behind the chain sees, then the client's bytes echoed
HANDLER = ["sh", "-c", 'echo "$PROTO $TCPREMOTEIP $TCPREMOTEPORT $TCPLOCALIP $TCPLOCALPORT"; exec cat']
RULES = {"ip4/127.0.0.1_32": {"allow": True}, "ip4/127.0.0.2_32": {"deny": True}}
PROXY_SOURCE = "127.0.0.3"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 10) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "haproxy exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"haproxy does not listen on {port}")


@pytest.fixture(scope="module")
def rules(tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    return make_rules(str(tmp_path_factory.mktemp("proxy") / "rules"), RULES)


def _chain(rules: str, proxied: bool) -> TcpServer:
    stages = [*PROXY] if proxied else []
    return TcpServer([S6IPC, "tcpserver", "-1", "127.0.0.1", "0", *stages, S6IPC, "tcpserver-access", "-H",
                      "-i", rules, *HANDLER], env=BASE)


@pytest.fixture(scope="module")
def haproxy(tmp_path_factory, rules: str) -> Iterator[Dict[str, Tuple[int, TcpServer]]]:  # type: ignore[no-untyped-def]
    """HAProxy in front of two chains with proxy-server (v1 and v2 frontends) and one without."""
    if not os.access(HAPROXY, os.X_OK):
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    proxied, plain = _chain(rules, True), _chain(rules, False)
    fronts = {"v1": _free_port(), "v2": _free_port(), "none": _free_port()}
    backends = {"v1": (proxied, " send-proxy"), "v2": (proxied, " send-proxy-v2"), "none": (plain, "")}
    config = ["global", "  maxconn 100", "defaults", "  mode tcp", "  timeout connect 5s",
              "  timeout client 30s", "  timeout server 30s"]
    for name, port in fronts.items():
        server, option = backends[name]
        config += [f"frontend f_{name}", f"  bind 127.0.0.1:{port}", f"  default_backend b_{name}",
                   f"backend b_{name}",
                   f"  server s_{name} 127.0.0.1:{server.port}{option} source {PROXY_SOURCE}"]
    path = tmp_path_factory.mktemp("haproxy") / "haproxy.cfg"
    path.write_text("\n".join(config) + "\n")
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(path)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for port in fronts.values():
            _wait_port(port, proc)
        yield {name: (port, backends[name][0]) for name, port in fronts.items()}
    finally:
        stop_process(proc)
        assert proc.stderr is not None
        proc.stderr.close()
        proxied.stop()
        plain.stop()


def _talk(port: int, source: str, data: bytes = b"client bytes\n") -> Tuple[bytes, int]:
    """Send *data* from *source*, read the answer: empty when the chain closed on us (a denial)."""
    with connect(port, source=source, timeout=15) as s:
        local_port = s.getsockname()[1]
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            return read_all(s), local_port
        except (ConnectionResetError, BrokenPipeError, OSError):  # a denied client may see a reset
            return b"", local_port


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_rules_decide_on_the_client_behind_haproxy(haproxy: Dict[str, Tuple[int, TcpServer]], version: str,
                                                   rules: str) -> None:
    port, server = haproxy[version]
    got, client_port = _talk(port, "127.0.0.1", b"hello\x00\xff through the proxy\n")
    first, _, rest = got.partition(b"\n")
    # TCPLOCALIP/PORT: tcpserver-access, after proxy-server, names the socket it serves (as s6's does)
    assert first.decode() == f"TCP 127.0.0.1 {client_port} 127.0.0.1 {server.port}"
    assert rest == b"hello\x00\xff through the proxy\n"  # the stream after the header, untouched
    denied, _ = _talk(port, "127.0.0.2")
    assert denied == b""
    # without the proxy the same rules decide the same way
    direct = _chain(rules, False)
    try:
        assert _talk(direct.port, "127.0.0.1")[0].startswith(b"TCP 127.0.0.1 ")
        assert _talk(direct.port, "127.0.0.2")[0] == b""
    finally:
        direct.stop()


def test_without_proxy_server_the_proxy_is_the_client(haproxy: Dict[str, Tuple[int, TcpServer]]) -> None:
    port, _ = haproxy["none"]
    assert _talk(port, "127.0.0.1")[0] == b""  # decided on 127.0.0.3: no rule, denied


def test_the_handler_never_sees_the_header(haproxy: Dict[str, Tuple[int, TcpServer]]) -> None:
    big = os.urandom(200_000)
    got, _ = _talk(haproxy["v2"][0], "127.0.0.1", big)
    assert got.partition(b"\n")[2] == big


def test_haproxy_health_checks_keep_the_real_endpoints(tmp_path, rules: str) -> None:  # type: ignore[no-untyped-def]
    """HAProxy's health checks carry no client: v1 sends ``PROXY UNKNOWN``, v2 a LOCAL command.
    proxy-server sets nothing for them, so the access check sees the proxy itself (127.0.0.3)."""
    if not os.access(HAPROXY, os.X_OK):
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    argv = [S6IPC, "tcpserver", "-1", "127.0.0.1", "0", *PROXY, S6IPC, "tcpserver-access", "-v2", "-H",
            "-i", rules, *HANDLER]
    chains = {v: TcpServer(argv, env=BASE) for v in ("v1", "v2")}
    config = ["defaults", "  mode tcp", "  timeout connect 5s", "  timeout client 5s", "  timeout server 5s",
              "  timeout check 2s", "frontend unused", f"  bind 127.0.0.1:{_free_port()}",
              "  default_backend c_v1"]
    for v, option in (("v1", "send-proxy"), ("v2", "send-proxy-v2")):
        config += [f"backend c_{v}", f"  server s 127.0.0.1:{chains[v].port} {option} check inter 200 "
                                     f"source {PROXY_SOURCE}"]
    path = tmp_path / "haproxy.cfg"
    path.write_text("\n".join(config) + "\n")
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(path)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for chain in chains.values():
            deadline = time.monotonic() + 15
            while "ip 127.0.0.3" not in chain.log() and time.monotonic() < deadline:
                time.sleep(0.1)
        logs = {v: chain.log() for v, chain in chains.items()}
    finally:
        stop_process(proc)
        for chain in chains.values():
            chain.stop()
    for v, log in logs.items():
        checks = [line for line in log.splitlines() if "tcpserver-access" in line or "proxy-server" in line]
        assert checks, (v, log)
        assert all(re.match(r"tcpserver-access: info: deny pid \d+ ip 127\.0\.0\.3(:|$)", line)
                   for line in checks), (v, log)


_CERTIFICATE_CONFIG = """\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[srv]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:app.example
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[cli]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def _certificates(d: str) -> None:
    """A CA, a server certificate (CN and DNS name app.example) and a client one (CN alice) in *d*,
    with the extensions a strict verifier asks for: Python 3.13's ``ssl.create_default_context``
    sets VERIFY_X509_STRICT, which refuses a CA without keyUsage and a leaf without
    authorityKeyIdentifier (Debian 13); the configuration is the test's own, not the system's
    openssl.cnf, so that OpenSSL 3.0 (Debian 12) and 3.5 (Debian 13) make the same certificates."""
    def openssl(*args: str) -> None:
        done = subprocess.run(["openssl", *args], cwd=d, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr

    with open(os.path.join(d, "certificates.cnf"), "w") as f:
        f.write(_CERTIFICATE_CONFIG)
    config = ["-config", "certificates.cnf"]
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-sha256"]
    openssl("req", *config, "-x509", "-extensions", "ca", *key, "-keyout", "ca.key", "-out", "ca.pem",
            "-subj", "/CN=test-ca", "-days", "2")
    for name, cn in (("srv", "app.example"), ("cli", "alice")):
        openssl("req", *config, *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        openssl("x509", "-req", "-sha256", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-extfile", "certificates.cnf", "-extensions", name,
                "-out", f"{name}.crt", "-days", "2")
    with open(os.path.join(d, "server.pem"), "wb") as out:
        for part in ("srv.crt", "srv.key"):
            with open(os.path.join(d, part), "rb") as f:
                out.write(f.read())


def test_tls_fields_from_haproxy(tmp_path, rules: str) -> None:  # type: ignore[no-untyped-def]
    """HAProxy terminating TLS sends v2's SSL extension (version, client certificate CN, cipher)
    and the authority (SNI): proxy-server sets SSL_PROTOCOL, SSL_PEER_CERT_CN, SSL_CIPHER and
    SSL_TLS_SNI_SERVERNAME from them; the CRC32C extension HAProxy adds is ignored."""
    if not os.access(HAPROXY, os.X_OK):
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    d = str(tmp_path)
    _certificates(d)
    show = ["sh", "-c",
            'echo "$TCPREMOTEIP|$SSL_PROTOCOL|$SSL_CIPHER|$SSL_PEER_CERT_CN|$SSL_TLS_SNI_SERVERNAME"']
    chain = TcpServer([S6IPC, "tcpserver", "-1", "127.0.0.1", "0", *PROXY, "-2", S6IPC, "tcpserver-access",
                       "-H", "-i", rules, *show], env=BASE)
    front = _free_port()
    config = ["defaults", "  mode tcp", "  timeout connect 5s", "  timeout client 10s",
              "  timeout server 10s", "frontend tls",
              f"  bind 127.0.0.1:{front} ssl crt {d}/server.pem ca-file {d}/ca.pem verify optional",
              "  default_backend b_tls", "backend b_tls",
              f"  server s 127.0.0.1:{chain.port} send-proxy-v2-ssl-cn"
              f" proxy-v2-options authority,ssl-cipher,crc32c source {PROXY_SOURCE}"]
    (tmp_path / "haproxy.cfg").write_text("\n".join(config) + "\n")
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(tmp_path / "haproxy.cfg")], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_port(front, proc)
        context = ssl.create_default_context(cafile=f"{d}/ca.pem")
        context.load_cert_chain(f"{d}/cli.crt", f"{d}/cli.key")
        with connect(front, source="127.0.0.1", timeout=15) as raw, \
                context.wrap_socket(raw, server_hostname="app.example") as tls:
            data = b""
            while not data.endswith(b"\n"):
                chunk = tls.recv(4096)
                if not chunk:
                    break
                data += chunk
            version, cipher = tls.version(), tls.cipher()[0]  # type: ignore[index]
    finally:
        stop_process(proc)
        assert proc.stderr is not None
        proc.stderr.close()
        chain.stop()
    assert data.decode() == f"127.0.0.1|{version}|{cipher}|alice|app.example\n"


# -- hostile headers through the program ---------------------------------------------------------

MARKER = ["sh", "-c", "echo RAN; exec cat"]


def _run(data: bytes, args: Optional[List[str]] = None, slow: float = 0.0) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    """proxy-server on a socket pair fed *data* (one byte every *slow* seconds when given)."""
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([*PROXY, *(args or []), *MARKER], stdin=theirs, stdout=theirs,
                            stderr=subprocess.PIPE, env=BASE)
    theirs.close()
    try:
        if slow:
            for i in range(len(data)):
                ours.sendall(data[i : i + 1])
                time.sleep(slow)
        else:
            ours.sendall(data)
    except OSError:
        pass
    try:
        ours.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    ours.settimeout(20)
    out = read_all(ours)
    ours.close()
    _, err = proc.communicate(timeout=20)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _refused(done: subprocess.CompletedProcess, codes: Tuple[int, ...] = (1, 2, 111)) -> None:  # type: ignore[type-arg]
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode in codes, err
    assert len(err.splitlines()) == 1 and err.startswith("proxy-server: pid "), err
    assert ": fatal: " in err and "Traceback" not in err
    assert done.stdout == b""  # nothing passed on: prog never ran


def test_program_sets_adds_and_never_deletes() -> None:
    done = run([*PROXY, "sh", "-c", 'echo "$PROTO $TCPREMOTEIP $KEEP $TCPCONNNUM"; exec cat'],
               input=b"PROXY TCP6 2001:db8::7 ::1 4 5\r\nrest", env=dict(BASE, KEEP="kept", TCPCONNNUM="3",
                                                                           TCPREMOTEIP="10.0.0.1"))
    assert (done.returncode, done.stdout, done.stderr) == (0, b"TCP 2001:db8::7 kept 3\nrest", b"")


def test_program_errors_are_one_line() -> None:
    assert run([*PROXY], env=BASE).stderr == (
        b"proxy-server: usage: proxy-server [ -1|--only-v1 | -2|--only-v2 ] [ -t timeout ] [ -v verbosity ] "
        b"prog...\n")
    for args, message in ((["-x", "true"], b"proxy-server: fatal: unrecognized short option: x\n"),
                          (["-t", "5s", "true"],
                           b"proxy-server: fatal: timeout must be an unsigned integer\n"),
                          (["--verbosity=-1", "true"],
                           b"proxy-server: fatal: verbosity must be an unsigned integer\n"),
                          (["--before-tlsd", "true"], b"proxy-server: fatal: unrecognized boolean option: "
                                                      b"--before-tlsd\n")):
        done = run([*PROXY, *args], env=BASE)
        assert (done.returncode, done.stderr) == (100, message)
    _refused(_run(b"GET / HTTP/1.0\r\n\r\n"), (1,))
    _refused(_run(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", ["-2"]), (1,))
    _refused(_run(b"\r\n\r\n\0\r\nQUIT\n\x22\x00\x00\x00"), (1,))
    _refused(_run(b"\r\n\r\n\0\r\nQUIT\n\x21\x12\x00\x0c" + bytes(12)), (2,))
    done = _run(b"\r\n\r\n\0\r\nQUIT\n\x20\x11\x00\x0c" + bytes(12) + b"data")
    assert (done.returncode, done.stdout) == (0, b"RAN\ndata")
    assert done.stderr.decode().endswith(": warning: received LOCAL command with family set to 1\n")


def test_slow_header_within_and_past_the_deadline() -> None:
    line = b"PROXY TCP4 192.0.2.1 198.51.100.2 5555 443\r\n"
    done = _run(line + b"x", ["-t", "5000"], slow=0.005)
    assert (done.returncode, done.stdout) == (0, b"RAN\nx")
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([*PROXY, "-t", "300", *MARKER], stdin=theirs, stdout=theirs,
                            stderr=subprocess.PIPE, env=BASE)
    theirs.close()
    ours.sendall(line[:20])  # and then nothing: a client that stalls mid-header
    started = time.monotonic()
    _, err = proc.communicate(timeout=20)
    assert time.monotonic() - started < 10
    ours.close()
    assert proc.returncode == 111
    assert err.split(b": fatal: ")[1] == b"unable to read from stdin: Connection timed out\n"


HEADERS = [b"PROXY TCP4 192.0.2.1 198.51.100.2 5555 443\r\n", b"PROXY TCP6 ::1 ::2 1 2\r\n",
           b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c" + bytes(12),
           b"\r\n\r\n\0\r\nQUIT\n\x21\x31\x00\xd8" + bytes(216)]


@st.composite
def broken_header(draw: st.DrawFn) -> bytes:
    good = draw(st.sampled_from(HEADERS))
    how = draw(st.sampled_from(["truncate", "flip", "insert", "oversize", "garbage"]))
    if how == "truncate":
        return good[: draw(st.integers(0, len(good) - 1))]
    if how == "flip":
        i = draw(st.integers(0, len(good) - 1))
        return good[:i] + bytes([good[i] ^ draw(st.integers(1, 255))]) + good[i + 1 :]
    if how == "insert":
        i = draw(st.integers(0, len(good)))
        return good[:i] + draw(st.binary(min_size=1, max_size=8)) + good[i:]
    if how == "oversize":
        return b"PROXY UNKNOWN " + b"x" * draw(st.integers(93, 400)) + b"\r\n"
    return draw(st.binary(min_size=0, max_size=120))


def _accepted(data: bytes) -> bool:
    """Whether *data* still is a header the library takes (a flipped byte can make another valid one)."""
    taken = [0]

    def read(count: int) -> bytes:
        chunk = data[taken[0] : taken[0] + count]
        taken[0] += len(chunk)
        if len(chunk) < count:
            raise SystemFailure("read from stdin", errno.EPIPE)
        return chunk

    try:
        read_header(read)
    except (BadHeader, SystemFailure):
        return False
    return True


@settings(max_examples=40, deadline=None, phases=(Phase.explicit, Phase.generate))
@given(broken_header())
def test_fuzz_broken_headers_one_line_documented_code_nothing_passed_on(data: bytes) -> None:
    done = _run(data)
    if _accepted(data):
        assert done.returncode == 0 and done.stdout.startswith(b"RAN\n")
    else:
        _refused(done)


def test_the_pages_example_runs_as_written() -> None:
    page = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs",
                        "proxy-server.md")
    with open(page) as f:
        (block,) = re.findall(r"```sh\n(.*?)```", f.read(), re.S)
    done = run(["sh", "-c", block], env={"PATH": f"{os.path.dirname(S6IPC)}:/usr/bin:/bin"})
    assert (done.returncode, done.stdout, done.stderr) == (0, b"192.0.2.1\nhello", b"")
