"""Muster members secured the way etcd 3.4 operators secure etcd.

Certificates are made by deploy/certs/gencerts.sh (cfssl + cfssljson) and,
in one case, deploy/certs/gencerts-openssl.sh, into the test's temp dir.
Real `muster` processes on loopback; clients are musterctl, curl and
Python's ssl module.  Standard library only.
"""

import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration", "node"))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
from cluster import BIN_DIR, MUSTER, Cluster, Member  # noqa: E402
from harness import ProcessGroup, wait_for  # noqa: E402

GENCERTS = os.path.join(ROOT, "deploy", "certs", "gencerts.sh")
GENCERTS_OPENSSL = os.path.join(ROOT, "deploy", "certs", "gencerts-openssl.sh")
MUSTERCTL = os.path.join(BIN_DIR, "musterctl") if BIN_DIR else "musterctl"


def gencerts(script, out, env=None, hosts=("localhost", "127.0.0.1")):
    e = dict(os.environ)
    e.update(env or {})
    r = subprocess.run([script, out] + list(hosts), env=e, capture_output=True,
                       text=True, timeout=120)
    if r.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s" % (script, r.returncode, r.stderr))
    return out


def read(path):
    with open(path) as f:
        return f.read()


def pki(out, name):
    return os.path.join(out, name)


