"""Checkers run over a recorded robustness run (workload.Recorder).

linearizability.py checks each key's operations; the checkers here check
what ties keys together -- the global revision -- and the watch and lease
guarantees etcd documents:

revisions
  - every write that changed the store got a revision no other write got;
  - real time: an operation that returned before another was called saw a
    revision no higher (strictly lower, when both wrote);
  - a read's value is exactly the store's at the read's revision, replayed
    from the watch history; acknowledged writes are in that history with
    the revision they were acknowledged with (nothing acknowledged is lost);
  - no member ever reports a lower revision than it reported before, across
    its restarts.
watch (per watcher, across its reconnections)
  - ordered and unique: event revisions only go up, no (revision, key) twice;
  - atomic: the events of one revision arrive in one response;
  - reliable: revisions are contiguous (every revision is a write in the
    watched key space) except across a compaction the member reported;
  - resumable: a stream reopened at last+1 continues exactly there;
  - every watcher saw the same events for a revision, and prev_kv is the
    key's previous version in that history;
  - it caught up to the final revision after the faults were healed.
leases
  - once a lease's expiry was observed, its key is not readable (done by
    linearizability.py: the lease's revocation is a delete that happens at
    an unknown time before the observation);
  - no lease expired before TTL after its last keepalive was sent;
  - no lease outlived its TTL by more than the election timeout plus one
    heartbeat, counted from its last keepalive or the last leader change,
    whichever is later (plus the checker's polling interval).  A keepalive
    the client got no answer to is indeterminate, like a timed-out write:
    the member it reached may still forward it to the leader until its
    request timeout (etcd's 5 s + 2 election timeouts), so it may have
    refreshed the lease at any moment up to then.
"""

import bisect

from workload import PAIR as PAIR_KEYS


def _writes_changed(op):
    """Whether a recorded ok write changed the store (and so took a revision)."""
    t = op["type"]
    out = op.get("out") or {}
    if t in ("put", "pair"):
        return True
    if t == "del":
        return out.get("deleted", 0) > 0
    if t == "cas":
        return bool(out.get("succeeded"))
    return False


def watch_history(rec):
    """The events by revision from every watcher: {rev: [event, ...]} and the
    conflicts between watchers (a revision reported differently)."""
    by_rev = {}
    conflicts = []
    for w in rec.watch:
        if w["kind"] != "events":
            continue
        for e in w["events"]:
            rev = e["kv"]["mod_revision"]
            by_rev.setdefault(rev, {}).setdefault(w["watcher"], []).append(e)
    history = {}
    for rev, per in sorted(by_rev.items()):
        views = list(per.values())
        first = sorted(views[0], key=lambda e: e["kv"]["key"])
        for other in views[1:]:
            if sorted(other, key=lambda e: e["kv"]["key"]) != first:
                conflicts.append("revision %d: watchers saw different events: %r vs %r"
                                 % (rev, first, other))
        history[rev] = first
    return history, conflicts


