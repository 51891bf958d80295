"""Membership changes on a running muster cluster, as an etcd operator makes
them: /v3/cluster/member/add|remove|update|promote, then starting the new
member with --initial-cluster-state existing."""

import json
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster, Member, wait_for  # noqa: E402


class Writer:
    """Writes distinct keys through whichever live member answers, and
    remembers every write that was acknowledged."""

    def __init__(self, cluster, prefix):
        self.cluster = cluster
        self.prefix = prefix
        self.acked = []
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        i = 0
        while not self.stop_flag.is_set():
            live = [m for m in self.cluster.members if m.alive()]
            if not live:
                time.sleep(0.01)
                continue
            m = live[i % len(live)]
            key = "%s%06d" % (self.prefix, i)
            try:
                st, _ = m.put(key, "v%d" % i)
                if st == 200:
                    self.acked.append(key)
            except OSError:
                pass
            i += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join(30)

    def wait_for_more(self, n, timeout=30):
        target = len(self.acked) + n
        wait_for(lambda: len(self.acked) >= target, timeout, "%d more acknowledged writes" % n)


class MembershipTest(unittest.TestCase):
    def make(self, size, **kw):
        c = Cluster(size, **kw)
        self.addCleanup(c.close)
        self.addCleanup(lambda: self._on_fail(c))
        return c

    def _on_fail(self, c):
        errors = self._outcome.errors if hasattr(self._outcome, "errors") else []
        if any(e for e in errors if e[1]):
            print(c.group.dump_logs(4000), file=sys.stderr)

    def member_list(self, m):
        st, j = m.call("/v3/cluster/member/list", {"linearizable": True})
        self.assertEqual(st, 200, j)
        return j["members"]

    def add(self, c, via, name, learner=False, extra=None):
        """member add on `via`, then start the new member with
        --initial-cluster-state existing; returns (Member, add response)."""
        m = Member(c, name)
        body = {"peerURLs": [m.peer_url]}
        if learner:
            body["isLearner"] = True
        st, j = self.call_when_healthy(via, "/v3/cluster/member/add", body)
        self.assertEqual(st, 200, j)
        self.assertEqual(j["member"]["peerURLs"], [m.peer_url])
        c.members.append(m)
        initial = ",".join("%s=%s" % (x.name, x.peer_url) for x in c.members if x.alive() or x is m)
        m.start(initial_cluster=initial,
                extra=["--initial-cluster-state", "existing"] + list(extra or []))
        return m, j

    def member_id(self, c, member):
        for x in self.member_list(c.members[0] if c.members[0].alive() else c.members[1]):
            if member.peer_url in x.get("peerURLs", []):
                return x["ID"]
        raise AssertionError("%s not in the member list" % member.name)

    def call_when_healthy(self, via, path, body):
        # As etcd, a member refuses membership changes until it has been
        # connected to the voters for 5 s ("unhealthy cluster"): retry.
        box = {}

        def accepted():
            box["r"] = via.call(path, body)
            st, j = box["r"]
            return not (st == 503 and j.get("message") == "etcdserver: unhealthy cluster")
        wait_for(accepted, 30, "%s to be accepted" % path)
        return box["r"]

    def remove(self, via, member_id):
        st, j = self.call_when_healthy(via, "/v3/cluster/member/remove", {"ID": member_id})
        self.assertEqual(st, 200, j)
        return j

    def check_all_acked(self, members, keys):
        for m in members:
            st, j = m.call("/v3/kv/range", {"key": "d3Jp", "range_end": "d3Jq", "keys_only": True})
            self.assertEqual(st, 200, j)
        for m in members:
            missing = [k for k in keys if m.value(k) is None]
            self.assertEqual(missing, [], "acknowledged writes missing on %s" % m.name)

    def test_grow_three_to_five_and_shrink_to_three_while_writing(self):
        c = self.make(3).start()
        c.wait_healthy()
        with Writer(c, "w") as w:
            w.wait_for_more(20)
            m4, add4 = self.add(c, c.members[0], "m4")
            # Until m4 is up, the member list shows it without a name.
            self.assertEqual(add4["member"].get("name", ""), "")
            c.wait_healthy(members=[m4])
            w.wait_for_more(20)
            m5, _ = self.add(c, c.members[1], "m5")
            c.wait_healthy(members=[m5])
            w.wait_for_more(20)
            members = self.member_list(c.members[2])
            self.assertEqual(sorted(x.get("name") for x in members), ["m1", "m2", "m3", "m4", "m5"])
            self.assertTrue(all(x.get("clientURLs") for x in members), members)
            # Every member reports the same, five-member view and one leader.
            wait_for(c.leader, 10, "one agreed leader of five")

            # Shrink back: a removed member stops by itself.
            for gone in (m4, m5):
                mid = self.member_id(c, gone)
                self.remove(c.members[0], mid)
                wait_for(lambda: not gone.alive(), 20, "%s to exit after its removal" % gone.name)
                c.members.remove(gone)
                w.wait_for_more(20)
        self.assertGreater(len(w.acked), 100)
        self.assertEqual(sorted(x.get("name") for x in self.member_list(c.members[0])),
                         ["m1", "m2", "m3"])
        wait_for(c.leader, 10, "one agreed leader of three")
        self.check_all_acked(c.members, w.acked)

    def test_remove_the_leader(self):
        c = self.make(3).start()
        c.wait_healthy()
        with Writer(c, "r") as w:
            w.wait_for_more(20)
            lead = wait_for(c.leader, 10, "a leader")
            lead_id = lead.status()["header"]["member_id"]
            follower = next(m for m in c.members if m is not lead)
            self.remove(follower, lead_id)
            wait_for(lambda: not lead.alive(), 20, "the removed leader to exit")
            c.members.remove(lead)
            new_lead = wait_for(c.leader, 10, "a new leader among the two left")
            self.assertNotEqual(new_lead.status()["header"]["member_id"], lead_id)
            w.wait_for_more(20)
        self.assertEqual(len(self.member_list(c.members[0])), 2)
        self.check_all_acked(c.members, w.acked)
        # Restarted with its old data dir, the removed member refuses to run.
        lead.start()
        wait_for(lambda: not lead.alive(), 20, "the removed member to exit at start")
        self.assertIn("permanently removed", lead.proc.log())

    def test_learner_catches_up_from_a_snapshot_and_is_promoted(self):
        c = self.make(3)
        for m in c.members:
            m.extra = ["--snapshot-count", "100", "--experimental-snapshot-catchup-entries", "10"]
        c.start()
        c.wait_healthy()
        for i in range(400):
            st, j = c.members[i % 3].put("pre%04d" % i, "x" * 100)
            self.assertEqual(st, 200, j)
        learner, add = self.add(c, c.members[0], "m4", learner=True,
                                extra=["--snapshot-count", "100"])
        self.assertTrue(add["member"].get("isLearner"), add)
        # A learner does not count toward the quorum and cannot be promoted
        # before it has caught up; it serves once it has.
        c.wait_healthy(members=[learner])
        self.assertIn('"receiving snapshot"', learner.proc.log())
        self.assertEqual(learner.value("pre0399", serializable=True), "x" * 100)
        self.assertTrue(learner.status().get("isLearner"), learner.status())
        learner_id = self.member_id(c, learner)
        # Only one learner at a time, as etcd 3.4.
        extra = Member(c, "m5")

        def add_second_learner():
            # The strict reconfiguration check comes first, as in etcd: a
            # voter that reconnected in the last 5 s (a loaded machine) makes
            # the cluster "unhealthy" for a moment; wait that out.
            st, j = c.members[1].call("/v3/cluster/member/add",
                                      {"peerURLs": [extra.peer_url], "isLearner": True})
            if st == 503 and j.get("message") == "etcdserver: unhealthy cluster":
                return None
            return st, j

        st, j = wait_for(add_second_learner, 30, "the cluster to be healthy for reconfiguration",
                         0.5)
        self.assertEqual(st, 400, j)
        self.assertEqual(j["message"], "etcdserver: too many learner members in cluster")
        # Promote through a follower: it asks the leader.
        wait_for(lambda: c.leader(members=c.members[:3]), 10, "a leader")
        follower = next(m for m in c.members[:3]
                        if m.status()["leader"] != m.status()["header"]["member_id"])

        def promoted():
            st, j = follower.call("/v3/cluster/member/promote", {"ID": learner_id})
            if st != 200:
                self.assertIn("in sync with leader", j.get("message", ""), j)
                return None
            return j

        j = wait_for(promoted, 20, "the learner to be promoted")
        me = [x for x in j["members"] if x["ID"] == learner_id][0]
        self.assertFalse(me.get("isLearner", False))
        wait_for(lambda: not learner.status().get("isLearner"), 10, "m4 to know it votes")
        # Promoting a voter is refused.
        st, j = follower.call("/v3/cluster/member/promote", {"ID": learner_id})
        self.assertEqual(st, 400, j)
        self.assertEqual(j["message"], "etcdserver: can only promote a learner member")
        # Four voters now: with m1 down the other three keep a quorum.
        c.members[0].kill9()
        # (A write may time out while m1's successor is elected.)
        wait_for(lambda: learner.put("after", "promotion")[0] == 200, 30,
                 "a write with m1 down")
        self.assertEqual(c.members[1].value("after"), "promotion")

    def test_strict_reconfig_refuses_a_change_that_would_lose_quorum(self):
        c = self.make(3).start()
        c.wait_healthy()
        c.members[2].kill9()
        live = c.members[0]
        wait_for(lambda: c.leader(members=c.members[:2]), 10, "a leader of the two")
        ids = {x["name"]: x["ID"] for x in self.member_list(live)}
        unhealthy = (503, "etcdserver: unhealthy cluster")
        # Removing m2 would leave m1 the only live voter of two (m3 is down).
        st, j = live.call("/v3/cluster/member/remove", {"ID": ids["m2"]})
        self.assertEqual((st, j["message"]), unhealthy, j)
        # With a voter down, nothing is added, not even a learner.
        newcomer = Member(c, "m4")
        for learner in (False, True):
            st, j = live.call("/v3/cluster/member/add",
                              {"peerURLs": [newcomer.peer_url], "isLearner": learner})
            self.assertEqual((st, j["message"]), unhealthy, j)
        # Removing the dead m3 is safe (it is not part of the live quorum).
        self.remove(live, ids["m3"])
        self.assertEqual(sorted(x["name"] for x in self.member_list(c.members[1])), ["m1", "m2"])
        st, j = live.put("still", "writable")
        self.assertEqual(st, 200, j)

    def test_strict_reconfig_counts_started_members(self):
        c = self.make(1).start()
        c.wait_healthy()
        m1 = c.members[0]
        # A second voter for a one-member cluster is allowed although it is
        # not started (etcd's exception, for restoring a cluster)...
        st, j = m1.call("/v3/cluster/member/add", {"peerURLs": [Member(c, "m2").peer_url]})
        self.assertEqual(st, 200, j)
        # ...a third is not: one started voter of three is no quorum.
        st, j = m1.call("/v3/cluster/member/add", {"peerURLs": [Member(c, "m3").peer_url]})
        self.assertEqual((st, j["message"]),
                         (400, "etcdserver: re-configuration failed due to not enough started members"))

    def test_strict_reconfig_off_allows_it(self):
        c = self.make(3)
        for m in c.members:
            m.extra = ["--strict-reconfig-check=false"]
        c.start()
        c.wait_healthy()
        c.members[2].kill9()
        wait_for(lambda: c.leader(members=c.members[:2]), 10, "a leader of the two")
        newcomer = Member(c, "m4")
        st, j = c.members[0].call("/v3/cluster/member/add", {"peerURLs": [newcomer.peer_url]})
        self.assertEqual(st, 200, j)

    def test_update_peer_urls_and_bad_requests(self):
        c = self.make(3).start()
        c.wait_healthy()
        m1 = c.members[0]
        ids = {x["name"]: x["ID"] for x in self.member_list(m1)}
        # As etcd, a member refuses changes until it has been connected to
        # every voter for 5 s ("unhealthy cluster"), and checks URLs in use
        # after that: wait until the health rule passes.
        wait_for(lambda: m1.call("/v3/cluster/member/add",
                                 {"peerURLs": [c.members[1].peer_url]})[0] != 503,
                 30, "the cluster to take membership changes")
        # Bad input: etcd's errors, and the member keeps serving.
        cases = [
            ("/v3/cluster/member/add", {"peerURLs": ["not a url"]}, 400,
             "etcdserver: given member URLs are invalid"),
            ("/v3/cluster/member/add", {"peerURLs": []}, 400,
             "etcdserver: given member URLs are invalid"),
            ("/v3/cluster/member/add", {"peerURLs": [c.members[1].peer_url]}, 400,
             "etcdserver: Peer URLs already exists"),
            ("/v3/cluster/member/remove", {"ID": "12345"}, 404, "etcdserver: member not found"),
            ("/v3/cluster/member/promote", {"ID": ids["m2"]}, 400,
             "etcdserver: can only promote a learner member"),
            ("/v3/cluster/member/update", {"ID": "777", "peerURLs": ["http://127.0.0.1:1"]}, 404,
             "etcdserver: member not found"),
            ("/v3/cluster/member/update", {"ID": ids["m2"], "peerURLs": [c.members[2].peer_url]},
             400, "etcdserver: Peer URLs already exists"),
        ]
        for path, body, status, message in cases:
            st, j = m1.call(path, body)
            self.assertEqual((st, j.get("message") if isinstance(j, dict) else j),
                             (status, message), (path, body))
        st, j = m1.call("/v3/cluster/member/add", "{not json")
        self.assertEqual(st, 400, j)
        # Update m3's peer URL to a second address of the same port family:
        # stop m3, update, restart it listening there.
        m3 = c.members[2]
        m3.stop()
        m3_new = Member(c, "m3x")
        st, j = m1.call("/v3/cluster/member/update",
                        {"ID": ids["m3"], "peerURLs": [m3_new.peer_url]})
        self.assertEqual(st, 200, j)
        got = [x for x in j["members"] if x["ID"] == ids["m3"]][0]
        self.assertEqual(got["peerURLs"], [m3_new.peer_url])
        m3.peer_port = m3_new.peer_port
        m3.start(initial_cluster=",".join("%s=%s" % (x.name, x.peer_url) for x in c.members))
        c.wait_healthy()
        st, j = m3.put("after-update", "1")
        self.assertEqual(st, 200, j)
        self.assertEqual(m1.value("after-update"), "1")

    def test_peer_url_serves_the_member_list_as_etcd(self):
        c = self.make(3).start()
        c.wait_healthy()
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", c.members[0].peer_port, timeout=5)
        conn.request("GET", "/members")
        r = conn.getresponse()
        body = json.loads(r.read())
        self.assertEqual(r.status, 200)
        cid = r.getheader("X-Etcd-Cluster-ID")
        self.assertEqual(int(cid, 16), int(c.members[0].status()["header"]["cluster_id"]))
        self.assertEqual(sorted(m["name"] for m in body), ["m1", "m2", "m3"])
        self.assertEqual(sorted(m["peerURLs"][0] for m in body),
                         sorted(m.peer_url for m in c.members))
        # And the peer port keeps carrying Raft: the cluster still writes.
        st, j = c.members[1].put("k", "v")
        self.assertEqual(st, 200, j)


if __name__ == "__main__":
    unittest.main(verbosity=2)