def client_context(ca=None, cert=None, key=None, verify=True, max_tls12=False, ciphers=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(ca)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    if max_tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


def https_call(port, ctx, path="/health", method="GET", body=None, timeout=5):
    """(status, body text, negotiated cipher tuple).  Raises on a refused
    handshake or a connection the server closes."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=timeout)
    try:
        conn.request(method, path, body=body)
        r = conn.getresponse()
        text = r.read().decode("utf-8", "replace")
        return r.status, text, conn.sock.cipher()
    finally:
        conn.close()


def refused(port, ctx):
    """True when an https request with ctx gets no HTTP answer at all."""
    try:
        status, _, _ = https_call(port, ctx)
        return False if status == 200 else True
    except (ssl.SSLError, ConnectionError, OSError, http.client.HTTPException):
        return True


class TlsMember(Member):
    """A Member with https client and peer URLs; HTTP calls go through the
    cluster's client TLS context."""

    host = "127.0.0.1"  # listen and advertise address

    @property
    def client_url(self):
        return "https://%s:%d" % (self.host, self.client_port)

    @property
    def peer_url(self):
        return "https://%s:%d" % (self.host, self.peer_port)

    def call(self, path, body=None, method="POST", timeout=10):
        import json
        conn = http.client.HTTPSConnection(self.host, self.client_port,
                                           context=self.cluster.client_ctx, timeout=timeout)
        try:
            data = None if body is None else json.dumps(body)
            conn.request(method, path, body=data,
                         headers={"Content-Type": "application/json"} if data else {})
            r = conn.getresponse()
            text = r.read().decode("utf-8", "replace")
            try:
                return r.status, json.loads(text) if text else None
            except ValueError:
                return r.status, text
        finally:
            conn.close()

    def healthy(self):
        try:
            st, j = self.call("/health", method="GET", timeout=3)
            return st == 200 and j.get("health") == "true"
        except (OSError, ssl.SSLError, http.client.HTTPException):
            return False


class TlsCluster(Cluster):
    def __init__(self, size, group, client_ctx, flags):
        super().__init__(size, group=group, token="muster-tls-test")
        self.client_ctx = client_ctx
        self.members = [TlsMember(self, "m%d" % (i + 1)) for i in range(size)]
        for m in self.members:
            m.extra = list(flags)


def cert_flags(d, peer_dir=None, cipher=None):
    p = peer_dir or d
    flags = ["--cert-file", pki(d, "server.pem"), "--key-file", pki(d, "server-key.pem"),
             "--trusted-ca-file", pki(d, "ca.pem"), "--client-cert-auth",
             "--peer-cert-file", pki(p, "peer.pem"), "--peer-key-file", pki(p, "peer-key.pem"),
             "--peer-trusted-ca-file", pki(p, "ca.pem"), "--peer-client-cert-auth"]
    if cipher:
        flags += ["--cipher-suites", cipher]
    return flags


class TlsTest(unittest.TestCase):
    def setUp(self):
        self.group = ProcessGroup(prefix="muster-tls-test-")
        self.addCleanup(self.group.close)

    def run_ctl(self, d, port, *args):
        return subprocess.run(
            [MUSTERCTL, "--endpoints", "https://127.0.0.1:%d" % port, "--cacert", pki(d, "ca.pem"),
             "--cert", pki(d, "client.pem"), "--key", pki(d, "client-key.pem")] + list(args),
            capture_output=True, text=True, timeout=30)

    def start_cluster(self, size, ctx, flags, timeout=60):
        c = TlsCluster(size, self.group, ctx, flags)
        c.start()
        try:
            c.wait_healthy(timeout=timeout)
        except AssertionError:
            print(self.group.dump_logs(), file=sys.stderr)
            raise
        return c

    def test_cfssl_certificates_mutual_tls_serves_only_trusted_clients(self):
        d = gencerts(GENCERTS, self.group.path("pki"))
        other = gencerts(GENCERTS, self.group.path("other-pki"))  # a second, unrelated CA
        good = client_context(pki(d, "ca.pem"), pki(d, "client.pem"), pki(d, "client-key.pem"))
        c = self.start_cluster(3, good, cert_flags(d) + ["--peer-cert-allowed-cn", "muster-peer"])
        m1, m2, m3 = c.members

        # A trusted client: musterctl and curl with --cacert/--cert/--key.
        r = self.run_ctl(d, m1.client_port, "put", "secure", "yes")
        self.assertEqual(r.returncode, 0, r.stderr)
        wait_for(lambda: m3.value("secure", serializable=True) == "yes", 10,
                 "the write to replicate over TLS peers")
        r = self.run_ctl(d, m2.client_port, "get", "secure")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), ["secure", "yes"])
        if shutil.which("curl"):
            r = subprocess.run(["curl", "-sS", "--cacert", pki(d, "ca.pem"), "--cert",
                                pki(d, "client.pem"), "--key", pki(d, "client-key.pem"),
                                "https://127.0.0.1:%d/health" % m2.client_port],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn('"health":"true"', r.stdout.replace(" ", ""))
            # curl without a client certificate: the TLS handshake fails.
            r = subprocess.run(["curl", "-sS", "--cacert", pki(d, "ca.pem"),
                                "https://127.0.0.1:%d/health" % m2.client_port],
                               capture_output=True, text=True, timeout=30)
            self.assertNotEqual(r.returncode, 0, r.stdout)

        # Refused: no client certificate, a certificate from another CA,
        # and plain HTTP to the https port.
        self.assertTrue(refused(m1.client_port, client_context(pki(d, "ca.pem"))))
        self.assertTrue(refused(m1.client_port, client_context(
            pki(d, "ca.pem"), pki(other, "client.pem"), pki(other, "client-key.pem"))))
        try:
            conn = http.client.HTTPConnection("127.0.0.1", m1.client_port, timeout=5)
            conn.request("GET", "/health")
            status = conn.getresponse().status
            self.assertNotEqual(status, 200, "plain HTTP was served on an https port")
        except (ConnectionError, OSError, http.client.HTTPException):
            pass
        # The server certificate names 127.0.0.1, so a client that checks
        # the host name against the CA is satisfied; one trusting only the
        # other CA is not.
        self.assertTrue(refused(m1.client_port, client_context(
            pki(other, "ca.pem"), pki(d, "client.pem"), pki(d, "client-key.pem"))))
        # The peer port refuses a client certificate (clientAuth only; no
        # peer profile) from another CA too: nothing but TLS with the peer CA.
        self.assertTrue(refused(m1.peer_port, client_context(
            pki(d, "ca.pem"), pki(other, "peer.pem"), pki(other, "peer-key.pem"))))
        self.assertTrue(m1.healthy())

        # What only the leader answers (lease keepalives) a follower forwards
        # to the leader's https client URL with the member's certificate.
        lead = wait_for(c.leader, 10, "one agreed leader")
        follower = next(m for m in c.members if m is not lead)
        st, j = lead.call("/v3/lease/grant", {"TTL": 60})
        self.assertEqual(st, 200, j)
        st, j = follower.call("/v3/lease/keepalive", {"ID": j["ID"]})
        self.assertEqual(st, 200, j)
        self.assertEqual(j["result"]["TTL"], "60")

    def test_peer_whose_common_name_is_not_allowed_cannot_join(self):
        d = gencerts(GENCERTS, self.group.path("pki"))
        # Same CA, a peer certificate with another common name.
        intruder = self.group.path("intruder-pki")
        os.makedirs(intruder)
        for f in ("ca.pem", "ca-key.pem"):
            shutil.copy(pki(d, f), intruder)
        gencerts(GENCERTS, intruder, env={"PEER_CN": "intruder"})
        good = client_context(pki(d, "ca.pem"), pki(d, "client.pem"), pki(d, "client-key.pem"))
        c = TlsCluster(3, self.group, good, [])
        m1, m2, m3 = c.members
        allowed = ["--peer-cert-allowed-cn", "muster-peer"]
        m1.extra = cert_flags(d) + allowed
        m2.extra = cert_flags(d) + allowed
        m3.extra = cert_flags(d, peer_dir=intruder) + allowed
        c.start()
        c.wait_healthy(timeout=60, members=[m1, m2])

        def rejected():
            for m in (m1, m2):
                for line in m.proc.log_lines_json():
                    if line.get("msg") == "rejected client certificate" and \
                            line.get("common-name") == "intruder":
                        return True
            return False
        wait_for(rejected, 20, "m1 or m2 to reject the intruder's peer certificate")
        self.assertEqual(m1.put("k", "v")[0], 200)
        # m3 cannot get a word to the others, so it never publishes itself
        # and never serves; give it several election timeouts to try.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            self.assertFalse(m3.healthy(), "the intruder joined the cluster")
            time.sleep(0.2)
        st, j = m1.call("/v3/cluster/member/list", {})
        self.assertEqual(st, 200)
        m3_entry = [x for x in j["members"] if x.get("name") == "m3"]
        self.assertFalse(m3_entry and m3_entry[0].get("clientURLs"),
                         "the intruder published its client URLs: %s" % j)

    def test_peer_certificate_for_another_host_is_refused_by_the_dialer(self):
        # Trusted CA, but the peer certificates name only wrong.example.com
        # while the peer URLs say 127.0.0.1: every dialer must refuse.
        d = gencerts(GENCERTS, self.group.path("pki"), hosts=("wrong.example.com",))
        c = TlsCluster(3, self.group, None, cert_flags(d))
        c.start()

        def dial_refused():
            for m in c.members:
                for line in m.proc.log_lines_json():
                    if line.get("msg") == "cannot connect to peer" and \
                            "certificate verify failed" in line.get("error", ""):
                        return True
            return False
        wait_for(dial_refused, 20, "a dialer to refuse the peer certificate for another host")
        # No member can reach another, so none elects a leader or serves:
        # as etcd, a member that has not joined holds client connections
        # without answering them.
        for m in c.members:
            self.assertTrue(m.alive())
            self.assertFalse(m.healthy(), "%s answered /health without a cluster" % m.name)

    def test_peer_certificate_must_name_the_address_it_connects_from(self):
        # Members listen on 127.0.0.2 with certificates for 127.0.0.2 only,
        # but connect from 127.0.0.1: as etcd 3.4, the listener refuses a
        # peer whose certificate does not name its source address, unless
        # --experimental-peer-skip-client-san-verification.
        d = gencerts(GENCERTS, self.group.path("pki"), hosts=("127.0.0.2",))
        good = client_context(pki(d, "ca.pem"), pki(d, "client.pem"), pki(d, "client-key.pem"))

        def cluster(tag, extra):
            c = TlsCluster(3, self.group, good, cert_flags(d) + extra)
            for m in c.members:
                m.host = "127.0.0.2"
                m.data_dir = self.group.path("%s-%s.data" % (tag, m.name))
            return c.start()

        strict = cluster("strict", [])

        def san_refused():
            for m in strict.members:
                for line in m.proc.log_lines_json():
                    if "do not name its address 127.0.0.1" in line.get("error", ""):
                        return True
            return False
        wait_for(san_refused, 20, "a listener to refuse a peer certificate for another address")
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            for m in strict.members:
                self.assertTrue(m.alive())
                self.assertFalse(m.healthy(), "a member served though no peer was accepted")
            time.sleep(0.2)
        for m in strict.members:
            m.stop()

        relaxed = cluster("relaxed", ["--experimental-peer-skip-client-san-verification"])
        relaxed.wait_healthy(timeout=60)
        self.assertEqual(relaxed.members[0].put("san", "skipped")[0], 200)

    def test_openssl_certificates_and_cipher_suites(self):
        d = gencerts(GENCERTS_OPENSSL, self.group.path("pki"))
        good = client_context(pki(d, "ca.pem"), pki(d, "client.pem"), pki(d, "client-key.pem"))
        c = self.start_cluster(
            3, good, cert_flags(d, cipher="TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"))
        m1 = c.members[0]
        self.assertEqual(m1.put("cipher", "ok")[0], 200)
        r = self.run_ctl(d, c.members[2].client_port, "get", "cipher")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), ["cipher", "ok"])
        self.assertTrue(refused(m1.client_port, client_context(pki(d, "ca.pem"))))

        # TLS 1.2: the listed suite is the one negotiated ...
        ctx12 = client_context(pki(d, "ca.pem"), pki(d, "client.pem"), pki(d, "client-key.pem"),
                               max_tls12=True)
        status, _, cipher = https_call(m1.client_port, ctx12)
        self.assertEqual(status, 200)
        self.assertEqual(cipher[0], "ECDHE-RSA-AES128-GCM-SHA256")
        self.assertEqual(cipher[1], "TLSv1.2")
        # ... and a client offering only another TLS 1.2 suite is refused.
        only_other = client_context(pki(d, "ca.pem"), pki(d, "client.pem"),
                                    pki(d, "client-key.pem"), max_tls12=True,
                                    ciphers="ECDHE-RSA-AES256-GCM-SHA384")
        self.assertTrue(refused(m1.client_port, only_other))
        # The peer listener enforces the list as well.
        peer12 = client_context(pki(d, "ca.pem"), pki(d, "peer.pem"), pki(d, "peer-key.pem"),
                                max_tls12=True, ciphers="ECDHE-RSA-AES256-GCM-SHA384")
        with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
            with socket.create_connection(("127.0.0.1", m1.peer_port), timeout=5) as s:
                with peer12.wrap_socket(s, server_hostname="127.0.0.1"):
                    pass

    def test_auto_tls_cluster_forms_serves_https_and_keeps_its_certificates(self):
        insecure = client_context(verify=False)
        c = self.start_cluster(3, insecure, ["--auto-tls", "--peer-auto-tls",
                                             "--peer-client-cert-auth"])
        m1, m2, m3 = c.members
        self.assertEqual(m1.put("auto", "tls")[0], 200)
        wait_for(lambda: m3.value("auto", serializable=True) == "tls", 10, "replication")
        status, _, cipher = https_call(m2.client_port, insecure)
        self.assertEqual(status, 200)
        self.assertIn(cipher[1], ("TLSv1.2", "TLSv1.3"))

        cert = os.path.join(m1.data_dir, "fixtures", "client", "cert.pem")
        peer_cert = os.path.join(m1.data_dir, "fixtures", "peer", "cert.pem")
        key = os.path.join(m1.data_dir, "fixtures", "peer", "key.pem")
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600)
        # The generated certificate names the listen host and localhost.
        text = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-text"],
                              capture_output=True, text=True, timeout=30).stdout
        self.assertIn("IP Address:127.0.0.1", text)
        self.assertIn("DNS:localhost", text)
        self.assertIn("ASN1 OID: prime256v1", text)
        # It verifies for 127.0.0.1 when trusted directly.
        status, _, _ = https_call(m1.client_port, client_context(cert))
        self.assertEqual(status, 200)
        warned = [l for l in m1.proc.log_lines_json()
                  if l.get("level") == "warn" and "--peer-client-cert-auth" in l.get("msg", "")]
        self.assertTrue(warned, "no warning that peer client cert auth is ignored")

        # Restart: the same certificates are reused.
        before = (read(cert), read(peer_cert))
        m1.stop()
        m1.start()
        wait_for(lambda: m1.healthy(), 30, "m1 to serve again after a restart")
        self.assertEqual(before, (read(cert), read(peer_cert)))

    def test_unknown_cipher_suite_stops_startup_with_a_clear_message(self):
        c = Cluster(1, group=self.group)
        m = c.members[0]
        m.start(extra=["--cipher-suites",
                       "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_NO_SUCH_SUITE"])
        rc = m.proc.wait(20)
        self.assertIsNotNone(rc, "muster kept running with an unknown cipher suite")
        self.assertNotEqual(rc, 0)
        self.assertIn('unexpected TLS cipher suite \\"TLS_NO_SUCH_SUITE\\"', m.proc.log())
        # An OpenSSL-style name gets a hint.
        m.start(extra=["--cipher-suites", "ECDHE-RSA-AES128-GCM-SHA256"])
        self.assertNotEqual(m.proc.wait(20), 0)
        self.assertIn("IANA name", m.proc.log())

    def test_https_url_without_certificate_or_with_bad_tls_settings_stops_startup(self):
        c = TlsCluster(1, self.group, None, [])
        m = c.members[0]
        m.start()
        rc = m.proc.wait(20)
        self.assertIsNotNone(rc)
        self.assertNotEqual(rc, 0)
        self.assertIn("KeyFile and CertFile are not presented", m.proc.log())

        # --peer-client-cert-auth with nothing to check peers against.
        cert, key = self.group.path("c.pem"), self.group.path("k.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=x", "-days", "1",
                        "-keyout", key, "-out", cert], check=True, capture_output=True, timeout=60)
        m.start(extra=["--cert-file", cert, "--key-file", key, "--peer-cert-file", cert,
                       "--peer-key-file", key, "--peer-client-cert-auth"])
        rc = m.proc.wait(20)
        self.assertIsNotNone(rc)
        self.assertNotEqual(rc, 0)
        self.assertIn("--peer-client-cert-auth needs --peer-trusted-ca-file", m.proc.log())
        # A missing file is named.
        m.start(extra=["--cert-file", self.group.path("absent.pem"), "--key-file", key,
                       "--peer-cert-file", cert, "--peer-key-file", key])
        self.assertNotEqual(m.proc.wait(20), 0)
        self.assertIn("absent.pem", m.proc.log())


if __name__ == "__main__":
    unittest.main()
