"""Faults, injected from outside the members, one at a time or combined.

Each fault is a function (run, rng) -> description; it injects, holds the
fault for a seeded time, heals what it broke, and returns.  The caller then
waits until the cluster accepts writes again before the next fault.
"""

import time

from workload import now

# Every fault's name, and whether it applies to a system.
MUSTER_ONLY = {"pause-snapshot-sender"}


def _hold(run, rng, lo, hi):
    d = rng.uniform(lo, hi) * run.election_s
    run.stop_nemesis.wait(d)
    return d


def _leader(run, timeout=20):
    try:
        return run.cluster.wait_leader(timeout)
    except AssertionError:
        return None


def _followers(run, leader):
    return [m for m in run.cluster.members if m is not leader and m.alive()]


def _restart(run, members):
    for m in members:
        if not m.alive():
            m.start(state="existing") if getattr(m, "joined_existing", False) else m.start()


def kill(run, rng, which):
    lead = _leader(run)
    members = list(run.cluster.members)
    if which == "leader":
        victims = [lead] if lead else [rng.choice(members)]
    elif which == "follower":
        fs = _followers(run, lead)
        victims = [rng.choice(fs)] if fs else []
    elif which == "majority":
        rng.shuffle(members)
        victims = members[: len(members) // 2 + 1]
    else:
        victims = members
    for m in victims:
        m.expect_down = True
        m.kill9()
    held = _hold(run, rng, 0.5, 3.0)
    _restart(run, victims)
    for m in victims:
        m.expect_down = False
    return "kill -9 %s, restarted after %.1fs" % (",".join(m.name for m in victims), held)


def pause(run, rng, which):
    lead = _leader(run)
    if which == "leader" and lead:
        victim = lead
    else:
        fs = _followers(run, lead)
        victim = rng.choice(fs) if fs else rng.choice(run.cluster.members)
    victim.pause()
    # Longer than an election timeout: the others elect a new leader while
    # the old one (if it was the leader) still believes it leads.
    held = _hold(run, rng, 1.5, 4.0)
    victim.resume()
    return "SIGSTOP %s for %.1fs (%s)" % (victim.name, held, which)


def partition(run, rng, kind):
    names = [m.name for m in run.cluster.members]
    lead = _leader(run)
    relay = run.relay
    minority = (len(names) - 1) // 2  # 1 of 3, 2 of 5
    if kind == "leader":
        # The leader on the minority side (with others, in a 5-member cluster).
        first = lead.name if lead else rng.choice(names)
        rest = [n for n in names if n != first]
        rng.shuffle(rest)
        a = [first] + rest[:minority - 1]
        b = [n for n in names if n not in a]
        relay.partition(a, b, cut=rng.random() < 0.5)
        what = "isolate %s | %s" % (a, b)
    elif kind == "minority":
        followers = [n for n in names if not lead or n != lead.name]
        rng.shuffle(followers)
        a = followers[:minority]
        b = [n for n in names if n not in a]
        relay.partition(a, b, cut=rng.random() < 0.5)
        what = "isolate %s | %s" % (a, b)
    elif kind == "bridge":
        # Two sides that cannot talk to each other; one member talks to both.
        order = list(names)
        rng.shuffle(order)
        bridge = order[0]
        rest = order[1:]
        half = len(rest) // 2
        a, b = rest[:half], rest[half:]
        relay.partition(a, b)
        what = "bridge %s between %s and %s" % (bridge, a, b)
    elif kind == "one-way":
        # The leader's messages get out, its peers' answers do not come back
        # (or the reverse).
        ln = lead.name if lead else rng.choice(names)
        others = [n for n in names if n != ln]
        if rng.random() < 0.5:
            for o in others:
                relay.block(o, ln)
            what = "drop %s -> %s" % (others, ln)
        else:
            for o in others:
                relay.block(ln, o)
            what = "drop %s -> %s" % (ln, others)
    elif kind == "delay":
        d = rng.choice([20, 50, 150])
        j = rng.choice([0, d, 3 * d])
        for x in names:
            for y in names:
                if x != y:
                    relay.set_delay(x, y, d, j)
        what = "every link delayed %dms + U(0,%d)ms" % (d, j)
    else:
        raise ValueError(kind)
    held = _hold(run, rng, 1.5, 4.0)
    relay.heal()
    return "%s for %.1fs" % (what, held)


def disk(run, rng, mode):
    lead = _leader(run)
    victim = lead or rng.choice(run.cluster.members)
    if mode == "eio":
        victim.expect_down = True  # it is meant to stop
    victim.set_disk(mode)
    if mode == "eio":
        # A member whose flush fails must stop (and never acknowledge the
        # write it could not make durable).  Give it time to notice: it needs
        # a write to flush.
        deadline = now() + 10
        while victim.alive() and now() < deadline and not run.stop_nemesis.is_set():
            time.sleep(0.05)
        stopped = not victim.alive()
        if not stopped:
            run.errors.append("%s kept running %.0fs after its fsync started failing"
                              % (victim.name, 10))
        victim.kill9()
        victim.set_disk("ok")
        held = _hold(run, rng, 0.5, 1.5)
        victim.start()
        victim.expect_down = False
        return "fsync EIO on %s (it %s), restarted after %.1fs" % (
            victim.name, "stopped" if stopped else "did NOT stop", held)
    victim.disk_calls_caught = None
    incarnation = victim.incarnation
    held = _hold(run, rng, 1.5, 4.0)
    victim.set_disk("ok")
    # A leader under traffic syncs many times a second: a stall that held
    # none of its fsyncs (strace attached but injecting nothing) is a broken
    # fault, not a passed run (unless another fault killed or restarted the
    # victim meanwhile).  The shim keeps no count (muster).
    if victim.disk_calls_caught == 0 and victim.alive() and victim.incarnation == incarnation:
        run.errors.append("the stall on %s held none of its fsyncs" % victim.name)
    return "fsync stalled on %s for %.1fs" % (victim.name, held)


def pause_snapshot_sender(run, rng):
    """A follower far behind is restarted; the leader's snapshot stream to
    it is held in the relay after its opening MsgSnap (the follower has
    begun the install and holds its one install slot), and the leader is
    paused until the others have elected a new leader (the follower votes
    in it).  Then the rest of the stream is released, so the follower
    completes a snapshot whose MsgSnap carries a past term, and the old
    leader resumes as a zombie.  The follower must still catch up from the
    new leader.  muster only (the relay recognises muster's snapshot stream
    handshake)."""
    lead = _leader(run)
    if lead is None:
        return "pause-snapshot-sender skipped: no leader"
    fs = _followers(run, lead)
    if not fs:
        return "pause-snapshot-sender skipped: no live follower"
    victim = rng.choice(fs)
    victim.expect_down = True
    victim.kill9()
    # Far enough behind that the leader compacted what it would need
    # (--snapshot-count 100, catch-up 50).
    start = run.max_revision()
    deadline = now() + 20
    while run.max_revision() < start + 300 and now() < deadline and \
            not run.stop_nemesis.is_set():
        run.stop_nemesis.wait(0.05)
    relay = run.relay
    held_before = relay.stats["held_snapshot_streams"]
    relay.hold_snapshots(lead.name, victim.name)
    victim.start()
    victim.expect_down = False
    deadline = now() + 15
    while relay.stats["held_snapshot_streams"] == held_before and now() < deadline and \
            not run.stop_nemesis.is_set():
        run.stop_nemesis.wait(0.02)
    if relay.stats["held_snapshot_streams"] == held_before:
        relay.heal()
        return "pause-snapshot-sender: %s caught up without a snapshot from %s" % (
            victim.name, lead.name)
    st = lead.status()
    old_term = st[2] if st else 0
    t0 = now()
    lead.pause()
    # The others elect a new leader; the victim must be in its term before
    # the stale stream reaches it.
    deadline = now() + 30
    new_term = 0
    while now() < deadline and not run.stop_nemesis.is_set():
        st = victim.status()
        if st and st[2] > old_term and st[1] not in (0, st[3]):
            new_term = st[2]
            break
        run.stop_nemesis.wait(0.05)
    relay.heal()
    _hold(run, rng, 0.5, 2.0)  # the stale stream lands while the old leader sleeps
    lead.resume()
    return ("%s restarted; %s's snapshot stream to it held, %s paused %.1fs; "
            "released at term %s (sent in term %d)" % (
                victim.name, lead.name, lead.name, now() - t0,
                new_term or "unchanged", old_term))


def _member_id(run, via, member):
    for mem in run.cluster.member_list(via) or []:
        if mem.get("name") == member.name:
            return mem.get("ID")
    return None


def member_replace(run, rng, which="follower"):
    """Removes a follower (or the leader itself, which then steps down) and
    adds a fresh member in its place: as a learner that is promoted once it
    has caught up, during traffic."""
    c = run.cluster
    lead = _leader(run)
    if lead is None:
        return "member-replace skipped: no leader"
    victim = lead if which == "leader" else rng.choice(_followers(run, lead))
    vid = _member_id(run, lead, victim)
    if vid is None:
        return "member-replace skipped: %s not listed" % victim.name
    # --strict-reconfig-check wants every voter connected for a while first.
    st, doc = _retry(run, lambda: lead.call("/v3/cluster/member/remove", {"ID": vid},
                                            timeout=5.0), attempts=30)
    if st != "ok":
        return "member-replace: remove %s failed: %s" % (victim.name, doc)
    victim.expect_down = True
    victim.kill9()
    c.members.remove(victim)
    c.removed.append(victim)
    new = c.new_member()
    st, doc = _retry(run, lambda: _leader_call(run, "/v3/cluster/member/add",
                                               {"peerURLs": [new.front_url], "isLearner": True}))
    if st != "ok":
        return "member-replace: removed %s; add failed: %s" % (victim.name, doc)
    new_id = doc.get("member", {}).get("ID")
    initial = c.initial_cluster(c.members + [new])
    new.joined_existing = True
    c.members.append(new)
    new.start(initial_cluster=initial, state="existing")
    # Promote once it has caught up (the leader refuses until then).
    deadline = now() + 30
    promoted = False
    while now() < deadline and not run.stop_nemesis.is_set():
        st, doc = _leader_call(run, "/v3/cluster/member/promote", {"ID": new_id})
        if st == "ok":
            promoted = True
            break
        time.sleep(0.3)
    return "replaced %s with %s (learner, %s)" % (victim.name, new.name,
                                                   "promoted" if promoted else "NOT promoted")


def move_leader(run, rng):
    """etcd's MoveLeader during traffic: the leader hands over to a follower
    (sometimes twice in a row, the second before the first has settled)."""
    out = []
    for _ in range(rng.choice([1, 1, 2])):
        lead = _leader(run)
        if lead is None:
            out.append("no leader")
            break
        target = rng.choice(_followers(run, lead))
        tid = _member_id(run, lead, target)
        if tid is None:
            out.append("%s not listed" % target.name)
            break
        st, doc = lead.call("/v3/maintenance/transfer-leadership", {"targetID": tid}, timeout=10.0)
        out.append("%s -> %s: %s" % (lead.name, target.name,
                                     st if st == "ok" else "%s %s" % (st, doc)))
        run.stop_nemesis.wait(rng.uniform(0.0, 0.5) * run.election_s)
    return "move-leader " + "; ".join(out)


def _leader_call(run, path, body):
    lead = _leader(run, timeout=10)
    if lead is None:
        return "unreachable", {"error": "no leader"}
    return lead.call(path, body, timeout=5.0)


def _retry(run, fn, attempts=10):
    st, doc = "unreachable", None
    for _ in range(attempts):
        st, doc = fn()
        if st == "ok":
            return st, doc
        time.sleep(0.3)
    return st, doc


# Faults that may overlap: each heals only what it broke (the relay's heal
# resets every link, so overlapping partitions end together).
COMBINABLE = ["kill-follower", "pause-follower", "pause-leader", "partition-minority",
              "one-way-loss", "delay-jitter", "disk-stall-leader", "kill-leader"]


def combined(run, rng):
    """Two faults at once, started a moment apart (e.g. the leader paused
    while a follower is partitioned away: no quorum until one heals)."""
    import threading
    names = rng.sample([n for n in COMBINABLE
                        if run.cluster.system != "etcd" or n not in MUSTER_ONLY], 2)
    seeds = [rng.getrandbits(32) for _ in names]
    out = [None, None]

    def one(i):
        import random
        out[i] = FAULTS[names[i]](run, random.Random(seeds[i]))

    t = threading.Thread(target=one, args=(1,), daemon=True)
    t.start()
    run.stop_nemesis.wait(rng.uniform(0.0, 1.0))
    one(0)
    t.join(timeout=120)
    return "together: %s; %s" % (out[0], out[1])


FAULTS = {
    "kill-leader": lambda run, rng: kill(run, rng, "leader"),
    "kill-follower": lambda run, rng: kill(run, rng, "follower"),
    "kill-majority": lambda run, rng: kill(run, rng, "majority"),
    "kill-all": lambda run, rng: kill(run, rng, "all"),
    "pause-leader": lambda run, rng: pause(run, rng, "leader"),
    "pause-follower": lambda run, rng: pause(run, rng, "follower"),
    "partition-leader": lambda run, rng: partition(run, rng, "leader"),
    "partition-minority": lambda run, rng: partition(run, rng, "minority"),
    "partition-bridge": lambda run, rng: partition(run, rng, "bridge"),
    "one-way-loss": lambda run, rng: partition(run, rng, "one-way"),
    "delay-jitter": lambda run, rng: partition(run, rng, "delay"),
    "disk-stall-leader": lambda run, rng: disk(run, rng, "stall"),
    "disk-eio-leader": lambda run, rng: disk(run, rng, "eio"),
    "member-replace": member_replace,
    "pause-snapshot-sender": pause_snapshot_sender,
    "combined": combined,
    # Appended: a soak draws from this order, so earlier seeds keep theirs.
    "member-replace-leader": lambda run, rng: member_replace(run, rng, "leader"),
    "move-leader": move_leader,
}
