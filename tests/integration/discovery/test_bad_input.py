"""muster-discovery against bad and hostile input: every request gets a clear
4xx (v2 error JSON on token routes), nothing crashes, and /health answers
after each case.  Also the quotas: registration cap under 1,000 concurrent
registrations, /new rate limit, long-poll timeout."""

import json
import os
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib"))
import harness  # noqa: E402
from harness import Discovery, ProcessGroup, raw_exchange, wait_for  # noqa: E402

VALUE = "value=n%3Dhttp%3A%2F%2F127.0.0.1%3A2380"


class BadInput(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.group = ProcessGroup("muster-badinput-")
        try:
            cls.disc = Discovery(cls.group, args=["--max-size", "9", "--new-rate", "0",
                                                  "--wait-timeout", "1s"])
        except Exception:
            cls.group.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.group.close()

    def setUp(self):
        self.addCleanup(self.assert_still_serving)

    def assert_still_serving(self):
        self.assertTrue(self.disc.proc.alive(), "muster-discovery died:\n" + self.disc.proc.log())
        status, _, body = self.disc.request("GET", "/health")
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body), {"health": "true"})

    def token(self, size=3):
        return self.disc.new_token(size).rsplit("/", 1)[1]

    def assert_v2_error(self, method, path, status, code, body=None):
        st, headers, data = self.disc.request(method, path, body)
        self.assertEqual(st, status, "%s %s -> %d %r" % (method, path, st, data))
        self.assertEqual(headers.get("content-type"), "application/json", path)
        doc = json.loads(data)
        self.assertEqual(doc["errorCode"], code, doc)
        self.assertIsInstance(doc["message"], str)
        self.assertIsInstance(doc["index"], int)
        self.assertIn("x-etcd-index", headers)
        return doc

    def test_malformed_sizes_get_400_saying_why(self):
        for size in ["abc", "0", "-1", "10", "1e3", "", "3.0", "+3", "%203", "99999999999999999999",
                     "0x3", "%00"]:
            for method in ["GET", "PUT", "POST"]:
                st, headers, body = self.disc.request(method, "/new?size=" + size)
                self.assertEqual(st, 400, "size %r via %s -> %d %r" % (size, method, st, body))
                self.assertIn(b"size", body.lower())
                self.assertTrue(headers["content-type"].startswith("text/plain"))
        # Through the form body too.
        st, _, body = self.disc.request("POST", "/new", "size=abc")
        self.assertEqual(st, 400, body)
        # The edges that are fine.
        for size in ["1", "9"]:
            st, _, body = self.disc.request("GET", "/new?size=" + size)
            self.assertEqual(st, 201, body)
            self.assertRegex(body.decode(), r"^http://127\.0\.0\.1:\d+/[0-9a-f]{32}\n$")
        st, _, body = self.disc.request("GET", "/new")
        self.assertEqual(st, 201, body)
        tok = body.decode().strip().rsplit("/", 1)[1]
        st, _, body = self.disc.request("GET", "/%s/_config/size" % tok)
        self.assertEqual(json.loads(body)["node"]["value"], "3")  # the default

    def test_named_token_sizes_and_names(self):
        for value in ["value=abc", "value=0", "value=10", "value=-2", "value=", "nothing=3"]:
            name = "named-" + os.urandom(8).hex()
            self.assert_v2_error("PUT", "/v2/keys/discovery/%s/_config/size" % name, 400, 209,
                                 value)
            # And nothing was created.
            self.assert_v2_error("GET", "/v2/keys/discovery/%s" % name, 404, 100)
        # Token names: 16-64 of [0-9A-Za-z_-].
        for bad in ["short", "x" * 65, "has.dot.in.it.abcdefgh", "sp%20ace-abcdefghijkl",
                    "quote%22abcdefghijklmnop", "semi%3Bcolon-abcdefghij", "%00nul-abcdefghijklm",
                    "%E2%9C%93-unicode-abcdefgh"]:
            st, headers, body = self.disc.request("PUT", "/v2/keys/d/%s/_config/size" % bad,
                                                  "value=3")
            self.assertGreaterEqual(st, 400, "%s -> %d %r" % (bad, st, body))
            self.assertLess(st, 500, "%s -> %d %r" % (bad, st, body))
        good = "Named_token-" + os.urandom(4).hex()
        st, _, body = self.disc.request("PUT", "/v2/keys/d/%s/_config/size" % good, "value=3")
        self.assertEqual(st, 201, body)
        # The size of an existing token cannot be changed.
        self.assert_v2_error("PUT", "/v2/keys/d/%s/_config/size" % good, 412, 105, "value=5")
        st, _, body = self.disc.request("GET", "/v2/keys/d/%s/_config/size" % good)
        self.assertEqual(json.loads(body)["node"]["value"], "3")

    def test_unknown_tokens_get_404_error_100(self):
        unknown = os.urandom(16).hex()
        for method, path, body in [
                ("GET", "/" + unknown, None),
                ("GET", "/%s/_config/size" % unknown, None),
                ("GET", "/v2/keys/discovery/%s" % unknown, None),
                ("PUT", "/%s/abc?prevExist=false" % unknown, VALUE),
                ("DELETE", "/%s/abc" % unknown, None),
                ("GET", "/%s?wait=true&waitIndex=1" % unknown, None)]:
            doc = self.assert_v2_error(method, path, 404, 100, body)
            self.assertIn(unknown, doc.get("cause", "") + doc["message"])
        # A member that is not there, on a token that is.
        tok = self.token()
        self.assert_v2_error("GET", "/%s/abc" % tok, 404, 100)
        self.assert_v2_error("DELETE", "/%s/abc" % tok, 404, 100)

    def test_oversized_body_413_and_headers_431(self):
        tok = self.token()
        big = "value=" + "a" * (2 * 1024 * 1024)
        st, _, body = self.disc.request("PUT", "/%s/abc?prevExist=false" % tok, big)
        self.assertEqual(st, 413, body)
        # Declared, not sent: refused on the header alone.
        data = raw_exchange(self.disc.port, (
            "PUT /%s/abd?prevExist=false HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n\r\nvalue=" % tok).encode())
        self.assertTrue(data.startswith(b"HTTP/1.1 413 "), data[:200])
        # Headers.
        st, _, body = self.disc.request("GET", "/" + tok, headers={"X-Junk": "j" * 100000})
        self.assertEqual(st, 431, body)
        data = raw_exchange(self.disc.port, b"GET /health HTTP/1.1\r\nHost: x\r\n" +
                            b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 431 "), data[:200])
        # A value that fits the body limit but not the registration value limit.
        st, _, body = self.disc.request("PUT", "/%s/abe?prevExist=false" % tok,
                                        "value=n%3D" + "h" * 20000)
        self.assertEqual(st, 400, body)
        self.assertEqual(json.loads(body)["errorCode"], 209)
        # Nothing was registered by any of this.
        st, _, body = self.disc.request("GET", "/" + tok)
        self.assertNotIn("nodes", json.loads(body)["node"])

    def test_path_traversal_is_refused(self):
        tok = self.token()
        for path in ["/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/%s/../%s" % (tok, tok),
                     "/%s/%%2e%%2e/_config/size" % tok, "/v2/keys/../../%s" % tok,
                     "/./%s/." % tok, "/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
                     "/%s/..%%2f..%%2fabc" % tok]:
            for method in ["GET", "PUT", "DELETE"]:
                st, headers, body = self.disc.request(method, path,
                                                      VALUE if method == "PUT" else None)
                self.assertGreaterEqual(st, 400, "%s %s -> %d %r" % (method, path, st, body))
                self.assertLess(st, 500, "%s %s -> %d %r" % (method, path, st, body))
        # Raw: a request-target that is not a path at all.
        data = raw_exchange(self.disc.port, b"GET ../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertRegex(data[:12], rb"^HTTP/1\.1 4\d\d")
        st, _, body = self.disc.request("GET", "/" + tok)
        self.assertNotIn("nodes", json.loads(body)["node"])

    def test_bad_member_ids_and_values(self):
        tok = self.token()
        for mid in ["XYZ", "g123", "12345678901234567", "-1", "a%2Fb", "_config"]:
            st, _, body = self.disc.request("PUT", "/%s/%s?prevExist=false" % (tok, mid), VALUE)
            self.assertGreaterEqual(st, 400, "%s -> %d %r" % (mid, st, body))
            self.assertLess(st, 500)
        for value in ["", "value=", "value=no-equals-sign", "value=%zz", "%%%"]:
            st, _, body = self.disc.request("PUT", "/%s/abc?prevExist=false" % tok, value)
            self.assertEqual(st, 400, "%r -> %d %r" % (value, st, body))
            self.assertIn(json.loads(body)["errorCode"], (209, 210))
        # Wrong methods and shapes.
        self.assert_v2_error("PUT", "/%s?prevExist=false" % tok, 403, 102, VALUE)
        self.assert_v2_error("DELETE", "/" + tok, 403, 102)
        self.assert_v2_error("DELETE", "/%s/_config/size" % tok, 403, 107)
        st, _, _ = self.disc.request("PATCH", "/" + tok, VALUE)
        self.assertEqual(st, 405)
        self.assert_v2_error("GET", "/%s?wait=true&waitIndex=abc" % tok, 400, 209)
        self.assert_v2_error("GET", "/%s?wait=true&waitIndex=-5" % tok, 400, 209)
        # Garbage on the wire.
        data = raw_exchange(self.disc.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" +
                            os.urandom(64) + b"\r\n\r\n")
        self.assertTrue(data == b"" or data.startswith(b"HTTP/1.1 400 "), data[:100])
        data = raw_exchange(self.disc.port, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1"
                            b"\r\n\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 400 "), data[:100])
        st, _, body = self.disc.request("GET", "/" + tok)
        self.assertNotIn("nodes", json.loads(body)["node"])

    def test_duplicate_ids_get_412_105_and_delete_frees_the_slot(self):
        tok = self.token()
        st, _, body = self.disc.request("PUT", "/%s/abc?prevExist=false" % tok, VALUE)
        self.assertEqual(st, 201, body)
        first = json.loads(body)["node"]
        self.assertEqual(json.loads(body)["action"], "create")
        doc = self.assert_v2_error("PUT", "/%s/abc?prevExist=false" % tok, 412, 105,
                                   "value=other%3Dhttp%3A%2F%2Fx%3A1")
        self.assertIn("abc", doc.get("cause", ""))
        # Also without prevExist: registrations are never overwritten.
        st, _, body = self.disc.request("PUT", "/%s/abc" % tok, "value=o%3Dhttp%3A%2F%2Fx%3A1")
        self.assertEqual(st, 412, body)
        st, _, body = self.disc.request("GET", "/%s/abc" % tok)
        self.assertEqual(json.loads(body)["node"]["value"], first["value"])
        # A member that failed to start frees its slot; it can register again.
        st, _, body = self.disc.request("DELETE", "/%s/abc" % tok)
        self.assertEqual(st, 200, body)
        self.assertEqual(json.loads(body)["action"], "delete")
        st, _, body = self.disc.request("PUT", "/%s/abc?prevExist=false" % tok, VALUE)
        self.assertEqual(st, 201, body)
        self.assertGreater(json.loads(body)["node"]["createdIndex"], first["createdIndex"])

    def test_thousand_concurrent_registrations_exactly_the_cap_accepted(self):
        size = 3
        cap = 4 * size + 16
        tok = self.token(size)
        results = []
        lock = threading.Lock()
        barrier = threading.Barrier(50)

        def worker(w):
            # Connect first, then all fire together.
            socks = []
            try:
                barrier.wait(timeout=20)
            except threading.BrokenBarrierError:
                pass
            for i in range(20):
                n = w * 20 + i
                try:
                    st, _, body = self.disc.request(
                        "PUT", "/%s/%x?prevExist=false" % (tok, 0x10000 + n),
                        "value=m%d%%3Dhttp%%3A%%2F%%2F10.0.%d.%d%%3A2380" % (n, n // 250, n % 250),
                        timeout=30)
                    with lock:
                        results.append((n, st, body))
                except OSError as e:
                    with lock:
                        results.append((n, None, repr(e).encode()))
            del socks

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(results), 1000)
        statuses = {}
        for n, st, body in results:
            statuses[st] = statuses.get(st, 0) + 1
        self.assertEqual(statuses.get(201, 0), cap, statuses)
        self.assertEqual(statuses.get(403, 0), 1000 - cap, statuses)
        for n, st, body in results:
            if st == 403:
                doc = json.loads(body)
                self.assertIn("full", doc["message"])
        accepted = {n: json.loads(b)["node"] for n, st, b in results if st == 201}
        created = sorted(v["createdIndex"] for v in accepted.values())
        self.assertEqual(len(set(created)), cap)

        st, headers, body = self.disc.request("GET", "/" + tok)
        nodes = json.loads(body)["node"]["nodes"]
        self.assertEqual(len(nodes), cap)
        self.assertEqual([x["createdIndex"] for x in nodes], created)
        first = [x["key"] for x in nodes[:size]]
        # The first `size` are stable across reads and across another writer.
        for _ in range(5):
            st, _, body = self.disc.request("GET", "/" + tok)
            self.assertEqual([x["key"] for x in json.loads(body)["node"]["nodes"][:size]], first)
        self.assert_v2_error("PUT", "/%s/%x?prevExist=false" % (tok, 0xfffff), 403, 403, VALUE)
        st, _, body = self.disc.request("GET", "/" + tok)
        self.assertEqual([x["key"] for x in json.loads(body)["node"]["nodes"][:size]], first)

    def test_long_poll_answers_events_and_times_out_empty(self):
        tok = self.token()
        st, headers, _ = self.disc.request("GET", "/" + tok)
        index = int(headers["x-etcd-index"])
        got = {}

        def poll():
            got["r"] = self.disc.request(
                "GET", "/%s?wait=true&recursive=true&waitIndex=%d" % (tok, index + 1), timeout=10)

        t = threading.Thread(target=poll)
        t.start()
        wait_for(lambda: self.disc.metric("muster_discovery_open_long_polls") >= 1, 5,
                 "the poll to be open")
        st, _, body = self.disc.request("PUT", "/%s/abc?prevExist=false" % tok, VALUE)
        self.assertEqual(st, 201)
        t.join(10)
        st, headers, body = got["r"]
        self.assertEqual(st, 200)
        ev = json.loads(body)
        self.assertEqual(ev["action"], "create")
        self.assertEqual(ev["node"]["key"], "/%s/abc" % tok)
        # Nothing new: an empty 200 after --wait-timeout (1s), which etcd re-polls.
        start = time.monotonic()
        st, headers, body = self.disc.request(
            "GET", "/%s?wait=true&recursive=true&waitIndex=%d" % (tok, ev["node"]["modifiedIndex"]
                                                                  + 1), timeout=10)
        took = time.monotonic() - start
        self.assertEqual((st, body), (200, b""))
        self.assertIn("x-etcd-index", headers)
        self.assertGreater(took, 0.8)
        self.assertLess(took, 5)
        # Clients that leave do not leak long-polls.
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", self.disc.port))
            s.sendall(("GET /%s?wait=true&waitIndex=999999 HTTP/1.1\r\nHost: x\r\n\r\n" %
                       tok).encode())
            s.close()
        wait_for(lambda: self.disc.metric("muster_discovery_open_long_polls") == 0, 5,
                 "abandoned long-polls to be released")


class RateLimit(unittest.TestCase):
    def test_new_tokens_are_rate_limited_per_client_address(self):
        group = ProcessGroup("muster-ratelimit-")
        self.addCleanup(group.close)
        disc = Discovery(group, args=["--new-rate", "5"])
        codes = [disc.request("PUT", "/new?size=3")[0] for _ in range(5)]
        self.assertEqual(codes, [201] * 5)
        st, headers, body = disc.request("PUT", "/new?size=3")
        self.assertEqual(st, 429, body)
        self.assertIn("retry-after", headers)
        # Named tokens count too.
        st, _, body = disc.request("PUT", "/v2/keys/x/%s/_config/size" % os.urandom(8).hex(),
                                   "value=3")
        self.assertGreaterEqual(st, 400)
        self.assertLess(st, 500)
        self.assertEqual(disc.request("GET", "/health")[0], 200)


if __name__ == "__main__":
    unittest.main(verbosity=2)
