"""net/'s HTTP/2 server against real clients: grpc C-core (python3-grpcio)
and curl, on one port beside HTTP/1.1, plaintext and TLS.

The server under test is h2_echo_server (echo_server.cpp): it knows nothing of
etcd, so these tests pin net/'s own behaviour -- framing, status and message
trailers, deadlines, cancellation, limits, ALPN, and what a client that speaks
the wrong protocol is told.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "lib"))
import harness  # noqa: E402

import grpc  # noqa: E402  (Debian python3-grpcio)

SERVER = os.path.join(harness.BIN_DIR, "h2_echo_server")


class Server:
    count = 0

    def __init__(self, group, *args):
        Server.count += 1
        self.proc = group.start("h2-server-%d" % Server.count, [SERVER, *args])
        line = harness.wait_for(
            lambda: next((ln for ln in self.proc.log().splitlines() if ln.startswith("PORT ")),
                         None) or (not self.proc.alive() and "exited") or None,
            10, "the server prints its port")
        if not line.startswith("PORT "):
            raise AssertionError("server did not start: " + self.proc.log())
        self.port = int(line.split()[1])
        self.addr = "127.0.0.1:%d" % self.port

    def stats(self, scheme="http", cafile=None):
        ctx = None
        if scheme == "https":
            import ssl
            ctx = ssl.create_default_context(cafile=cafile)
        with urllib.request.urlopen("%s://%s/stats" % (scheme, self.addr), timeout=5,
                                    context=ctx) as r:
            return json.loads(r.read())

    def log_text(self):
        return self.proc.log()


def curl(*args):
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True,
                          text=True, timeout=20)


class H2Test(unittest.TestCase):
    def setUp(self):
        self.group = harness.ProcessGroup()
        self.addCleanup(self.group.close)
        self.tmp = tempfile.mkdtemp(prefix="h2test-")

    def channel(self, server, **kw):
        ch = grpc.insecure_channel(server.addr, **kw)
        self.addCleanup(ch.close)
        return ch

    def make_cert(self):
        cert, key = os.path.join(self.tmp, "cert.pem"), os.path.join(self.tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", key,
                        "-out", cert], check=True, capture_output=True)
        return cert, key

    def test_unary_stream_and_errors(self):
        s = Server(self.group)
        ch = self.channel(s)
        unary = ch.unary_unary("/test.Echo/Unary")
        self.assertEqual(unary(b"hello", timeout=5), b"hello")
        self.assertEqual(unary(b"", timeout=5), b"")
        big = os.urandom(1 << 20)
        self.assertEqual(unary(big, timeout=10), big)
        stream = ch.stream_stream("/test.Echo/Stream")
        msgs = [b"a", b"bb", os.urandom(100000), b"ccc"]
        self.assertEqual(list(stream(iter(msgs), timeout=10)), msgs)
        # Status and a message that needs percent-encoding come back intact.
        text = "etcdserver: bad thing 100% \u00fcn\u00efcode\n"
        with self.assertRaises(grpc.RpcError) as e:
            ch.unary_unary("/test.Echo/Fail")(text.encode(), timeout=5)
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(e.exception.details(), text)
        with self.assertRaises(grpc.RpcError) as e:
            ch.unary_unary("/no.Such/Method")(b"x", timeout=5)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        # The connection still serves after errors.
        self.assertEqual(unary(b"again", timeout=5), b"again")

    def test_deadline_and_cancel(self):
        s = Server(self.group)
        ch = self.channel(s)
        hang = ch.unary_unary("/test.Echo/Hang")
        with self.assertRaises(grpc.RpcError) as e:
            hang(b"x", timeout=0.3)
        self.assertEqual(e.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        harness.wait_for(lambda: s.stats()["cancels"] >= 1, 5, "the handler hears of the deadline")
        # A client that cancels: the handler hears of it.
        fut = hang.future(b"x", timeout=30)
        harness.wait_for(lambda: s.stats()["calls"] >= 2, 5, "the call reaches the server")
        fut.cancel()
        harness.wait_for(lambda: s.stats()["cancels"] >= 2, 5, "the handler hears of the cancel")

    def test_limits(self):
        s = Server(self.group, "--max-message", "65536")
        ch = self.channel(s, options=[("grpc.max_send_message_length", 1 << 24)])
        unary = ch.unary_unary("/test.Echo/Unary")
        self.assertEqual(len(unary(b"x" * 65536, timeout=5)), 65536)
        with self.assertRaises(grpc.RpcError) as e:
            unary(b"x" * 65537, timeout=5)
        self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("larger than max (65537 vs. 65536)", e.exception.details())
        self.assertEqual(unary(b"ok", timeout=5), b"ok")

    def test_http_on_the_same_port(self):
        s = Server(self.group)
        with urllib.request.urlopen("http://%s/hello" % s.addr, timeout=5) as r:
            self.assertEqual(r.read(), b"hello\n")
        r = curl("--http2-prior-knowledge", "-w", "\n%{http_version}", "http://%s/hello" % s.addr)
        self.assertEqual(r.stdout, "hello\n\n2", r.stderr)
        r = curl("--http2-prior-knowledge", "--data-binary", "x" * 100000, "-w", "\n%{http_version}",
                 "http://%s/echo" % s.addr)
        self.assertEqual(r.stdout, "x" * 100000 + "\n2", r.stderr)
        r = curl("--http2-prior-knowledge", "http://%s/stream" % s.addr)
        self.assertEqual(r.stdout, "chunk0\nchunk1\nchunk2\n", r.stderr)
        # gRPC over HTTP/1.1 is told it needs HTTP/2.
        req = urllib.request.Request("http://%s/test.Echo/Unary" % s.addr, data=b"\0\0\0\0\0",
                                     headers={"Content-Type": "application/grpc"})
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=5)
        self.assertEqual(e.exception.code, 400)
        self.assertEqual(e.exception.read(), b"gRPC requires HTTP/2\n")
        self.assertIn("gRPC needs HTTP/2", s.log_text())
        # gRPC and HTTP/1.1 keep working side by side.
        ch = self.channel(s)
        self.assertEqual(ch.unary_unary("/test.Echo/Unary")(b"z", timeout=5), b"z")

    def test_tls_alpn(self):
        cert, key = self.make_cert()
        s = Server(self.group, "--cert", cert, "--key", key)
        with open(cert, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        ch = grpc.secure_channel(s.addr, creds)
        self.addCleanup(ch.close)
        self.assertEqual(ch.unary_unary("/test.Echo/Unary")(b"tls", timeout=5), b"tls")
        stream = ch.stream_stream("/test.Echo/Stream")
        self.assertEqual(list(stream(iter([b"1", b"2"]), timeout=5)), [b"1", b"2"])
        # curl offers h2 and http/1.1: it gets h2, and plain HTTP routes work there.
        r = curl("--cacert", cert, "-w", "\n%{http_version}", "https://%s/hello" % s.addr)
        self.assertEqual(r.stdout, "hello\n\n2", r.stderr)
        r = curl("--http1.1", "--cacert", cert, "-w", "\n%{http_version}",
                 "https://%s/hello" % s.addr)
        self.assertEqual(r.stdout, "hello\n\n1.1", r.stderr)
        self.assertEqual(s.stats("https", cert)["calls"], 2)

    def test_wrong_protocol_clients(self):
        cert, key = self.make_cert()
        tls = Server(self.group, "--cert", cert, "--key", key)
        plain = Server(self.group)
        # Plaintext gRPC to a TLS port: the call fails, the server says why.
        ch = self.channel(tls)
        with self.assertRaises(grpc.RpcError) as e:
            ch.unary_unary("/test.Echo/Unary")(b"x", timeout=2)
        self.assertIn(e.exception.code(),
                      (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED))
        harness.wait_for(lambda: "plaintext HTTP/2 (gRPC) client on a TLS port" in tls.log_text(),
                         5, "the TLS server logs the plaintext gRPC client")
        # Plain HTTP to a TLS port: Go's answer, so curl shows it.
        r = curl("http://%s/hello" % tls.addr)
        self.assertEqual(r.stdout, "Client sent an HTTP request to an HTTPS server.\n", r.stderr)
        # TLS to a plaintext port: the server logs it.
        r = curl("-k", "https://%s/hello" % plain.addr)
        self.assertNotEqual(r.returncode, 0)
        harness.wait_for(lambda: "TLS handshake on a plaintext port" in plain.log_text(), 5,
                         "the plaintext server logs the TLS client")
        # Both keep serving.
        self.assertEqual(self.channel(plain).unary_unary("/test.Echo/Unary")(b"ok", timeout=5),
                         b"ok")
        r = curl("--cacert", cert, "https://%s/hello" % tls.addr)
        self.assertEqual(r.stdout, "hello\n", r.stderr)

    def test_many_concurrent_streams(self):
        s = Server(self.group)
        ch = self.channel(s)
        unary = ch.unary_unary("/test.Echo/Unary")
        futs = [unary.future(b"%d" % i, timeout=60) for i in range(3000)]
        got = [f.result() for f in futs]
        self.assertEqual(got, [b"%d" % i for i in range(3000)])
        # Streams held open at once, then all answered.
        stream = ch.stream_stream("/test.Echo/Stream")
        done = threading.Event()
        calls = []

        def gen():
            yield b"open"
            done.wait(30)

        for _ in range(500):
            calls.append(stream(gen(), timeout=60))
        firsts = [next(c) for c in calls]
        self.assertEqual(firsts, [b"open"] * 500)
        done.set()
        for c in calls:
            self.assertEqual(list(c), [])
        self.assertEqual(unary(b"after", timeout=5), b"after")

    def test_slow_reader_is_reset(self):
        s = Server(self.group, "--max-queued", str(1 << 20))
        ch = self.channel(s)
        flood = ch.unary_stream("/test.Echo/Flood")
        with self.assertRaises(grpc.RpcError):
            for _ in flood(b"65536", timeout=20):
                pass
        self.assertIn("client does not read its stream", s.log_text())
        self.assertEqual(ch.unary_unary("/test.Echo/Unary")(b"alive", timeout=5), b"alive")


if __name__ == "__main__":
    unittest.main()
