"""muster members as a user runs them: real processes on loopback, static
bootstrap with --initial-cluster, the v3 JSON gateway."""

import http.client
import json
import os
import random
import signal
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster, ELECTION_MS, b64, unb64, wait_for  # noqa: E402


class ClusterTest(unittest.TestCase):
    def make(self, size, **kw):
        c = Cluster(size, **kw)
        self.addCleanup(c.close)
        self.addCleanup(lambda: self._on_fail(c))
        return c

    def _on_fail(self, c):
        if any(e for e in (self._outcome.errors if hasattr(self._outcome, "errors") else []) if e[1]):
            print(c.group.dump_logs(3000), file=sys.stderr)

    def test_one_three_and_five_member_clusters_form(self):
        for size in (1, 3, 5):
            with self.subTest(size=size):
                c = self.make(size).start()
                c.wait_healthy()
                lead = wait_for(c.leader, 10, "one agreed leader")
                self.assertIn(lead, c.members)
                ids = {m.status()["header"]["member_id"] for m in c.members}
                self.assertEqual(len(ids), size)
                st, j = c.members[0].call("/v3/cluster/member/list", {})
                self.assertEqual(st, 200)
                self.assertEqual(len(j["members"]), size)

                # Every member publishes its client URLs through Raft.
                def published():
                    st, j = c.members[-1].call("/v3/cluster/member/list", {})
                    return st == 200 and sorted(
                        (x["name"], tuple(x.get("clientURLs", []))) for x in j["members"]) == sorted(
                        (m.name, (m.client_url,)) for m in c.members)

                wait_for(published, 10, "every member's client URLs in the member list")
                c.close()

    def test_write_through_any_member_reads_linearizably_everywhere(self):
        c = self.make(3).start()
        c.wait_healthy()
        for i, writer in enumerate(c.members):
            st, j = writer.put("k%d" % i, "v%d" % i)
            self.assertEqual(st, 200, j)
            # A linearizable read on every member sees the write at once.
            for reader in c.members:
                self.assertEqual(reader.value("k%d" % i), "v%d" % i, reader.name)

    def test_kill_leader_under_load_loses_nothing_acknowledged(self):
        c = self.make(3).start()
        c.wait_healthy()
        lead = wait_for(c.leader, 10, "a leader")
        acked = {}
        stop = threading.Event()
        lock = threading.Lock()

        def writer(idx):
            n = 0
            while not stop.is_set():
                m = random.choice([x for x in c.members if x.alive()])
                key = "load/%d/%d" % (idx, n)
                try:
                    st, _ = m.put(key, str(n))
                except OSError:
                    st = None
                if st == 200:
                    with lock:
                        acked[key] = str(n)
                n += 1

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        wait_for(lambda: len(acked) > 50, 20, "writes to be acknowledged")
        killed_at = time.monotonic()
        lead.kill9()
        survivors = [m for m in c.members if m is not lead]
        new = wait_for(lambda: c.leader(survivors), 10, "a new leader", interval=0.005)
        elapsed_ms = (time.monotonic() - killed_at) * 1000
        self.assertIsNot(new, lead)
        # Two election timeouts, plus the polling and a loaded 2-core machine.
        self.assertLess(elapsed_ms, 2 * ELECTION_MS + 400, "new leader took %.0f ms" % elapsed_ms)
        before = len(acked)
        wait_for(lambda: len(acked) > before + 50, 20, "writes to continue after the failover")
        stop.set()
        for t in threads:
            t.join()
        for m in survivors:
            for key, v in acked.items():
                self.assertEqual(m.value(key, serializable=False), v, "%s lost %s" % (m.name, key))

    def test_restart_every_member_keeps_data_and_revision(self):
        c = self.make(3).start()
        c.wait_healthy()
        for i in range(100):
            st, _ = c.members[i % 3].put("r/%03d" % i, "x" * i)
            self.assertEqual(st, 200)
        rev = int(c.members[0].status()["header"]["revision"])
        for m in c.members:
            m.stop()
        for m in c.members:
            m.start()
        c.wait_healthy()
        for m in c.members:
            st, j = m.call("/v3/kv/range", {"key": b64("r/"), "range_end": b64("r0"), "count_only": True})
            self.assertEqual(st, 200)
            self.assertEqual(j["count"], "100")
            self.assertEqual(int(j["header"]["revision"]), rev)
        self.assertEqual(c.members[2].value("r/099"), "x" * 99)

    def test_member_with_another_cluster_token_is_rejected(self):
        c = self.make(3)
        c.members[0].start()
        c.members[1].start()
        c.members[2].start(token="some-other-cluster")
        c.wait_healthy(members=c.members[:2])
        st, _ = c.members[0].put("a", "1")
        self.assertEqual(st, 200)
        # The odd one out never joins: it never learns a leader.
        deadline = time.monotonic() + 3 * ELECTION_MS / 1000
        while time.monotonic() < deadline:
            self.assertFalse(c.members[2].healthy())
            time.sleep(0.05)
        logs = c.members[0].proc.log() + c.members[1].proc.log() + c.members[2].proc.log()
        self.assertIn("cluster ID mismatch", logs)

    def test_watch_delivers_every_event_in_order_across_a_leader_change(self):
        c = self.make(3).start()
        c.wait_healthy()
        lead = wait_for(c.leader, 10, "a leader")
        watcher = next(m for m in c.members if m is not lead)
        conn = http.client.HTTPConnection("127.0.0.1", watcher.client_port, timeout=30)
        conn.request("POST", "/v3/watch", body=json.dumps(
            {"create_request": {"key": b64("w/"), "range_end": b64("w0")}}))
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        events = []
        done = threading.Event()

        def reader():
            while not done.is_set():
                line = resp.readline()
                if not line:
                    return
                j = json.loads(line)
                for ev in j.get("result", {}).get("events", []):
                    events.append((unb64(ev["kv"]["key"]), int(ev["kv"]["mod_revision"])))

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        for i in range(50):
            self.assertEqual(watcher.put("w/%03d" % i, "a")[0], 200)
        lead.kill9()
        survivors = [m for m in c.members if m is not lead]
        wait_for(lambda: c.leader(survivors), 10, "a new leader")
        for i in range(50, 100):
            wait_for(lambda: watcher.put("w/%03d" % i, "b")[0] == 200, 10, "put %d" % i)
        wait_for(lambda: len(events) >= 100, 10, "100 watch events")
        done.set()
        conn.close()
        self.assertEqual([k for k, _ in events], ["w/%03d" % i for i in range(100)])
        revs = [r for _, r in events]
        self.assertEqual(revs, sorted(revs))
        self.assertEqual(len(set(revs)), 100)

    def test_bad_input_gets_etcds_errors_and_the_member_keeps_serving(self):
        c = self.make(1)
        c.members[0].extra = ["--max-request-bytes", "4096", "--max-txn-ops", "4"]
        c.start()
        c.wait_healthy()
        m = c.members[0]
        cases = [
            ("/v3/kv/put", "{not json"),
            ("/v3/kv/put", {"key": "!!!not-base64!!!", "value": b64("x")}),
            ("/v3/kv/put", {"key": b64("big"), "value": b64("x" * 5000)}),
            ("/v3/kv/txn", {"success": [{"request_put": {"key": b64("t%d" % i), "value": b64("v")}}
                                        for i in range(5)]}),
            ("/v3/kv/put", {"value": b64("no key")}),
        ]
        for path, body in cases:
            st, j = m.call(path, body)
            self.assertGreaterEqual(st, 400, (path, body, j))
            self.assertLess(st, 500, (path, body, j))
            self.assertIn("error", j)
            self.assertIn("code", j)
            self.assertTrue(m.healthy())
        for i in range(5):
            m.put("c", str(i))
        st, j = m.call("/v3/kv/compaction", {"revision": "4"})
        self.assertEqual(st, 200, j)
        st, j = m.call("/v3/kv/range", {"key": b64("c"), "revision": "2"})
        self.assertEqual(st, 400)
        self.assertIn("compacted", j["error"])
        self.assertEqual(m.value("c"), "4")

    def test_periodic_auto_compaction_compacts_old_revisions(self):
        c = self.make(1)
        c.members[0].extra = ["--auto-compaction-mode", "periodic", "--auto-compaction-retention", "2s"]
        c.start()
        c.wait_healthy()
        m = c.members[0]

        def compacted():
            m.put("ac", "x")
            st, j = m.call("/v3/kv/range", {"key": b64("ac"), "revision": "2"})
            return st == 400 and "compacted" in j.get("error", "")

        wait_for(compacted, 20, "revision 2 to be compacted", interval=0.2)
        self.assertEqual(m.value("ac"), "x")

    def test_force_new_cluster_restarts_one_member_alone_with_its_data(self):
        c = self.make(3).start()
        c.wait_healthy()
        for i in range(20):
            self.assertEqual(c.members[i % 3].put("f/%02d" % i, str(i))[0], 200)
        for m in c.members:
            m.stop()
        m1 = c.members[0]
        m1.extra = ["--force-new-cluster"]
        m1.start()
        c.wait_healthy(members=[m1])
        st, j = m1.call("/v3/cluster/member/list", {})
        self.assertEqual(st, 200)
        self.assertEqual([x["name"] for x in j["members"]], ["m1"])
        self.assertEqual(m1.value("f/19"), "19")
        self.assertEqual(m1.put("after", "yes")[0], 200)

    def test_quota_backend_bytes_refuses_growth_but_allows_deletes(self):
        c = self.make(1)
        c.members[0].extra = ["--quota-backend-bytes", str(1 << 20)]
        c.start()
        c.wait_healthy()
        m = c.members[0]
        big = "v" * 16384
        full = {}

        def refused():
            st, j = m.put("q/%d" % len(full), big)
            if st != 200:
                full["error"] = (st, j)
                return True
            full[len(full)] = True
            return False

        wait_for(refused, 60, "the quota to refuse a put", interval=0.01)
        st, j = full["error"]
        self.assertEqual(st, 429, j)
        self.assertEqual(j["error"], "etcdserver: mvcc: database space exceeded")
        st, j = m.call("/v3/kv/deleterange", {"key": b64("q/"), "range_end": b64("q0")})
        self.assertEqual(st, 200, j)
        self.assertTrue(m.healthy())

    def test_a_member_out_of_space_stops_growth_cluster_wide_until_disarmed(self):
        # As etcd: the member whose database passes --quota-backend-bytes
        # raises NOSPACE through Raft, and every member then refuses growth
        # (here m2 and m3, which have no quota of their own) until an
        # operator disarms the alarm.
        c = self.make(3)
        c.members[0].extra = ["--quota-backend-bytes", str(1 << 20)]
        c.start()
        c.wait_healthy()
        m1, m2 = c.members[0], c.members[1]
        big = "v" * 16384
        n = [0]

        def refused_on_m1():
            n[0] += 1
            return m1.put("q/%d" % n[0], big)[0] == 429
        wait_for(refused_on_m1, 60, "the quota to refuse a put on m1", interval=0.01)

        def refused_on_m2():
            st, j = m2.put("other", "x")
            return st == 429 and j["error"] == "etcdserver: mvcc: database space exceeded"
        wait_for(refused_on_m2, 10, "m2 to refuse growth once NOSPACE is raised")
        m1_id = m1.call("/v3/maintenance/status", {})[1]["header"]["member_id"]
        st, j = m2.call("/v3/maintenance/alarm", {"action": "GET"})
        self.assertEqual(j["alarms"], [{"memberID": m1_id, "alarm": "NOSPACE"}])
        # Deletes still pass; the disarm (through m2) lets m2 grow again.
        st, j = m2.call("/v3/kv/deleterange", {"key": b64("q/"), "range_end": b64("q0")})
        self.assertEqual(st, 200, j)
        st, j = m2.call("/v3/maintenance/alarm", {"action": "DEACTIVATE", "memberID": m1_id,
                                                  "alarm": "NOSPACE"})
        self.assertEqual(st, 200, j)
        wait_for(lambda: m2.put("other", "y")[0] == 200, 10, "m2 to accept growth after disarm")

    def test_sd_notify_ready_once_the_member_can_serve(self):
        import socket
        c = self.make(3)
        path = c.group.path("notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        self.addCleanup(sock.close)
        c.members[0].env = {"NOTIFY_SOCKET": path}
        c.members[0].start()
        # Alone, m1 has no quorum: it must not claim readiness.
        sock.settimeout(2 * ELECTION_MS / 1000)
        with self.assertRaises(socket.timeout):
            sock.recv(64)
        self.assertFalse(c.members[0].healthy())
        c.members[1].start()
        c.members[2].start()
        sock.settimeout(20)
        self.assertEqual(sock.recv(64), b"READY=1")
        self.assertTrue(c.members[0].healthy())


if __name__ == "__main__":
    unittest.main(verbosity=2)
