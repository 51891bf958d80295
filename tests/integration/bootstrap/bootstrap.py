"""Helpers for the bootstrap tests: muster members started with --discovery or
--discovery-srv (no --initial-cluster), small HTTP fakes in front of a
discovery service (a flaky reverse proxy, a forward proxy), dnsmasq with SRV
records, openssl-made certificates.

Builds on tests/lib/harness.py and tests/integration/node/cluster.py.
"""

import http.client
import http.server
import json
import os
import socket
import socketserver
import subprocess
import shutil
import sys
import threading
import time
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "node"))
from harness import Discovery, Etcd, ProcessGroup, free_port, request, wait_for  # noqa: E402,F401
from cluster import ELECTION_MS, HEARTBEAT_MS, MUSTER, Member, b64, unb64  # noqa: E402,F401

BIN_DIR = os.environ.get("MUSTER_BIN_DIR", "")
MUSTERCTL = os.path.join(BIN_DIR, "musterctl") if BIN_DIR else "musterctl"
DNSMASQ = next((p for p in ("/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/usr/local/sbin/dnsmasq")
                if os.path.exists(p)), None)
OPENSSL = "/usr/bin/openssl"


class BootTest(unittest.TestCase):
    """A test with its own ProcessGroup (temp dir prefix PREFIX), closed
    after the test; the members' logs are printed when the test fails."""
    PREFIX = "muster-boot-test-"

    def setUp(self):
        self.group = ProcessGroup(prefix=self.PREFIX)
        self.addCleanup(self.group.close)
        self.addCleanup(self._dump_on_failure)

    def _dump_on_failure(self):
        outcome = getattr(self, "_outcome", None)
        errors = getattr(outcome, "errors", []) if outcome else []
        if any(e[1] for e in errors) or (outcome and not getattr(outcome, "success", True)):
            print(self.group.dump_logs(3000), file=sys.stderr)

    def members(self, via):
        """The member list as `via` (a member) answers it."""
        st, j = via.call("/v3/cluster/member/list", {})
        self.assertEqual(st, 200, j)
        return j["members"]

    def voters(self, via):
        """The voters' names, sorted; None while `via` cannot answer."""
        try:
            return sorted(m.get("name", "") for m in self.members(via) if not m.get("isLearner"))
        except (OSError, AssertionError):
            return None

    def one_working_cluster(self, c):
        """Every member reports the same cluster ID, and a write through the
        first member is read through the last.  Returns the key written."""
        ids = {m.status()["header"]["cluster_id"] for m in c.members}
        self.assertEqual(len(ids), 1, ids)
        key = "k-%d" % time.monotonic_ns()
        st, j = c.members[0].put(key, "v")
        self.assertEqual(st, 200, j)
        self.assertEqual(c.members[-1].value(key), "v")
        return key

    def write_keys(self, prefix, n, via):
        """Puts n keys round-robin through `via`; returns the acknowledged ones."""
        acked = {}
        for i in range(n):
            k, v = "%s/%03d" % (prefix, i), "v%d" % i
            st, _ = via[i % len(via)].put(k, v)
            if st == 200:
                acked[k] = v
        return acked

    def kill_and_wipe(self, m):
        """The instance is gone: kill -9 and its data dir removed."""
        m.kill9()
        shutil.rmtree(m.data_dir)


