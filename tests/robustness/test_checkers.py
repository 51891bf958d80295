"""The checkers on hand-made histories: each guarantee has a history that
keeps it (no violation) and one that breaks it (caught)."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import checkers  # noqa: E402
import linearizability  # noqa: E402
import relay  # noqa: E402
from workload import Recorder  # noqa: E402


def op(i, type_, key, call, ret, status="ok", **kw):
    d = {"id": i, "type": type_, "key": key, "call": call, "ret": ret, "status": status,
         "client": kw.pop("client", 0), "member": "m1"}
    d.update(kw)
    return d


class LinearizabilityTest(unittest.TestCase):
    def test_sequential_history_is_linearizable(self):
        h = [op(1, "put", "k", 0, 1, value="a", out={"revision": 2}),
             op(2, "get", "k", 2, 3, out={"value": "a"}),
             op(3, "cas", "k", 4, 5, value="b", expect="a", out={"succeeded": True}),
             op(4, "cas", "k", 6, 7, value="c", expect="a", out={"succeeded": False}),
             op(5, "del", "k", 8, 9, out={"deleted": 1}),
             op(6, "get", "k", 10, 11, out={"value": None})]
        v, stats = linearizability.check(h)
        self.assertEqual(v, [])
        self.assertEqual(stats["operations"], 6)

    def test_stale_read_after_a_write_returned_is_caught(self):
        h = [op(1, "put", "k", 0, 1, value="a"),
             op(2, "put", "k", 2, 3, value="b"),
             op(3, "get", "k", 4, 5, out={"value": "a"})]
        v, _ = linearizability.check(h)
        self.assertEqual(len(v), 1)
        self.assertIn("not linearizable", v[0])

    def test_concurrent_write_may_be_seen_either_way(self):
        h = [op(1, "put", "k", 0, 1, value="a"),
             op(2, "put", "k", 2, 6, value="b"),
             op(3, "get", "k", 3, 4, out={"value": "a"}),
             op(4, "get", "k", 4.5, 5, out={"value": "b"})]
        self.assertEqual(linearizability.check(h)[0], [])
        # ... but not back again once seen.
        h.append(op(5, "get", "k", 5.5, 5.8, out={"value": "a"}))
        self.assertEqual(len(linearizability.check(h)[0]), 1)

    def test_unknown_write_may_or_may_not_happen(self):
        h = [op(1, "put", "k", 0, 1, value="a"),
             op(2, "put", "k", 2, None, status="unknown", value="b"),
             op(3, "get", "k", 3, 4, out={"value": "a"}),
             op(4, "get", "k", 10, 11, out={"value": "b"})]
        self.assertEqual(linearizability.check(h)[0], [])
        h2 = [op(1, "put", "k", 0, 1, value="a"),
              op(2, "put", "k", 2, None, status="unknown", value="b"),
              op(3, "get", "k", 10, 11, out={"value": "a"})]
        self.assertEqual(linearizability.check(h2)[0], [])

    def test_lost_acknowledged_write_is_caught(self):
        h = [op(1, "put", "k", 0, 1, value="a"),
             op(2, "put", "k", 2, 3, value="b"),
             op(3, "get", "k", 10, 11, out={"value": "a"})]
        self.assertEqual(len(linearizability.check(h)[0]), 1)

    def test_cas_outcome_must_match_the_state(self):
        h = [op(1, "put", "k", 0, 1, value="a"),
             op(2, "cas", "k", 2, 3, value="b", expect="x", out={"succeeded": True})]
        self.assertEqual(len(linearizability.check(h)[0]), 1)
        h = [op(1, "cas", "k", 0, 1, value="b", expect=None, out={"succeeded": True}),
             op(2, "cas", "k", 2, 3, value="c", expect=None, out={"succeeded": True})]
        self.assertEqual(len(linearizability.check(h)[0]), 1, "created twice")

    def test_delete_count_must_match(self):
        h = [op(1, "del", "k", 0, 1, out={"deleted": 1})]
        self.assertEqual(len(linearizability.check(h)[0]), 1)

    def test_revocation_without_output_must_happen_before_its_return(self):
        h = [op(1, "put", "k", 0, 1, value="a"),
             op(2, "del", "k", 1.001, 5, out=None),
             op(3, "get", "k", 6, 7, out={"value": "a"})]
        self.assertEqual(len(linearizability.check(h)[0]), 1)
        h[2]["out"] = {"value": None}
        self.assertEqual(linearizability.check(h)[0], [])

    def test_keys_are_checked_apart(self):
        h = [op(1, "put", "a", 0, 1, value="x"), op(2, "get", "b", 2, 3, out={"value": None})]
        v, stats = linearizability.check(h)
        self.assertEqual(v, [])
        self.assertEqual(stats["keys"], 2)

    def test_many_concurrent_unknowns_stay_tractable(self):
        h = [op(i, "put", "k", i * 0.01, None, status="unknown", value="v%d" % i)
             for i in range(40)]
        h.append(op(100, "get", "k", 5, 6, out={"value": "v17"}))
        v, stats = linearizability.check(h)
        self.assertEqual(v, [])
        self.assertEqual(stats["inconclusive"], 0)


def recorder(ops=(), watch=(), monitor=(), leases=(), nemesis=()):
    r = Recorder()
    r.ops = list(ops)
    r.watch = list(watch)
    r.monitor = list(monitor)
    r.leases = list(leases)
    r.nemesis = list(nemesis)
    return r


def kv(key, value, rev, version=1, create=None):
    return {"key": key, "value": value, "mod_revision": rev, "version": version,
            "create_revision": create or rev, "lease": 0}


def ev(type_, key, value, rev, prev=None, version=1, create=None):
    return {"type": type_, "kv": kv(key, value if type_ == "PUT" else "", rev,
                                    version if type_ == "PUT" else 0, create), "prev_kv": prev}


def events(watcher, t, evs, member="m1"):
    return {"watcher": watcher, "t": t, "kind": "events", "member": member, "header_rev":
            evs[-1]["kv"]["mod_revision"], "events": evs}


class RevisionsTest(unittest.TestCase):
    def good(self):
        ops = [op(1, "put", "k", 0, 1, value="a", out={"revision": 2}),
               op(2, "put", "k", 2, 3, value="b", out={"revision": 3}),
               op(3, "get", "k", 4, 5, out={"revision": 3, "value": "b", "mod_revision": 3})]
        e1 = ev("PUT", "k", "a", 2)
        e2 = ev("PUT", "k", "b", 3, prev=kv("k", "a", 2), version=2, create=2)
        watch = [{"watcher": 0, "t": 0, "kind": "open", "start_rev": 1, "member": "m1"},
                 events(0, 1, [e1]), events(0, 3, [e2])]
        return ops, watch

    def test_consistent_history_passes(self):
        ops, watch = self.good()
        self.assertEqual(checkers.check_revisions(recorder(ops, watch)), [])
        v, stats = checkers.check_watch(recorder(ops, watch), 3)
        self.assertEqual(v, [])
        self.assertEqual(stats["events"], 2)

    def test_duplicate_write_revision_is_caught(self):
        ops, watch = self.good()
        ops[1]["out"]["revision"] = 2
        v = checkers.check_revisions(recorder(ops, watch))
        self.assertTrue(any("two writes" in x for x in v), v)

    def test_read_behind_a_returned_write_is_caught(self):
        ops, watch = self.good()
        ops[2]["out"] = {"revision": 2, "value": "a", "mod_revision": 2}
        v = checkers.check_revisions(recorder(ops, watch))
        self.assertTrue(any("had already returned" in x for x in v), v)

    def test_read_value_must_match_the_history_at_its_revision(self):
        ops, watch = self.good()
        ops[2]["out"] = {"revision": 3, "value": "a", "mod_revision": 2}
        v = checkers.check_revisions(recorder(ops, watch))
        self.assertTrue(any("watch history has" in x for x in v), v)

    def test_acknowledged_write_missing_from_history_is_caught(self):
        ops, watch = self.good()
        ops.append(op(4, "put", "j", 6, 7, value="z", out={"revision": 3}))
        v = checkers.check_revisions(recorder(ops, watch))
        self.assertTrue(any("not in the watch history" in x for x in v), v)

    def test_txn_event_missing_from_its_revision_is_caught(self):
        ops, watch = self.good()
        ops.append(op(4, "pair", "/m/a", 6, 7, value="z", out={"revision": 4}))
        e1 = ev("PUT", "/m/a", "z", 4)
        e2 = ev("PUT", "/m/b", "z", 4)
        self.assertEqual(checkers.check_revisions(recorder(ops, watch + [events(0, 7, [e1, e2])])),
                         [])
        v = checkers.check_revisions(recorder(ops, watch + [events(0, 7, [e1])]))
        self.assertTrue(any("/m/b" in x for x in v), v)

    def test_member_revision_going_back_is_caught(self):
        mon = [{"t": 1, "member": "m1", "incarnation": 1, "revision": 10, "leader": 1,
                "term": 2, "member_id": 1},
               {"t": 2, "member": "m1", "incarnation": 2, "revision": 8, "leader": 1,
                "term": 2, "member_id": 1}]
        v = checkers.check_revisions(recorder(monitor=mon))
        self.assertEqual(len(v), 1)


class WatchTest(unittest.TestCase):
    def base(self):
        return [{"watcher": 0, "t": 0, "kind": "open", "start_rev": 1, "member": "m1"}]

    def test_gap_is_caught(self):
        w = self.base() + [events(0, 1, [ev("PUT", "a", "1", 2)]),
                           events(0, 2, [ev("PUT", "b", "1", 4)])]
        v, _ = checkers.check_watch(recorder(watch=w), 4)
        self.assertTrue(any("missing" in x for x in v), v)

    def test_gap_after_a_reported_compaction_is_allowed(self):
        w = self.base() + [events(0, 1, [ev("PUT", "a", "1", 2)]),
                           {"watcher": 0, "t": 2, "kind": "canceled", "member": "m1",
                            "compact_revision": 4, "header_rev": 0},
                           {"watcher": 0, "t": 2, "kind": "open", "start_rev": 4, "member": "m2"},
                           events(0, 3, [ev("PUT", "b", "1", 4)])]
        v, _ = checkers.check_watch(recorder(watch=w), 4)
        self.assertEqual(v, [])

    def test_duplicate_and_reorder_are_caught(self):
        w = self.base() + [events(0, 1, [ev("PUT", "a", "1", 2)]),
                           events(0, 2, [ev("PUT", "a", "1", 2)])]
        v, _ = checkers.check_watch(recorder(watch=w), 2)
        self.assertTrue(v)

    def test_split_revision_is_caught(self):
        w = self.base() + [events(0, 1, [ev("PUT", "a", "1", 2)]),
                           events(0, 2, [ev("PUT", "b", "1", 2)])]
        v, _ = checkers.check_watch(recorder(watch=w), 2)
        self.assertTrue(any("split" in x for x in v), v)

    def test_wrong_prev_kv_is_caught(self):
        w = self.base() + [events(0, 1, [ev("PUT", "a", "1", 2)]),
                           events(0, 2, [ev("PUT", "a", "2", 3, prev=kv("a", "0", 2), version=2)])]
        v, _ = checkers.check_watch(recorder(watch=w), 3)
        self.assertTrue(any("prev_kv" in x for x in v), v)

    def test_watcher_that_never_caught_up_is_caught(self):
        w = self.base() + [events(0, 1, [ev("PUT", "a", "1", 2)])]
        v, _ = checkers.check_watch(recorder(watch=w), 5)
        self.assertTrue(any("did not catch up" in x for x in v), v)

    def test_watchers_disagreeing_on_a_revision_is_caught(self):
        w = self.base() + [events(0, 1, [ev("PUT", "a", "1", 2)]),
                           {"watcher": 1, "t": 0, "kind": "open", "start_rev": 1, "member": "m2"},
                           events(1, 1, [ev("PUT", "a", "X", 2)], member="m2")]
        self.assertTrue(any("different events" in x
                            for x in checkers.check_revisions(recorder(watch=w))))

    def test_resume_at_the_wrong_revision_is_caught(self):
        w = self.base() + [events(0, 1, [ev("PUT", "a", "1", 2)]),
                           {"watcher": 0, "t": 2, "kind": "open", "start_rev": 7, "member": "m2"}]
        v, _ = checkers.check_watch(recorder(watch=w), 2)
        self.assertTrue(any("reopened" in x for x in v), v)


class LeaseTest(unittest.TestCase):
    def lease(self, **kw):
        d = {"id": 5, "ttl": 3, "grant_call": 0.0, "grant_ack": 0.1, "key": "/l/5",
             "keepalive_calls": [1.0], "keepalive_acks": [[1.0, 1.1]],
             "expired_call": 4.5, "expired_ret": 4.6}
        d.update(kw)
        # The poll before the one that found it gone saw it alive.
        d.setdefault("alive_call", d["expired_call"] - 0.1)
        return d

    def test_timely_expiry_passes(self):
        v, t, stats = checkers.check_leases(recorder(leases=[self.lease()]), 1.0, 0.1)
        self.assertEqual(v + t, [])
        self.assertEqual(stats["expired_observed"], 1)

    def test_early_expiry_is_caught(self):
        v, t, _ = checkers.check_leases(recorder(leases=[self.lease(expired_call=3.0,
                                                                 expired_ret=3.1)]), 1.0, 0.1)
        self.assertTrue(any("refreshed" in x for x in v), v)

    def steady_writes(self, until=10.0):
        """The cluster committing all along (a write every 0.1 s)."""
        return [op(100 + i, "put", "k", i * 0.1, i * 0.1 + 0.01, value="w%d" % i)
                for i in range(int(until * 10))]

    def test_lease_that_does_not_expire_is_caught(self):
        v, t, _ = checkers.check_leases(recorder(ops=self.steady_writes(),
                                              leases=[self.lease(expired_call=9.0,
                                                                 expired_ret=9.1)]), 1.0, 0.1)
        self.assertEqual(v, [])
        self.assertTrue(any("still alive" in x for x in t), t)

    def test_polls_that_all_failed_do_not_make_a_lease_late(self):
        # Seed 32036: every poll went to a member that was down until one
        # reached a live member, which said the lease was gone.  Nothing saw
        # it alive after its grant, so it was not late.
        le = self.lease(keepalive_acks=[], expired_call=9.0, expired_ret=9.1,
                        polls=[[4.0 + i, "m3", "timeout", None] for i in range(5)] +
                        [[9.0, "m2", "ok", -1]])
        del le["alive_call"]
        v, t, stats = checkers.check_leases(recorder(ops=self.steady_writes(), leases=[le]),
                                            1.0, 0.1)
        self.assertEqual(v + t, [])
        self.assertLessEqual(stats["max_late_s"], 0.0)

    def test_an_unanswered_keepalive_may_refresh_until_the_request_timeout(self):
        # Seeds 34065, 35109, 35153: the client's second keepalive got no
        # answer; the member holding it forwarded it to the leader seconds
        # later, which refreshed the lease then.  With a 1 s election
        # timeout a member keeps trying for 7 s: until 2.0 + 7.0 the lease
        # may have been refreshed, so alive at 11.5 is not late ...
        le = self.lease(keepalive_calls=[1.0, 2.0], expired_call=11.6, expired_ret=11.7)
        le["alive_call"] = 11.5
        v, t, _ = checkers.check_leases(recorder(ops=self.steady_writes(13.0), leases=[le]),
                                        1.0, 0.1)
        self.assertEqual(v + t, [])
        # ... but alive a whole TTL past that window is.
        le = self.lease(keepalive_calls=[1.0, 2.0], expired_call=15.5, expired_ret=15.6)
        le["alive_call"] = 15.4
        v, t, _ = checkers.check_leases(recorder(ops=self.steady_writes(16.0), leases=[le]),
                                        1.0, 0.1)
        self.assertEqual(v, [])
        self.assertTrue(any("still alive" in x for x in t), t)
        # An answered keepalive is not indeterminate: the old bound holds.
        le = self.lease(keepalive_calls=[1.0], expired_call=9.0, expired_ret=9.1)
        v, t, _ = checkers.check_leases(recorder(ops=self.steady_writes(), leases=[le]), 1.0, 0.1)
        self.assertTrue(any("still alive" in x for x in t), t)

    def leader_change_at(self, t):
        return [{"t": 0.5, "member": "m1", "incarnation": 1, "revision": 2, "leader": 1,
                 "term": 2, "member_id": 1},
                {"t": t, "member": "m2", "incarnation": 1, "revision": 2, "leader": 2,
                 "term": 3, "member_id": 2},
                {"t": t + 0.1, "member": "m1", "incarnation": 1, "revision": 2, "leader": 1,
                 "term": 2, "member_id": 1}]  # a lagging member's stale view

    def test_leader_change_restarts_the_clock(self):
        le = self.lease(expired_call=7.0, expired_ret=7.1)
        v, t, stats = checkers.check_leases(
            recorder(leases=[le], monitor=self.leader_change_at(3.0)), 1.0, 0.1)
        self.assertEqual(v + t, [])
        self.assertEqual(stats["across_leader_change"], 1)

    def test_late_expiry_after_a_leader_change_is_caught(self):
        le = self.lease(expired_call=8.5, expired_ret=8.6)
        v, t, _ = checkers.check_leases(recorder(ops=self.steady_writes(), leases=[le],
                                              monitor=self.leader_change_at(3.0)), 1.0, 0.1)
        self.assertEqual(v, [])
        self.assertTrue(any("leader change" in x for x in t), t)

    def test_time_without_a_quorum_does_not_count(self):
        le = self.lease(expired_call=8.5, expired_ret=8.6)
        mon = self.leader_change_at(3.0)
        writes = [op(i, "put", "k", t - 0.01, t, value="v%d" % i)
                  for i, t in enumerate([6.0, 6.1, 6.2, 8.3, 8.4])]  # nothing from 6.2 to 8.3
        v, t, _ = checkers.check_leases(recorder(ops=writes, leases=[le], monitor=mon), 1.0, 0.1)
        self.assertEqual(v + t, [])

    def test_key_readable_after_observed_expiry_is_caught(self):
        rec = recorder(ops=[op(1, "put", "/l/5", 0.2, 0.3, value="lease-5", client="lease"),
                            op(2, "get", "/l/5", 5.0, 5.1, out={"value": "lease-5"})],
                       leases=[self.lease()])
        v, _ = linearizability.check(rec.ops + checkers.lease_expiry_ops(rec))
        self.assertEqual(len(v), 1)



class RelayTest(unittest.TestCase):
    """The relay the faults go through: a block holds bytes until healed; a
    snapshot-stream hold lets the handshake through and nothing after it."""

    def test_blocked_bytes_are_held_until_heal(self):
        relay.self_test()

    def test_snapshot_streams_are_held_after_their_handshake(self):
        relay.self_test_hold_snapshots()

    def test_closing_with_connections_being_accepted_logs_nothing(self):
        # A run's end closes the relay while members still dial it; a
        # connection whose handler had not started yet used to leave an
        # asyncio traceback in the run's output (Python 3.11.7 here asks
        # such a task for its exception; Debian's 3.11.2 does not).
        import socket
        errors = []
        for _ in range(60):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                front = s.getsockname()[1]
            r = relay.Relay()
            r._loop.set_exception_handler(lambda loop, ctx: errors.append(ctx["message"]))
            r.add_front("m1", front, 9)
            clients = []
            for _ in range(20):
                try:
                    clients.append(socket.create_connection(("127.0.0.1", front)))
                except OSError:
                    pass
            r.close()
            for c in clients:
                c.close()
        self.assertEqual(errors, [])


if __name__ == "__main__":
    unittest.main()