def check_revisions(rec):
    violations = []
    ops = [o for o in rec.ops if o.get("status") == "ok" and "out" in o]
    # Unique revisions of writes that changed something.
    seen = {}
    for o in ops:
        if o["type"] in ("put", "del", "cas", "pair") and _writes_changed(o):
            r = o["out"]["revision"]
            if r in seen and seen[r]["id"] != o["id"]:
                violations.append("revision %d acknowledged for two writes: #%d and #%d"
                                  % (r, seen[r]["id"], o["id"]))
            seen[r] = o
    # Real-time order.
    by_ret = sorted(ops, key=lambda o: o["ret"])
    rets = [o["ret"] for o in by_ret]
    prefix_max = []
    prefix_max_write = []
    m = mw = (0, None)
    for o in by_ret:
        r = o["out"]["revision"]
        if r > m[0]:
            m = (r, o)
        if _writes_changed(o) and r > mw[0]:
            mw = (r, o)
        prefix_max.append(m)
        prefix_max_write.append(mw)
    for o in ops:
        i = bisect.bisect_left(rets, o["call"]) - 1
        if i < 0:
            continue
        r = o["out"]["revision"]
        best, who = prefix_max[i]
        if best > r:
            violations.append(
                "#%d %s %s on %s (called %.3f) saw revision %d, but #%d had already returned "
                "revision %d at %.3f" % (o["id"], o["type"], o["key"], o.get("member"), o["call"],
                                         r, who["id"], best, who["ret"]))
        bw, whow = prefix_max_write[i]
        if _writes_changed(o) and bw >= r:
            violations.append(
                "write #%d got revision %d, not above write #%d's revision %d acknowledged "
                "before it was called" % (o["id"], r, whow["id"], bw))
    # Reads against the watch history; acknowledged writes in it.
    history, conflicts = watch_history(rec)
    violations += conflicts
    complete = not any(w["kind"] == "canceled" and w.get("compact_revision") for w in rec.watch)
    if history and complete:
        top = max(history)
        state = {}
        states = {}
        for rev in range(1, top + 1):
            for e in history.get(rev, []):
                k = e["kv"]["key"]
                state[k] = e["kv"]["value"] if e["type"] == "PUT" else None
            states[rev] = dict(state)
        for o in ops:
            r = o["out"]["revision"]
            if o["type"] == "get" and r in states:
                want = states[r].get(o["key"])
                if o["out"].get("value") != want:
                    violations.append(
                        "#%d get %s on %s at revision %d returned %r; the watch history has "
                        "%r there" % (o["id"], o["key"], o.get("member"), r, o["out"].get("value"),
                                      want))
            if _writes_changed(o) and o["type"] in ("put", "cas", "pair") and r <= top:
                evs = history.get(r, [])
                # A two-key txn is two events at one revision: both must be there.
                keys = PAIR_KEYS if o["type"] == "pair" else (o["key"],)
                for k in keys:
                    if not any(e["type"] == "PUT" and e["kv"]["key"] == k and
                               e["kv"]["value"] == o["value"] for e in evs):
                        violations.append(
                            "acknowledged write #%d (%s %s=%s, revision %d) is not in the watch "
                            "history at that revision: %r" % (o["id"], o["type"], k, o["value"],
                                                              r, evs))
            if _writes_changed(o) and o["type"] == "del" and r <= top:
                evs = history.get(r, [])
                if not any(e["type"] == "DELETE" and e["kv"]["key"] == o["key"] for e in evs):
                    violations.append(
                        "acknowledged delete #%d of %s (revision %d) is not in the watch history "
                        "at that revision: %r" % (o["id"], o["key"], r, evs))
    # Per-member revisions never go back, across restarts.
    last = {}
    for s in sorted(rec.monitor, key=lambda s: s["t"]):
        prev = last.get(s["member"])
        if prev and s["revision"] < prev["revision"]:
            violations.append(
                "%s reported revision %d at %.3f (incarnation %d) after %d at %.3f "
                "(incarnation %d)" % (s["member"], s["revision"], s["t"], s["incarnation"],
                                      prev["revision"], prev["t"], prev["incarnation"]))
        last[s["member"]] = s
    return violations


