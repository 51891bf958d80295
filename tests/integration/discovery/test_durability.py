"""muster-discovery survives kill -9: every acknowledged token and
registration is there after a restart on the same data dir, the index keeps
increasing, and an etcd that was waiting for the rest of its cluster during
the crash finishes bootstrapping once the service is back."""

import json
import os
import signal
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib"))
import harness  # noqa: E402
from harness import Discovery, Etcd, ProcessGroup, free_port, wait_for  # noqa: E402


def listing(disc, token):
    status, headers, body = disc.request("GET", "/" + token)
    assert status == 200, (status, body)
    doc = json.loads(body)
    return int(headers["x-etcd-index"]), doc["node"].get("nodes", [])


class Durability(unittest.TestCase):
    def setUp(self):
        self.group = ProcessGroup("muster-durability-")
        self.addCleanup(self.group.close)

    def test_kill9_loses_nothing_acknowledged_and_index_keeps_increasing(self):
        port = free_port()
        disc = Discovery(self.group, port=port)
        tokens = [disc.new_token(3) for _ in range(3)]
        names = [t.rsplit("/", 1)[1] for t in tokens]
        named = "durable-" + os.urandom(8).hex()
        status, _, body = disc.request("PUT", "/v2/keys/_etcd/registry/%s/_config/size" % named,
                                       "value=2")
        self.assertEqual(status, 201, body)

        # Registrations from several threads at once (exercises group commit);
        # every 201 is recorded, and only those are expected after the crash.
        acked = {}
        lock = threading.Lock()

        def register(tok, i):
            mid = "%x" % (0x1000 + i)
            st, hd, bd = disc.request("PUT", "/%s/%s?prevExist=false" % (tok, mid),
                                      "value=n%d%%3Dhttp%%3A%%2F%%2F127.0.0.1%%3A%d" % (i, 2000 + i))
            if st == 201:
                node = json.loads(bd)["node"]
                with lock:
                    acked[(tok, mid)] = (node["createdIndex"], node["value"])

        threads = [threading.Thread(target=register, args=(names[i % 3], i)) for i in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(acked), 24)
        index_before = max(listing(disc, n)[0] for n in names)

        # A registration racing the kill: if it was acknowledged it must survive.
        late = {}

        def late_register():
            try:
                st, _, bd = disc.request("PUT", "/%s/ffff?prevExist=false" % names[0],
                                         "value=late%3Dhttp%3A%2F%2F127.0.0.1%3A9", timeout=3)
                if st == 201:
                    late["node"] = json.loads(bd)["node"]
            except OSError:
                pass

        t = threading.Thread(target=late_register)
        t.start()
        disc.kill9()
        t.join()
        self.assertIsNotNone(disc.proc.popen.returncode)
        self.assertEqual(disc.proc.popen.returncode, -signal.SIGKILL)

        disc.start()  # same data dir, same port
        self.assertEqual(disc.port, port)
        for n in names:
            index, nodes = listing(disc, n)
            self.assertGreaterEqual(index, index_before)
            got = {(n, x["key"].rsplit("/", 1)[1]): (x["createdIndex"], x["value"]) for x in nodes}
            want = {k: v for k, v in acked.items() if k[0] == n}
            if n == names[0] and "node" in late:
                want[(n, "ffff")] = (late["node"]["createdIndex"], late["node"]["value"])
            for k, v in want.items():
                self.assertEqual(got.get(k), v, "acknowledged registration %s lost or changed" %
                                 (k,))
            # Nothing that was not written appears, except the racing one.
            extra = set(got) - set(want) - {(names[0], "ffff")}
            self.assertEqual(extra, set())
            created = [x["createdIndex"] for x in nodes]
            self.assertEqual(created, sorted(created), "listing not sorted by createdIndex")
            self.assertEqual(len(set(created)), len(created))

        status, _, body = disc.request("GET", "/v2/keys/_etcd/registry/%s/_config/size" % named)
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["node"]["value"], "2")

        # New writes get higher indexes than anything before the crash.
        all_created = [v[0] for v in acked.values()] + (
            [late["node"]["createdIndex"]] if "node" in late else [])
        st, hd, bd = disc.request("PUT", "/%s/abc1?prevExist=false" % names[1],
                                  "value=z%3Dhttp%3A%2F%2F127.0.0.1%3A1")
        self.assertEqual(st, 201, bd)
        self.assertGreater(json.loads(bd)["node"]["createdIndex"], max(all_created))
        self.assertGreater(int(hd["x-etcd-index"]), index_before)
        new_url = disc.new_token(3)
        self.assertNotIn(new_url, tokens)

        # A duplicate of a pre-crash registration is still refused.
        st, _, bd = disc.request("PUT", "/%s/%x?prevExist=false" % (names[1], 0x1000 + 1),
                                 "value=again%3Dhttp%3A%2F%2Fx%3A1")
        self.assertEqual((st, json.loads(bd)["errorCode"]), (412, 105))

        # Twice more, for indexes that never go backwards over restarts.
        last = int(hd["x-etcd-index"])
        for round_ in range(2):
            disc.kill9()
            disc.start()
            index, _ = listing(disc, names[1])
            self.assertGreaterEqual(index, last)
            st, hd, bd = disc.request("PUT", "/%s/beef%d?prevExist=false" % (names[1], round_),
                                      "value=r%3Dhttp%3A%2F%2F127.0.0.1%3A1")
            self.assertEqual(st, 201, bd)
            self.assertGreater(int(hd["x-etcd-index"]), last)
            last = int(hd["x-etcd-index"])

    def test_sigterm_answers_open_long_polls_and_exits_promptly(self):
        disc = Discovery(self.group, args=["--wait-timeout", "60s"])
        token = disc.new_token(3).rsplit("/", 1)[1]
        st, _, _ = disc.request("PUT", "/%s/abc?prevExist=false" % token,
                                "value=a%3Dhttp%3A%2F%2F127.0.0.1%3A1")
        self.assertEqual(st, 201)
        answers = []

        def poll():
            try:
                answers.append(disc.request("GET", "/%s?wait=true&recursive=true&waitIndex=999" %
                                            token, timeout=20))
            except OSError as e:
                answers.append(e)

        threads = [threading.Thread(target=poll) for _ in range(5)]
        for t in threads:
            t.start()
        wait_for(lambda: disc.metric("muster_discovery_open_long_polls") == 5, 10,
                 "five open long-polls")
        start = time.monotonic()
        disc.proc.kill(signal.SIGTERM)
        rc = disc.proc.wait(10)
        took = time.monotonic() - start
        for t in threads:
            t.join(10)
        self.assertEqual(rc, 0, disc.proc.log()[-2000:])
        # Draining takes milliseconds; the 5 s grace period is for stuck peers.
        self.assertLess(took, 3.0)
        self.assertEqual(len(answers), 5)
        for a in answers:
            self.assertIsInstance(a, tuple, a)
            st, headers, body = a
            # An empty 200 makes etcd's client poll again (and find the restarted service).
            self.assertEqual((st, body), (200, b""))
            self.assertIn("x-etcd-index", headers)
        msgs = [r.get("msg") for r in disc.proc.log_lines_json()]
        self.assertIn("stopping", msgs)
        self.assertIn("stopped", msgs)
        disc.start()
        self.assertEqual(len(listing(disc, token)[1]), 1)

    def test_waiting_etcd_finishes_bootstrap_after_service_restart(self):
        try:
            self._waiting_etcd()
        except AssertionError as e:
            raise AssertionError("%s\n\nlogs:\n%s" % (e, self.group.dump_logs())) from None

    def _waiting_etcd(self):
        port = free_port()
        disc = Discovery(self.group, port=port, args=["--wait-timeout", "20s"])
        url = disc.new_token(3)
        token = url.rsplit("/", 1)[1]
        a = Etcd(self.group, "early-a", ["--discovery", url])
        b = Etcd(self.group, "early-b", ["--discovery", url])
        # Both registered and now long-polling for the third.
        wait_for(lambda: len(listing(disc, token)[1]) == 2, 30, "two registrations")
        wait_for(lambda: disc.metric("muster_discovery_open_long_polls") >= 2, 15,
                 "both etcds to be long-polling")
        disc.kill9()
        time.sleep(0.5)  # let the etcds notice the broken watches and start backing off
        self.assertTrue(a.proc.alive() and b.proc.alive(), "an etcd gave up during the outage")
        disc.start()
        c = Etcd(self.group, "late-c", ["--discovery", url])
        members = [a, b, c]
        wait_for(lambda: all(e.healthy() for e in members), 60,
                 "all three etcds to bootstrap after the restart", interval=0.2)
        want = sorted(e.name for e in members)
        for e in members:
            names = wait_for(lambda: e.member_names(), 15, "member list on " + e.name)
            self.assertEqual(names, want)
        self.assertEqual(len(listing(disc, token)[1]), 3)


if __name__ == "__main__":
    unittest.main(verbosity=2)