class BootMember(Member):
    """A member whose bootstrap flags the test chooses (`boot`), e.g.
    ["--discovery", url] or ["--discovery-srv", domain, "--dns-server", ...]."""

    def __init__(self, cluster, name, host="127.0.0.1", scheme="http"):
        super().__init__(cluster, name)
        self.host = host        # the host in the advertised peer URL
        self.scheme = scheme    # of the peer URLs
        self.boot = []

    @property
    def peer_url(self):
        return "%s://%s:%d" % (self.scheme, self.host, self.peer_port)

    @property
    def listen_peer_url(self):
        return "%s://127.0.0.1:%d" % (self.scheme, self.peer_port)

    def start(self, boot=None, extra=None):
        if boot is not None:
            self.boot = list(boot)
        args = [MUSTER, "--name", self.name, "--data-dir", self.data_dir,
                "--listen-client-urls", self.client_url,
                "--advertise-client-urls", self.client_url,
                "--listen-peer-urls", self.listen_peer_url,
                "--initial-advertise-peer-urls", self.peer_url,
                "--heartbeat-interval", str(HEARTBEAT_MS),
                "--election-timeout", str(ELECTION_MS)] + self.boot
        args += list(extra if extra is not None else self.extra)
        env = dict(os.environ)
        env.update(self.env or {})
        self.proc = self.cluster.group.start(
            self.name + "-%d" % int(time.monotonic() * 1000), args, env=env)
        return self

    def exit_code(self, timeout):
        """Waits for the process to exit; its code, or None if still running."""
        return self.proc.wait(timeout)


class BootCluster:
    """Members that bootstrap through discovery or SRV; same surface as
    cluster.Cluster where the tests need it."""

    def __init__(self, size, group=None, names=None, **member_kw):
        self.group = group or ProcessGroup(prefix="muster-boot-test-")
        names = names or ["m%d" % (i + 1) for i in range(size)]
        self.members = [BootMember(self, n, **member_kw) for n in names]

    def add(self, name, **member_kw):
        m = BootMember(self, name, **member_kw)
        self.members.append(m)
        return m

    def start(self, boot, members=None):
        for m in members or self.members:
            m.start(boot)
        return self

    def _died(self, m):
        raise AssertionError("%s exited:\n%s" % (m.name, m.proc.log()[-3000:]))

    def wait_healthy(self, timeout=30, members=None):
        for m in members or self.members:
            wait_for(lambda: (m.alive() or self._died(m)) and m.healthy(), timeout,
                     "%s to be healthy" % m.name)

    def member_names(self, via=None):
        st, j = (via or self.members[0]).call("/v3/cluster/member/list", {})
        assert st == 200, (st, j)
        return sorted(x.get("name", "") for x in j["members"])

    def stop_all(self):
        for m in self.members:
            if m.alive():
                m.stop()

    def close(self):
        self.group.close()


def musterctl(*args, timeout=30):
    r = subprocess.run([MUSTERCTL] + list(args), capture_output=True, timeout=timeout, text=True)
    return r.returncode, r.stdout, r.stderr


# ---- small HTTP fakes ----------------------------------------------------