def check_watch(rec, final_revision):
    violations = []
    compactions = {}
    by_watcher = {}
    for w in rec.watch:
        by_watcher.setdefault(w["watcher"], []).append(w)
    history, _ = watch_history(rec)
    stats = {"watchers": len(by_watcher), "events": 0, "reconnects": 0}
    for wid, log in sorted(by_watcher.items()):
        last_rev = 0
        last_key = None
        allowed_gap_to = 0
        expected_start = 1
        for w in log:
            kind = w["kind"]
            if kind == "open":
                stats["reconnects"] += 1
                if w["start_rev"] != expected_start and w["start_rev"] != last_rev + 1:
                    violations.append("watcher %d reopened at %d, not at %d"
                                      % (wid, w["start_rev"], last_rev + 1))
            elif kind == "canceled" and w.get("compact_revision"):
                allowed_gap_to = max(allowed_gap_to, w["compact_revision"])
                compactions[wid] = w["compact_revision"]
                expected_start = w["compact_revision"]
            elif kind == "events":
                revs = [e["kv"]["mod_revision"] for e in w["events"]]
                stats["events"] += len(revs)
                # Atomic: a revision never continues in a later response.
                if revs and revs[0] == last_rev:
                    violations.append("watcher %d: revision %d split across responses"
                                      % (wid, last_rev))
                for e in w["events"]:
                    rev = e["kv"]["mod_revision"]
                    key = e["kv"]["key"]
                    if rev < last_rev or (rev == last_rev and last_key is not None
                                          and key <= last_key):
                        violations.append(
                            "watcher %d on %s: event (%d, %r) after (%d, %r): out of order or "
                            "repeated" % (wid, w["member"], rev, key, last_rev, last_key))
                    elif rev > last_rev + 1 and last_rev > 0 and rev > allowed_gap_to:
                        violations.append(
                            "watcher %d on %s: revisions %d..%d missing (no compaction "
                            "reported)" % (wid, w["member"], last_rev + 1, rev - 1))
                    if e["type"] == "PUT" and e["kv"]["mod_revision"] != rev:
                        violations.append("watcher %d: PUT event with mod_revision %d at %d"
                                          % (wid, e["kv"]["mod_revision"], rev))
                    last_rev, last_key = rev, key
                    expected_start = rev + 1
        if final_revision and last_rev < final_revision:
            violations.append("watcher %d ended at revision %d, the cluster at %d: it did not "
                              "catch up after the faults healed" % (wid, last_rev, final_revision))
    # prev_kv against the history (from revision 1; skipped past compactions).
    if history and not compactions:
        latest = {}
        for rev in sorted(history):
            for e in history[rev]:
                k = e["kv"]["key"]
                prev = latest.get(k)
                got = e.get("prev_kv")
                if prev is None:
                    if got is not None:
                        violations.append("revision %d %s %s: prev_kv %r, but the key did not "
                                          "exist" % (rev, e["type"], k, got))
                elif got is None or got["value"] != prev["value"] or \
                        got["mod_revision"] != prev["mod_revision"]:
                    violations.append("revision %d %s %s: prev_kv %r, expected %r"
                                      % (rev, e["type"], k, got, prev))
                if e["type"] == "PUT":
                    want_version = (prev["version"] + 1) if prev else 1
                    if e["kv"]["version"] != want_version:
                        violations.append("revision %d PUT %s: version %d, expected %d"
                                          % (rev, k, e["kv"]["version"], want_version))
                    latest[k] = e["kv"]
                else:
                    latest.pop(k, None)
    return violations, stats


def leader_changes(rec):
    """Times at which the monitor first saw a leader in a higher term than
    any seen before (members that lag still report older terms)."""
    out = []
    top = None
    for s in sorted(rec.monitor, key=lambda s: s["t"]):
        if not s["leader"]:
            continue
        if top is None:
            top = s["term"]
        elif s["term"] > top:
            top = s["term"]
            out.append(s["t"])
    return out


def commit_times(rec):
    """When the cluster was seen committing: acknowledged writes' returns
    and the monitor's revision increases, sorted."""
    times = [o["ret"] for o in rec.ops if o.get("status") == "ok" and o.get("ret") is not None
             and o["type"] in ("put", "del", "cas", "pair")]
    last = {}
    for s in sorted(rec.monitor, key=lambda s: s["t"]):
        if s["revision"] > last.get(s["member"], 1 << 62):
            times.append(s["t"])
        last[s["member"]] = s["revision"]
    return sorted(times)


def stalled(times, start, end, gap=0.3):
    """Seconds of [start, end] in which the cluster committed nothing for
    longer than `gap` (it could not have committed a revocation either)."""
    if end <= start:
        return 0.0
    i = bisect.bisect_left(times, start)
    prev = start
    total = 0.0
    for t in times[i:]:
        if t >= end:
            break
        if t - prev > gap:
            total += t - prev - gap
        prev = t
    if end - prev > gap:
        total += end - prev - gap
    return total


def server_request_timeout(election_s):
    """How long a member keeps trying a request it accepted (etcd's
    ReqTimeout, which muster's members use too)."""
    return 5.0 + 2 * election_s


