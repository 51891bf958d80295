#!/usr/bin/env python3
"""A leader stuck on its disk must not answer for leases.

The lease clock runs on the leader alone.  A leader whose fsync hangs keeps
believing it leads (its Raft loop is blocked, so it never hears of the new
term) while the other two elect a new leader and go on granting and
refreshing leases.  Soak seed 33153 caught the stale one answering: asked
about a lease granted after the stall, it said "not found" (TTL -1) while
the lease and its key were alive on the new leader; and a keepalive it
acknowledged would have refreshed only its own stale copy.  A member must
confirm it still leads (a ReadIndex round) before it refreshes or reports a
lease, as etcd 3.5 does before LeaseRenew.

Checked, while the old leader's disk is stalled:
  - TimeToLive of a lease granted after the stall, asked of the old leader,
    never answers "not found" / -1;
  - a keepalive of a lease granted before the stall, asked of the old
    leader, is never acknowledged;
then, after the disk recovers, both are answered correctly through it.

    stale_lessor.py              (exit status 0 when all holds)
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from harness import ProcessGroup, wait_for  # noqa: E402

import client as v3  # noqa: E402
from cluster import Cluster, FAULTFS  # noqa: E402
from relay import Relay  # noqa: E402


def lease_grant(m, ttl):
    st, doc = m.call("/v3/lease/grant", {"TTL": str(ttl)}, timeout=3.0)
    assert st == "ok" and "ID" in doc, (st, doc)
    return doc["ID"]


def main():
    if not FAULTFS or not os.path.exists(FAULTFS):
        print("stale_lessor: the fsync shim (libmuster_faultfs.so) is missing", file=sys.stderr)
        return 2
    group = ProcessGroup(prefix="muster-stale-lessor-")
    relay = Relay(0)
    c = Cluster(group, relay, "muster")
    try:
        c.start()
        old = c.wait_leader(30)
        c.wait_writable(30)
        before = lease_grant(old, 30)
        _, _, term, old_id = old.status()

        old.set_disk("stall")
        # Something to write, so the old leader's loop blocks on its fsync.
        old.call("/v3/kv/put", {"key": v3.b64("/stall"), "value": v3.b64("x")}, timeout=0.5)
        others = [m for m in c.members if m is not old]

        def new_leader():
            for m in others:
                s = m.status()
                if s and s[1] not in (0, old_id) and s[2] > term:
                    return m
            return None
        leader = wait_for(new_leader, 20, "a new leader among the other two", interval=0.1)
        s = old.status()
        assert s is not None and s[1] == old_id, "the stalled leader should still think it leads"

        after = lease_grant(leader, 30)
        st, doc = leader.call("/v3/kv/put", {"key": v3.b64("/leased"), "value": v3.b64("v"),
                                             "lease": after}, timeout=3.0)
        assert st == "ok", (st, doc)

        # Asked of the stalled member, for as long as it stays stalled.
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            st, doc = old.call("/v3/lease/timetolive", {"ID": after}, timeout=1.0)
            if st == "ok" and int(doc.get("TTL", 0) or 0) == -1:
                raise AssertionError("the stalled old leader said lease %s is gone: %r"
                                     % (after, doc))
            if st == "error" and "not found" in str(doc):
                raise AssertionError("the stalled old leader said lease %s is gone: %r"
                                     % (after, doc))
            st, doc = old.call("/v3/lease/keepalive", {"ID": before}, timeout=1.0)
            ttl = int((doc or {}).get("result", doc or {}).get("TTL", 0) or 0) \
                if st == "ok" else 0
            if ttl > 0:
                raise AssertionError("the stalled old leader acknowledged a keepalive of "
                                     "lease %s: %r" % (before, doc))

        old.set_disk("ok")
        # Once it hears of the new term it forwards to the new leader.
        def answered():
            st, doc = old.call("/v3/lease/timetolive", {"ID": after}, timeout=2.0)
            return st == "ok" and int(doc.get("TTL", 0) or 0) > 0
        wait_for(answered, 20, "the recovered member to report lease %s alive" % after,
                 interval=0.2)

        def refreshed():
            st, doc = old.call("/v3/lease/keepalive", {"ID": before}, timeout=2.0)
            return st == "ok" and int(doc.get("result", doc).get("TTL", 0) or 0) > 0
        wait_for(refreshed, 20, "a keepalive through the recovered member", interval=0.2)
        print("stale_lessor: ok")
        return 0
    finally:
        for m in c.members:
            m.set_disk("ok")
        relay.close()
        group.close()


if __name__ == "__main__":
    sys.exit(main())
