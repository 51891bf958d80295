"""Replacing a dead member automatically through DNS SRV records
(--discovery-srv with --discovery-replace-dead): real muster members, a real
dnsmasq serving `_etcd-server._tcp` on loopback.

The autoscaling group's story: three members bootstrap from the records,
all started with the flag (it is in the shared user-data); one instance is
killed (kill -9, data dir wiped); the records are rewritten to name the new
instance instead (dnsmasq restarted on the same port with the new set); the
new instance starts with the same command line, its own name and address.
It finds the running cluster through the other targets, asks its leader for
the dead member's seat as a full discovery token's node does, joins as a
learner and is promoted.  Kubernetes' variant: a StatefulSet pod back under
its old name (same peer URL) with an empty volume.  And without the flag,
etcd 3.4's behaviour (docs/operations.md)."""

import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bootstrap import BootTest, BootCluster, musterctl, start_dnsmasq, wait_for  # noqa: E402

DOMAIN = "example.test"
SERVICE = "_etcd-server._tcp"


class SrvReplaceTest(BootTest):
    PREFIX = "muster-srv-replace-test-"

    # ---- helpers --------------------------------------------------------

    def records(self, members):
        return [(SERVICE, "localhost", m.peer_port) for m in members]

    def form(self, replace_dead=None):
        """Three members from SRV records (targets `localhost`, one port each)."""
        c = BootCluster(3, group=self.group, host="localhost")
        self.dns, self.server = start_dnsmasq(self.group, DOMAIN, self.records(c.members))
        self.boot = ["--discovery-srv", DOMAIN, "--dns-server", self.server]
        if replace_dead:
            self.boot += ["--discovery-replace-dead", replace_dead]
        c.start(self.boot)
        c.wait_healthy(timeout=60)
        for m in c.members:
            wait_for(lambda: c.member_names(m) == ["m1", "m2", "m3"], 20,
                     "published names on " + m.name)
        return c

    def rewrite_records(self, members):
        """The DNS update: dnsmasq again, on the same port, with `members`."""
        self.dns.close()
        port = int(self.server.rsplit(":", 1)[1])
        self.dns, _ = start_dnsmasq(self.group, DOMAIN, self.records(members),
                                    name="dnsmasq-%d" % int(time.monotonic() * 1000), port=port)

    def member_id(self, via, name):
        return next(int(m["ID"]) for m in self.members(via) if m.get("name") == name)

    def metric(self, m, name):
        st, text = m.call("/metrics", method="GET")
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return None

    def check_no_acked_write_lost(self, acked, new):
        # Linearizable reads on the new member: through the leader's commit index.
        for k, v in acked.items():
            self.assertEqual(new.value(k), v, k)

    # ---- tests ----------------------------------------------------------

    def test_killed_member_is_replaced_when_the_records_name_the_new_node(self):
        # The flag is on from the first start, as shared user-data has it:
        # the ordinary bootstrap must not take it for a replacement.
        c = self.form(replace_dead="3s")
        m1, m2, m3 = c.members
        for m in c.members:
            self.assertNotIn("asking for a dead member's seat", m.proc.log())
        old_m3 = self.member_id(m1, "m3")
        acked = self.write_keys("before", 60, [m1, m2, m3])
        self.assertEqual(len(acked), 60)
        self.kill_and_wipe(m3)
        m4 = c.add("m4", host="localhost")
        self.rewrite_records([m1, m2, m4])
        t0 = time.monotonic()
        m4.start(self.boot)
        acked.update(self.write_keys("during", 20, [m1, m2]))
        wait_for(lambda: self.voters(m1) == ["m1", "m2", "m4"], 60, "m4 to be a voter")
        wait_for(m4.healthy, 20, "m4 to be healthy")
        took = time.monotonic() - t0
        for m in (m1, m2, m4):
            wait_for(m.healthy, 10, m.name + " healthy")
            self.assertEqual(self.voters(m), ["m1", "m2", "m4"], m.name)
        self.assertEqual(len(self.members(m1)), 3)
        self.check_no_acked_write_lost(acked, m4)
        st, j = m4.put("after", "x")
        self.assertEqual(st, 200, j)
        self.assertEqual(m1.value("after"), "x")
        # The log says who replaced whom, and why.
        log4 = m4.proc.log()
        self.assertIn("the SRV records name a running cluster that does not list this member",
                      log4)
        self.assertIn("this node replaces a dead member", log4)
        self.assertIn("replacement member promoted to voting member", log4)
        leader_logs = m1.proc.log() + m2.proc.log()
        self.assertIn("removing a dead member to make room", leader_logs)
        self.assertIn("the leader has not heard it for", leader_logs)
        # `member list --show-replacements`: m4 replaced m3 (its old ID).
        ep = ["--endpoints", m1.client_url]
        code, out, err = musterctl("member", "list", "--show-replacements", *ep)
        self.assertEqual(code, 0, err)
        line = next(x for x in out.splitlines() if ", m4, " in x)
        self.assertIn("m3 (%x)" % old_m3, line)
        code, out, err = musterctl("member", "list", "--show-replacements", "-w", "json", *ep)
        self.assertEqual(code, 0, err)
        history = json.loads(out)["replacements"]
        self.assertEqual(len(history), 1, history)
        self.assertEqual(history[0]["name"], "m4")
        self.assertEqual(history[0]["replaced"]["name"], "m3")
        self.assertGreaterEqual(history[0]["replaced"]["unheard_for_ms"], 3000)
        # Without the option the table is etcdctl's.
        code, out, err = musterctl("member", "list", *ep)
        self.assertEqual(code, 0, err)
        self.assertNotIn("m3", out)
        # /metrics: the replicated count on every member, the leader's counter.
        for m in (m1, m2, m4):
            wait_for(lambda: self.metric(m, "muster_cluster_member_replacements") == 1.0, 10,
                     "the replacement count on " + m.name)
        self.assertEqual(sum(self.metric(m, "muster_server_member_replacements_total") or 0
                             for m in (m1, m2)), 1.0)
        wait_for(lambda: m1.value("/muster/replacement/lock") is None, 10, "the lock released")
        print("\nSRV replacement: m4 start -> healthy voter in %.2fs (threshold 3s)" % took,
              file=sys.stderr)

    def test_pod_back_under_its_name_with_an_empty_volume_takes_a_new_seat(self):
        # Kubernetes: muster-2's volume is lost; the StatefulSet recreates
        # the pod under the same name, so the records and its peer URL do
        # not change.  The member with that URL has started before: the
        # new pod must not vote under its ID from an empty log; it gets a
        # new ID in the dead member's place.
        c = self.form(replace_dead="2s")
        m1, m2, m3 = c.members
        old_m3 = self.member_id(m1, "m3")
        acked = self.write_keys("before", 30, [m1, m2, m3])
        self.kill_and_wipe(m3)
        m3.start(self.boot)
        wait_for(lambda: self.voters(m1) == ["m1", "m2", "m3"]
                 and self.member_id(m1, "m3") != old_m3, 60, "m3 back as a new voter")
        wait_for(m3.healthy, 20, "m3 to be healthy")
        self.assertEqual(len(self.members(m1)), 3)
        self.assertIn("belong to a member that already started", m3.proc.log())
        self.check_no_acked_write_lost(acked, m3)

    def test_proxy_takes_the_seat_when_a_member_dies_later(self):
        # The records name m4 while m3 still runs (the group booted the new
        # instance early): nothing is dead, so m4 becomes a proxy of the
        # running cluster and keeps asking, re-reading the records; when m3
        # dies it takes the seat.
        c = self.form(replace_dead="2s")
        m1, m2, m3 = c.members
        m4 = c.add("m4", host="localhost")
        self.rewrite_records([m1, m2, m4])
        m4.start(self.boot)
        wait_for(lambda: os.path.isdir(os.path.join(m4.data_dir, "proxy")), 30,
                 "m4 to fall back to proxy")
        wait_for(m4.healthy, 30, "the proxy to serve")
        self.assertIn("not replacing any member", m4.proc.log())
        st, j = m4.put("via-proxy", "p")
        self.assertEqual(st, 200, j)
        self.kill_and_wipe(m3)
        wait_for(lambda: self.voters(m1) == ["m1", "m2", "m4"], 60, "m4 to be a voter")
        wait_for(lambda: os.path.isdir(os.path.join(m4.data_dir, "member"))
                 and not os.path.isdir(os.path.join(m4.data_dir, "proxy")), 20,
                 "m4's data dir to be a member's")
        wait_for(m4.healthy, 20, "m4 to be healthy as a member")
        self.assertIn("this proxy becomes the replacement member", m4.proc.log())
        self.assertEqual(m4.value("via-proxy"), "p")

    def test_without_the_flag_the_new_node_is_refused_as_etcd_refuses_it(self):
        # etcd 3.4 (run by hand, docs/operations.md): a wiped member back at
        # its own address stops with "has already been bootstrapped"; a new
        # address bootstraps a cluster of its own, which the members refuse
        # ("cluster ID mismatch"): it never becomes healthy.
        c = self.form()
        m1, m2, m3 = c.members
        self.kill_and_wipe(m3)
        m3.start(self.boot)
        self.assertEqual(m3.exit_code(30), 1)
        self.assertIn("member %x has already been bootstrapped" % self.member_id(m1, "m3"),
                      m3.proc.log())
        m4 = c.add("m4", host="localhost")
        self.rewrite_records([m1, m2, m4])
        m4.start(self.boot)
        wait_for(lambda: "cluster ID mismatch" in m1.proc.log() + m2.proc.log(), 30,
                 "the members to refuse m4's cluster")
        self.assertTrue(m4.alive())
        self.assertFalse(m4.healthy())
        self.assertNotIn("asking", m4.proc.log())
        self.assertEqual(sorted(m["name"] for m in self.members(m1)), ["m1", "m2", "m3"])


if __name__ == "__main__":
    unittest.main()