def check_leases(rec, election_s, heartbeat_s, poll_s=0.1, slack_s=0.5):
    """(safety violations, timing violations, stats).  Safety: a lease gone
    before its time.  Timing: a lease that outlived the bounds (a liveness
    promise of muster's; etcd 3.4 does not make it: its lessor retries a
    revocation that did not commit only after 3 s)."""
    violations = []
    timing = []
    changes = leader_changes(rec)
    commits = commit_times(rec)
    stats = {"leases": 0, "expired_observed": 0, "max_late_s": 0.0,
             "across_leader_change": 0, "max_late_after_leader_change_s": 0.0}
    for le in rec.leases:
        if "id" not in le:
            continue
        stats["leases"] += 1
        if "expired_ret" not in le:
            continue
        stats["expired_observed"] += 1
        ttl = le["ttl"]
        # Early: a lease lives at least TTL after a refresh that succeeded
        # (the refresh happened after the keepalive was sent).
        acks = le["keepalive_acks"]
        start = acks[-1][0] if acks else le["grant_call"]
        if le["expired_ret"] < start + ttl:
            violations.append(
                "lease %x: expired by %.3f, but it was refreshed (TTL %ds) at or after %.3f"
                % (le["id"], le["expired_ret"], ttl, start))
        # Late: measured from the last poll that saw it alive (a poll that
        # failed, say through a cut-off member, saw nothing).  A lease no
        # poll ever saw alive gives no evidence that it lived past its last
        # refresh.
        anchor = acks[-1][1] if acks else le["grant_ack"]
        last_alive = min(le.get("alive_call", anchor), le["expired_call"])
        # A keepalive without an answer may have refreshed the lease as late
        # as its member's request timeout after it was sent (seven runs of
        # session 8's soak, e.g. seed 34065: the keepalive waited in a member
        # cut off from the leader, stopped or stuck on its disk, and was
        # forwarded when it came back).
        acked = {a[0] for a in acks}
        unanswered = [c for c in le.get("keepalive_calls", []) if c not in acked]
        if unanswered:
            pending_until = max(unanswered) + server_request_timeout(election_s)
            anchor = max(anchor, min(pending_until, last_alive))
        changed = [t for t in changes if anchor < t < last_alive]
        late = last_alive - (anchor + ttl)
        stats["max_late_s"] = max(stats["max_late_s"], late)
        if changed:
            # A new leader restarts every lease's clock: TTL from the change,
            # plus an election timeout and a tick (the bound; etcd's
            # lessor extends by the election timeout on promotion).
            stats["across_leader_change"] += 1
            due = changed[-1] + ttl
            # Time the cluster could not commit anything does not count: the
            # revocation is a Raft proposal like any other.
            late_lc = last_alive - due - stalled(commits, due, last_alive)
            stats["max_late_after_leader_change_s"] = max(
                stats["max_late_after_leader_change_s"], late_lc)
            bound = election_s + heartbeat_s + poll_s + slack_s
            if late_lc > bound:
                timing.append(
                    "lease %x (TTL %ds) still alive %.2fs after its TTL counted from the last "
                    "leader change at %.3f (bound: election timeout + heartbeat + polling = %.2fs)"
                    % (le["id"], ttl, late_lc, changed[-1], bound))
        elif late - stalled(commits, anchor + ttl, last_alive) > ttl:
            # Without a leader change, revocation is the leader's chore (and
            # a Raft round); a lease alive a whole TTL late is not expiring.
            timing.append(
                "lease %x (TTL %ds) still alive %.2fs past its TTL after its last keepalive, "
                "with no leader change" % (le["id"], ttl, late))
    return violations, timing, stats


def lease_expiry_ops(rec):
    """Synthetic deletes for the linearizability check: each lease whose
    expiry was observed was revoked, at an unknown moment after its key was
    written and before the observation returned."""
    put_ret = {o["key"]: o["ret"] for o in rec.ops
               if o["type"] == "put" and o.get("status") == "ok" and o["key"].startswith("/l/")}
    out = []
    for le in rec.leases:
        if "expired_ret" not in le or "key" not in le:
            continue
        # After the key was written (its put found the lease alive).
        call = put_ret[le["key"]] + 1e-6 if le["key"] in put_ret else le.get("grant_call", 0.0)
        out.append({"id": "lease-%x" % le["id"], "type": "del", "key": le["key"],
                    "call": call, "ret": le["expired_ret"],
                    "status": "ok", "out": None, "client": "lease-expiry", "member": None})
    return out
