"""Replacing a dead member automatically (--discovery-replace-dead): real
muster members bootstrapped through a real muster-discovery on loopback.

A member is killed (kill -9, data dir wiped: the instance is gone) and a new
node is started with the members' command line, its own name and addresses,
and the flag: it takes the dead member's seat as a learner, catches up, is
promoted, and the token lists it.  The refusals are checked too: two new
nodes for one seat, a member only paused shorter than the threshold, two of
three members dead.  docs/operations.md "Replacing a dead member
automatically" has the rules these tests hold the member to."""

import json
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bootstrap import (BootTest, BootCluster, Discovery, ProcessGroup, free_port, musterctl,  # noqa: E402
                       wait_for)


class ReplaceDeadTest(BootTest):
    PREFIX = "muster-replace-test-"

    # ---- helpers --------------------------------------------------------

    def form(self):
        """Three members through muster-discovery, without the flag."""
        d = Discovery(self.group)
        self.url = d.new_token(3)
        c = BootCluster(3, group=self.group)
        c.start(["--discovery", self.url])
        c.wait_healthy(timeout=60)
        for m in c.members:
            wait_for(lambda: c.member_names(m) == ["m1", "m2", "m3"], 20,
                     "full member list on " + m.name)
        return c

    def new_node(self, c, name, threshold, extra=()):
        n = c.add(name)
        n.start(["--discovery", self.url, "--discovery-replace-dead", threshold] + list(extra))
        return n

    def role(self, n):
        member = os.path.isdir(os.path.join(n.data_dir, "member"))
        proxy = os.path.isdir(os.path.join(n.data_dir, "proxy"))
        return "member" if member and not proxy else "proxy" if proxy and not member else None

    def log_has(self, n, text):
        return text in n.proc.log()

    def token_members(self):
        """Names of the token's first `size` registrations (the ones that count)."""
        code, out, err = musterctl("discovery", "show", self.url, "-w", "json")
        self.assertEqual(code, 0, err)
        return sorted(m.get("name", "") for m in json.loads(out)["members"] if m["inCluster"])

    # ---- tests ----------------------------------------------------------

    def test_killed_member_is_replaced_by_a_new_node(self):
        c = self.form()
        m1, m2, m3 = c.members
        acked = self.write_keys("before", 60, [m1, m2, m3])
        self.assertEqual(len(acked), 60)
        t_kill = time.monotonic()
        self.kill_and_wipe(m3)
        # The new node starts at once: it waits until the leader has not
        # heard m3 for the threshold.  Writes go on meanwhile (two of three
        # voters).
        t0 = time.monotonic()
        m4 = self.new_node(c, "m4", "3s")
        acked.update(self.write_keys("during", 20, [m1, m2]))
        # A voting member within a bounded time, three healthy voters.
        wait_for(lambda: self.voters(m1) == ["m1", "m2", "m4"], 60, "m4 to be a voter")
        wait_for(m4.healthy, 20, "m4 to be healthy")
        took, since_kill = time.monotonic() - t0, time.monotonic() - t_kill
        self.assertEqual(self.role(m4), "member")
        for m in (m1, m2, m4):
            wait_for(lambda: m.healthy(), 10, m.name + " healthy")
            self.assertEqual(self.voters(m), ["m1", "m2", "m4"], m.name)
        # No acknowledged write was lost: every one is read on the new member
        # (linearizable reads: through the leader's commit index).
        for k, v in acked.items():
            self.assertEqual(m4.value(k), v, k)
        st, j = m4.put("after", "x")
        self.assertEqual(st, 200, j)
        self.assertEqual(m1.value("after"), "x")
        # The token lists the new member in the dead one's place.
        self.assertEqual(self.token_members(), ["m1", "m2", "m4"])
        # Logs say who replaced whom and why; the leader counted it.
        self.assertTrue(self.log_has(m4, "this node replaces a dead member"))
        self.assertTrue(self.log_has(m4, "replacement member promoted to voting member"))
        self.assertTrue(any(self.log_has(m, "removing a dead member to make room") for m in (m1, m2)))
        total = 0.0
        for m in (m1, m2):
            st, text = m.call("/metrics", method="GET")
            for line in text.splitlines():
                if line.startswith("muster_server_member_replacements_total"):
                    total += float(line.split()[-1])
        self.assertEqual(total, 1.0)
        # The replacement lock was released on promotion.
        wait_for(lambda: m1.value("/muster/replacement/lock") is None, 10, "the lock released")
        print("\nreplacement: m4 start -> voting member in %.2fs, kill -> voting member in "
              "%.2fs (threshold 3s)" % (took, since_kill), file=sys.stderr)

    def test_two_new_nodes_for_one_dead_seat_exactly_one_wins(self):
        c = self.form()
        m1, m2, m3 = c.members
        self.kill_and_wipe(m3)
        a = self.new_node(c, "m4", "2s")
        b = self.new_node(c, "m5", "2s")
        wait_for(lambda: self.voters(m1) in (["m1", "m2", "m4"], ["m1", "m2", "m5"]), 60,
                 "one of m4/m5 to be a voter")
        wait_for(lambda: self.role(a) is not None and self.role(b) is not None, 30,
                 "both new nodes to settle")
        roles = sorted([self.role(a), self.role(b)])
        self.assertEqual(roles, ["member", "proxy"])
        winner, loser = (a, b) if self.role(a) == "member" else (b, a)
        wait_for(loser.healthy, 30, "the proxy to serve")
        self.assertTrue(self.log_has(loser, "not replacing any member"))
        time.sleep(2)  # nothing changes afterwards
        self.assertEqual(self.voters(m1), sorted(["m1", "m2", winner.name]))
        self.assertEqual(len(self.members(m1)), 3)
        self.assertTrue(loser.alive())

    def test_member_paused_shorter_than_the_threshold_is_not_replaced(self):
        c = self.form()
        m1, m2, m3 = c.members
        os.kill(m3.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(1.0)
            m4 = self.new_node(c, "m4", "6s")
            time.sleep(2.0)
        finally:
            os.kill(m3.proc.pid, signal.SIGCONT)
        # m4 asked while m3 was silent, waited for the threshold, found it
        # back: it becomes a proxy and m3 keeps its seat.
        wait_for(lambda: self.role(m4) == "proxy", 30, "m4 to fall back to proxy")
        wait_for(m4.healthy, 30, "the proxy to serve")
        self.assertTrue(self.log_has(m4, "not replacing any member"))
        self.assertTrue(m3.alive())
        wait_for(m3.healthy, 20, "m3 back")
        self.assertEqual(self.voters(m1), ["m1", "m2", "m3"])
        self.assertEqual(len(self.members(m1)), 3)

    def test_member_paused_longer_is_replaced_and_refused_when_it_resumes(self):
        c = self.form()
        m1, m2, m3 = c.members
        os.kill(m3.proc.pid, signal.SIGSTOP)
        try:
            m4 = self.new_node(c, "m4", "2s")
            wait_for(lambda: self.voters(m1) == ["m1", "m2", "m4"], 60, "m4 to be a voter")
        finally:
            os.kill(m3.proc.pid, signal.SIGCONT)
        # The old instance comes back: it learns it was removed and stops,
        # and a restart with its data dir is refused.
        self.assertIsNotNone(m3.exit_code(30), "m3 still running after being removed")
        self.assertIn("permanently removed from the cluster", m3.proc.log())
        m3.start(None)
        self.assertIsNotNone(m3.exit_code(30), "m3 restarted after being removed")
        self.assertIn("permanently removed from the cluster", m3.proc.log())
        self.assertEqual(self.voters(m1), ["m1", "m2", "m4"])

    def test_proxy_becomes_the_replacement_when_a_member_dies_later(self):
        c = self.form()
        m1, m2, m3 = c.members
        # Nothing is dead: the new node is a proxy, and keeps asking.
        m4 = self.new_node(c, "m4", "2s")
        wait_for(lambda: self.role(m4) == "proxy", 30, "m4 to fall back to proxy")
        wait_for(m4.healthy, 30, "the proxy to serve")
        st, j = m4.put("via-proxy", "p")
        self.assertEqual(st, 200, j)
        self.kill_and_wipe(m3)
        # Later a member dies: the proxy takes its seat by itself.
        wait_for(lambda: self.voters(m1) == ["m1", "m2", "m4"], 60, "m4 to be a voter")
        wait_for(lambda: self.role(m4) == "member", 20, "m4's data dir to be a member's")
        wait_for(m4.healthy, 20, "m4 to be healthy as a member")
        self.assertTrue(m4.alive())
        self.assertTrue(self.log_has(m4, "this proxy becomes the replacement member"))
        self.assertEqual(m4.value("via-proxy"), "p")
        self.assertEqual(self.token_members(), ["m1", "m2", "m4"])

    def test_a_learner_left_by_a_replacement_that_died_does_not_block_the_next(self):
        c = self.form()
        m1, m2, m3 = c.members
        # A learner that never answers: what a replacement that died before
        # its promotion leaves behind.  (Right after forming, member changes
        # answer "unhealthy cluster" for 5 s.)
        ghost = "http://127.0.0.1:%d" % free_port()

        def add_ghost():
            st, j = m1.call("/v3/cluster/member/add", {"peerURLs": [ghost], "isLearner": True})
            return st == 200
        wait_for(add_ghost, 30, "the ghost learner to be added")
        self.kill_and_wipe(m3)
        m4 = self.new_node(c, "m4", "2s")
        wait_for(lambda: self.voters(m1) == ["m1", "m2", "m4"], 60, "m4 to be a voter")
        self.assertEqual(len(self.members(m1)), 3)  # the ghost is gone
        self.assertTrue(any(self.log_has(m, "removing a learner that has been unreachable")
                            for m in (m1, m2)))
        wait_for(m4.healthy, 20, "m4 to be healthy")

    def test_two_of_three_dead_no_replacement_and_the_node_says_why(self):
        c = self.form()
        m1, m2, m3 = c.members
        self.kill_and_wipe(m2)
        self.kill_and_wipe(m3)
        m4 = self.new_node(c, "m4", "2s", extra=["--discovery-fallback", "exit"])
        code = m4.exit_code(60)
        self.assertEqual(code, 1)
        log = m4.proc.log()
        self.assertIn("not replacing any member", log)
        self.assertTrue("no member of the cluster is leader" in log or "fewer than a quorum" in log,
                        log[-2000:])
        # Nothing changed in the cluster's membership (read locally on m1).
        st, j = m1.call("/v3/cluster/member/list", {"linearizable": False})
        self.assertEqual(st, 200, j)
        self.assertEqual(sorted(m.get("name", "") for m in j["members"]), ["m1", "m2", "m3"])

    def test_the_replace_route_refuses_short_thresholds_and_bypassing_auth(self):
        """/muster/v1/replace removes a member: a client may not ask for a
        threshold under a second, and with auth enabled the route (which
        carries no etcd credentials) is refused on every member."""
        c = self.form()
        body = {"name": "intruder", "peer_urls": ["http://127.0.0.1:1"], "size": 3}
        for m in c.members:
            st, j = m.call("/muster/v1/replace", dict(body, dead_after_ms=10))
            self.assertEqual(st, 400, j)
        via = c.members[0]
        for path, req in (("/v3/auth/user/add", {"name": "root", "password": "rootpw"}),
                          ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
                          ("/v3/auth/enable", {})):
            st, j = via.call(path, req)
            self.assertEqual(st, 200, (path, j))
        for m in c.members:
            wait_for(lambda: m.call("/muster/v1/replace", dict(body, dead_after_ms=5000))[0] == 401,
                     20, "auth refusal on " + m.name)
            st, j = m.call("/muster/v1/replace", dict(body, dead_after_ms=5000))
            self.assertIn("auth", j["reason"])
        self.assertEqual(sorted(x["name"] for x in self.members(via)), ["m1", "m2", "m3"])


if __name__ == "__main__":
    unittest.main()