class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _forward(method, url, headers, body, timeout=60):
    """Sends one request to `url` (absolute) and returns (status, headers, body)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        path = u.path + ("?" + u.query if u.query else "")
        h = {k: v for k, v in headers.items()
             if k.lower() not in ("host", "proxy-connection", "connection", "keep-alive")}
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        return r.status, [(k, v) for k, v in r.getheaders()
                          if k.lower() not in ("transfer-encoding", "connection")], data
    finally:
        conn.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else None

    def _reply(self, status, headers, body):
        self.send_response(status)
        for k, v in headers:
            if k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self):
        self.server.owner.handle(self)

    do_GET = do_PUT = do_POST = do_DELETE = _handle


class FakeServer:
    """A threaded HTTP server on a free loopback port, closed by close()."""

    def __init__(self):
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class FlakyFront(FakeServer):
    """A reverse proxy in front of `upstream` that answers 503 to the first
    `failures` requests, then forwards everything."""

    def __init__(self, upstream, failures):
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self.failures = failures
        self.refused = 0
        self.forwarded = 0

    def handle(self, h):
        body = h._body()
        with self.lock:
            fail = self.refused < self.failures
            if fail:
                self.refused += 1
            else:
                self.forwarded += 1
        if fail:
            h._reply(503, [("Content-Type", "text/plain")], b"service unavailable\n")
            return
        status, headers, data = _forward(h.command, self.upstream + h.path, dict(h.headers), body)
        h._reply(status, headers, data)


class ForwardProxy(FakeServer):
    """An HTTP forward proxy: takes absolute-form request targets
    (GET http://host:port/path HTTP/1.1) and forwards them; records them."""

    def __init__(self):
        super().__init__()
        self.targets = []

    def handle(self, h):
        body = h._body()
        if not h.path.startswith("http://"):
            h._reply(400, [("Content-Type", "text/plain")], b"not a proxy request\n")
            return
        with self.lock:
            self.targets.append(h.command + " " + h.path)
        status, headers, data = _forward(h.command, h.path, dict(h.headers), body)
        h._reply(status, headers, data)


# ---- dnsmasq -------------------------------------------------------------

def free_udp_tcp_port():
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free UDP+TCP port")


def _dns_answers(port):
    """True when something answers a DNS query on 127.0.0.1:port (UDP)."""
    q = bytes([0x5e, 0xed, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]) + b"\x05ready\x04test\x00" + bytes(
        [0, 1, 0, 1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.sendto(q, ("127.0.0.1", port))
        try:
            data = s.recv(512)
        except socket.timeout:
            return False
        return len(data) >= 12 and data[0] == 0x5e and data[1] == 0xed


def start_dnsmasq(group, domain, srv_records, name="dnsmasq", hosts=(), port=None):
    """dnsmasq on a free loopback port (or `port`: a restart with new
    records, as a DNS update) answering for `domain` only.
    srv_records: [(service, target, port)], e.g. ("_etcd-server._tcp", "localhost", 12380).
    hosts: [(name, address)] A records only this server knows.
    Returns (proc, "127.0.0.1:<port>")."""
    port = port or free_udp_tcp_port()
    argv = [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            "--listen-address=127.0.0.1", "--bind-interfaces", "--port=%d" % port,
            "--pid-file=" + group.path(name + ".pid"), "--log-facility=-", "--log-queries",
            "--local=/%s/" % domain,
            # The SRV targets are "localhost": c-ares asks DNS for the rooted
            # "localhost." (the hosts file is not consulted for it).
            "--local=/localhost/", "--host-record=localhost,127.0.0.1"]
    if os.geteuid() == 0:
        argv.append("--user=root")  # else dnsmasq drops to nobody and cannot write its pid file
    for service, target, p in srv_records:
        argv.append("--srv-host=%s.%s,%s,%d" % (service, domain, target, p))
    for host, address in hosts:
        argv.append("--host-record=%s,%s" % (host, address))
    proc = group.start(name, argv)
    wait_for(lambda: (proc.alive() or _raise(proc)) and _dns_answers(port), 10,
             "dnsmasq to answer")
    return proc, "127.0.0.1:%d" % port


def _raise(proc):
    raise AssertionError("dnsmasq exited:\n" + proc.log())


# ---- certificates --------------------------------------------------------

def make_certs(dir_, sans):
    """A CA and one server+client certificate for `sans` (DNS names and IPs).
    Returns (ca_file, cert_file, key_file)."""
    ca_key, ca = os.path.join(dir_, "ca-key.pem"), os.path.join(dir_, "ca.pem")
    key, csr, cert = (os.path.join(dir_, n) for n in ("peer-key.pem", "peer.csr", "peer.pem"))
    ext = os.path.join(dir_, "peer.ext")
    run = lambda *a: subprocess.run([OPENSSL] + list(a), check=True, capture_output=True)  # noqa
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
        "-days", "2", "-subj", "/CN=muster-test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
        "-subj", "/CN=muster-peer")
    alt = ",".join(("IP:" + s) if s[0].isdigit() else ("DNS:" + s) for s in sans)
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n" % alt)
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
        "-days", "2", "-extfile", ext)
    return ca, cert, key
