"""Leases as every member reports them: only the leader's clock counts
keepalives, so a follower must answer LeaseTimeToLive with the leader's
remaining TTL (etcd forwards it to the leader), not with its own stale
expiry.  Found by tests/robustness: followers said TTL -1 for leases the
leader kept alive, and the leases' keys were still readable after that
"expiry"."""

import time
import unittest

from cluster import Cluster, wait_for


class LeaseTest(unittest.TestCase):
    def setUp(self):
        self.c = Cluster(3)
        self.addCleanup(self.c.close)
        self.c.start()
        self.c.wait_healthy()
        self.lead = wait_for(self.c.leader, 30, "a leader")
        self.followers = [m for m in self.c.members if m is not self.lead]

    def grant(self, ttl):
        st, j = self.lead.call("/v3/lease/grant", {"TTL": str(ttl)})
        self.assertEqual(st, 200, j)
        return j["ID"]

    def ttl_on(self, m, lease):
        st, j = m.call("/v3/lease/timetolive", {"ID": lease})
        self.assertEqual(st, 200, j)
        return int(j.get("TTL", 0))

    def keepalive(self, m, lease):
        st, j = m.call("/v3/lease/keepalive", {"ID": lease})
        self.assertEqual(st, 200, j)
        return int(j["result"].get("TTL", 0))

    def test_follower_reports_the_leaders_ttl_of_a_lease_kept_alive(self):
        ttl = 2
        lease = self.grant(ttl)
        granted = time.monotonic()
        # Keep it alive through the leader past two of its TTLs.
        while time.monotonic() - granted < 2.5 * ttl:
            self.assertGreater(self.keepalive(self.lead, lease), 0)
            for f in self.followers:
                self.assertGreater(self.ttl_on(f, lease), 0,
                                   "%s says the lease expired %.1fs after the grant, while the "
                                   "leader keeps it alive" % (f.name, time.monotonic() - granted))
            time.sleep(0.3)

    def test_follower_reports_a_lease_kept_alive_through_it(self):
        ttl = 2
        lease = self.grant(ttl)
        granted = time.monotonic()
        f = self.followers[0]
        while time.monotonic() - granted < 2.5 * ttl:
            self.assertGreater(self.keepalive(f, lease), 0)
            self.assertGreater(self.ttl_on(self.followers[1], lease), 0)
            self.assertGreater(self.ttl_on(self.lead, lease), 0)
            time.sleep(0.3)

    def test_revoked_lease_is_gone_on_every_member(self):
        lease = self.grant(30)
        st, j = self.followers[0].call("/v3/lease/revoke", {"ID": lease})
        self.assertEqual(st, 200, j)
        for m in self.c.members:
            wait_for(lambda: self.ttl_on(m, lease) == -1, 10, "%s to forget the lease" % m.name)


if __name__ == "__main__":
    unittest.main()
