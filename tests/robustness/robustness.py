#!/usr/bin/env python3
"""Robustness runs: a real 3-member cluster (muster or etcd 3.4), concurrent
clients, a nemesis injecting faults from outside, and checkers over the
recorded history.  docs/reliability.md explains the faults, the checkers and
how to replay a failure.

    robustness.py run --system muster --seed 7 --faults kill-leader,partition-leader
    robustness.py run --system etcd --seed 7 --faults kill-leader
    robustness.py soak --system muster --duration 30m
    robustness.py check <saved run directory>

Exit status: 0 when every checker passed, 1 on a violation (the history and
the members' logs are kept, and the command that replays the seed printed),
2 when the run itself could not be carried out.
"""

import argparse
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))

from harness import SANITIZER, ProcessGroup, SanitizerReport, wait_for  # noqa: E402

import checkers  # noqa: E402
import client as v3  # noqa: E402
import linearizability  # noqa: E402
import nemesis  # noqa: E402
from cluster import Cluster  # noqa: E402
from relay import Relay  # noqa: E402
from workload import KEYS, KvClient, LeaseClient, Monitor, Recorder, Watcher, now  # noqa

ALL_FAULTS = list(nemesis.FAULTS)


class RunFailed(Exception):
    """The run could not be carried out (not a checker violation)."""


class Run:
    def __init__(self, system, seed, faults, clients=6, watchers=2, heartbeat_ms=100,
                 election_ms=1000, op_timeout=2.0, lease_ttl=3, member_env=None, members=3):
        self.system = system
        self.seed = seed
        self.faults = faults
        self.rng = random.Random(seed)
        self.n_clients = clients
        self.n_watchers = watchers
        self.heartbeat_s = heartbeat_ms / 1000.0
        self.election_s = election_ms / 1000.0
        self.op_timeout = op_timeout
        self.lease_ttl = lease_ttl
        self.rec = Recorder()
        self.errors = []
        self.stop_clients = threading.Event()
        self.stop_watchers = threading.Event()
        self.stop_nemesis = threading.Event()
        self.group = ProcessGroup(prefix="muster-robust-")
        self.group.keep = True  # we decide at the end
        self.relay = Relay(seed)
        self.cluster = Cluster(self.group, self.relay, system, size=members,
                               heartbeat_ms=heartbeat_ms,
                               election_ms=election_ms, member_env=member_env)
        self.monitor = None
        self.workers = []
        self.watchers = []
        self.summary = {}

    def max_revision(self):
        return self.monitor.max_rev if self.monitor else 0

    def log_nemesis(self, fault, what, t0):
        self.rec.add("nemesis", {"t": t0, "end": now(), "fault": fault, "what": what})

    # ------------------------------------------------------------------ phases

    def execute(self):
        c = self.cluster
        c.start()
        try:
            c.wait_leader(60)
            c.wait_writable(30)
        except AssertionError as e:
            raise RunFailed("cluster did not start: %s" % e)
        self.monitor = Monitor(self)
        self.monitor.start()
        for i in range(self.n_watchers):
            w = Watcher(self, i)
            w.start()
            self.watchers.append(w)
        for i in range(self.n_clients):
            k = KvClient(self, i, self.seed * 1000 + i)
            k.start()
            self.workers.append(k)
        for i in range(3):
            lease = LeaseClient(self, self.seed * 1000 + 900 + i, self.lease_ttl)
            lease.start()
            self.workers.append(lease)
        time.sleep(0)  # let the threads start
        self.stop_nemesis.wait(1.0)
        for fault in self.faults:
            t0 = now()
            try:
                what = nemesis.FAULTS[fault](self, self.rng)
            except AssertionError as e:
                what = "fault aborted: %s" % e
            self.log_nemesis(fault, what, t0)
            self.relay.heal()
            for m in c.members:
                m.resume()
            try:
                c.wait_writable(60)
            except AssertionError as e:
                self.errors.append("after %s (%s): %s" % (fault, what, e))
                break
            self.stop_nemesis.wait(self.rng.uniform(0.5, 1.5))
        self.finish()

    def finish(self):
        """Heals everything, restarts the dead, stops the traffic, reads
        every key from every member, lets the watchers catch up."""
        c = self.cluster
        self.relay.heal()
        for m in c.members:
            m.resume()
            m.set_disk("ok")
            if not m.alive():
                m.expect_down = False
                m.start(state="existing" if getattr(m, "joined_existing", False) else "new")
        try:
            c.wait_leader(60)
            c.wait_writable(60)
        except AssertionError as e:
            self.errors.append("cluster did not recover after the faults: %s" % e)
        self.stop_clients.set()
        for w in self.workers:
            w.join(timeout=self.op_timeout + self.lease_ttl + 40)
            if w.is_alive():
                self.errors.append("%s did not stop" % w.name)
        # Final reads: every key, every member, linearizable.
        final_rev = 0
        for m in c.members:
            for key in KEYS:
                rec = {"client": "final", "member": m.name, "type": "get", "key": key,
                       "call": now()}
                st, doc = m.call("/v3/kv/range", {"key": v3.b64(key)}, timeout=5.0)
                rec["ret"] = now()
                if st != "ok":
                    self.errors.append("final read of %s on %s failed: %s" % (key, m.name, doc))
                    continue
                rec["status"] = "ok"
                kvs = [v3.kv_of(k) for k in doc.get("kvs", [])]
                rec["out"] = {"revision": v3.header_rev(doc),
                              "value": kvs[0]["value"] if kvs else None,
                              "mod_revision": kvs[0]["mod_revision"] if kvs else 0}
                final_rev = max(final_rev, rec["out"]["revision"])
                self.rec.op(rec)
        self.final_revision = final_rev
        # Watchers catch up to the final revision.
        try:
            wait_for(lambda: all(w.last_rev >= final_rev for w in self.watchers), 20,
                     "watchers to reach revision %d" % final_rev, interval=0.1)
        except AssertionError:
            pass  # the watch checker reports who lagged
        self.stop_watchers.set()
        for w in self.watchers:
            if w.stream is not None:
                w.stream.close()
            w.join(timeout=5)
        if self.monitor:
            self.monitor.join(timeout=5)

    def stop_processes(self):
        """Stops every member (SIGTERM first in a sanitized build, so that
        LeakSanitizer runs); returns the sanitizer reports in their logs."""
        self.stop_nemesis.set()
        self.stop_clients.set()
        self.stop_watchers.set()
        for m in self.cluster.members:
            m.resume()
        if SANITIZER:
            self.group.stop_gracefully()
        for p in self.group.procs:
            p.close()
        return self.group.sanitizer_reports()

    def close(self, keep):
        self.stop_processes()
        self.relay.close()
        self.group.keep = keep
        try:
            self.group.close()
        except SanitizerReport:
            pass  # one_run has reported it (stop_processes)


def check(rec, election_s, heartbeat_s, final_revision):
    """All checkers over a recorder; returns (violations by checker, stats)."""
    results = {}
    stats = {}
    ops = rec.ops + checkers.lease_expiry_ops(rec)
    v, s = linearizability.check(ops)
    results["linearizability"] = v
    stats["linearizability"] = s
    results["revisions"] = checkers.check_revisions(rec)
    v, s = checkers.check_watch(rec, final_revision)
    results["watch"] = v
    stats["watch"] = s
    v, t, s = checkers.check_leases(rec, election_s, heartbeat_s)
    results["leases"] = v
    results["lease-timing"] = t
    stats["leases"] = s
    return results, stats


def counts(system, checker):
    """Whether a checker's findings fail a run of `system`: the lease timing
    bound is muster's promise (issue 15), not etcd 3.4's; for etcd it is
    measured and reported only."""
    return checker != "lease-timing" or system != "etcd"


def op_counts(rec):
    c = {"ok": 0, "unknown": 0, "fail": 0}
    for o in rec.ops:
        c[o.get("status", "fail")] = c.get(o.get("status", "fail"), 0) + 1
    return c


def replay_command(args_system, seed, faults, brk="", members=3):
    return "tests/robustness/run.sh run --system %s --seed %d --faults %s%s%s" % (
        args_system, seed, ",".join(faults), " --break " + brk if brk else "",
        " --members %d" % members if members != 3 else "")


def one_run(system, seed, faults, out_dir=None, verbose=True, member_env=None, members=3):
    """Runs and checks once.  Returns a summary dict (violations included)."""
    run = Run(system, seed, faults, member_env=member_env, members=members)
    t0 = time.monotonic()
    failed_to_run = None
    try:
        run.execute()
    except RunFailed as e:
        failed_to_run = str(e)
    except Exception:
        failed_to_run = traceback.format_exc()
    finally:
        run.stop_nemesis.set()
    results, stats = check(run.rec, run.election_s, run.heartbeat_s,
                           getattr(run, "final_revision", 0))
    violations = sum(len(v) for k, v in results.items() if counts(system, k))
    summary = {"system": system, "members": members, "seed": seed, "faults": faults, "seconds":
               round(time.monotonic() - t0, 1), "ops": op_counts(run.rec),
               "violations": {k: len(v) for k, v in results.items()}, "stats": stats,
               "nemesis": [n["what"] for n in run.rec.nemesis], "errors": run.errors,
               "run_failed": failed_to_run, "dir": run.group.dir,
               "leader_changes": len(checkers.leader_changes(run.rec)),
               "break": (member_env or {}).get("MUSTER_TEST_BREAK", ""),
               "relay": dict(run.relay.stats)}
    # A sanitized member's report fails the run (as a run failure: exit
    # status 2, even for the self-checks that expect a violation).  The
    # members are stopped here, before anything is saved; close() below
    # only removes what they left.
    reports = run.stop_processes()
    if reports:
        failed_to_run = "\n".join(["sanitizer report(s) in members:"] + reports +
                                   ([failed_to_run] if failed_to_run else []))
        summary["run_failed"] = failed_to_run
    bad = violations > 0 or failed_to_run is not None or run.errors
    if bad:
        run.rec.save(run.group.dir)
        with open(os.path.join(run.group.dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1, sort_keys=True)
        with open(os.path.join(run.group.dir, "violations.txt"), "w") as f:
            for k, v in results.items():
                for line in v:
                    f.write("[%s] %s\n\n" % (k, line))
        with open(os.path.join(run.group.dir, "params.json"), "w") as f:
            json.dump({"election_s": run.election_s, "heartbeat_s": run.heartbeat_s,
                       "final_revision": getattr(run, "final_revision", 0),
                       "cluster": json.loads(run.cluster.dump())}, f)
    run.close(keep=bool(bad))
    if out_dir and bad:
        dest = os.path.join(out_dir, "%s-seed%d" % (system, seed))
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(run.group.dir, dest, ignore=shutil.ignore_patterns("*.data"))
        # The copy is the record; the temporary directory (the members'
        # data, hundreds of megabytes) is not left behind in /tmp.
        shutil.rmtree(run.group.dir, ignore_errors=True)
        summary["dir"] = dest
    if verbose:
        print_summary(summary, results, system)
    summary["results"] = results
    return summary


def print_summary(summary, results, system):
    ok = not any(v for k, v in summary["violations"].items() if counts(system, k)) and \
        not summary["run_failed"] and not summary["errors"]
    print("%s seed=%d faults=%s: %s in %.1fs; ops ok=%d unknown=%d failed=%d; "
          "violations %s" % (system, summary["seed"], ",".join(summary["faults"]),
                             "PASS" if ok else "FAIL", summary["seconds"],
                             summary["ops"].get("ok", 0), summary["ops"].get("unknown", 0),
                             summary["ops"].get("fail", 0), json.dumps(summary["violations"])))
    for n in summary["nemesis"]:
        print("    nemesis: %s" % n)
    st = summary["stats"]
    print("    leader changes seen %d; peer connections %d (%d from non-members); watch events "
          "%d, reconnects %d; leases %d, expiries observed %d, latest %.2fs past TTL "
          "(%d across a leader change, latest %.2fs)" % (
              summary["leader_changes"], summary["relay"]["connections"],
              summary["relay"]["unknown_sources"], st["watch"]["events"],
              st["watch"]["reconnects"], st["leases"]["leases"],
              st["leases"]["expired_observed"], st["leases"]["max_late_s"],
              st["leases"]["across_leader_change"],
              st["leases"]["max_late_after_leader_change_s"]))
    if not ok:
        for e in summary["errors"]:
            print("    error: %s" % e)
        if summary["run_failed"]:
            print("    run failed: %s" % summary["run_failed"])
        for k, v in results.items():
            for line in v[:5]:
                print("    [%s] %s" % (k, line.replace("\n", "\n      ")))
            if len(v) > 5:
                print("    [%s] ... %d more" % (k, len(v) - 5))
        print("    history and logs: %s" % summary["dir"])
        print("    replay: %s" % replay_command(system, summary["seed"], summary["faults"],
                                                summary.get("break", ""),
                                                summary.get("members", 3)))
    sys.stdout.flush()


def parse_duration(s):
    s = s.strip()
    mult = {"s": 1, "m": 60, "h": 3600}
    if s[-1] in mult:
        return float(s[:-1]) * mult[s[-1]]
    return float(s)


def faults_for(system, names):
    out = []
    for n in names:
        if n not in nemesis.FAULTS:
            raise SystemExit("unknown fault %r; known: %s" % (n, ", ".join(ALL_FAULTS)))
        if system == "etcd" and n in nemesis.MUSTER_ONLY:
            continue
        out.append(n)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="one seeded run")
    r.add_argument("--system", default="muster", choices=["muster", "etcd", "muster-broken"])
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--faults", default="kill-leader")
    r.add_argument("--break", dest="brk", default="",
                   help="muster-broken only: what to break (MUSTER_TEST_BREAK)")
    r.add_argument("--expect-violation", default="", metavar="CHECKERS",
                   help="self-check: exit 0 only if one of these checkers (comma-separated) "
                        "reports a violation")
    r.add_argument("--out", default=os.environ.get("MUSTER_ROBUSTNESS_OUT", ""))
    r.add_argument("--members", type=int, default=3, choices=[3, 5])
    s = sub.add_parser("soak", help="seeded runs until the duration or run count is reached")
    s.add_argument("--system", default="muster", choices=["muster", "etcd"])
    s.add_argument("--duration", default="30m")
    s.add_argument("--runs", type=int, default=0)
    s.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    s.add_argument("--faults", default=",".join(ALL_FAULTS))
    s.add_argument("--per-run", type=int, default=3, help="faults per run")
    s.add_argument("--out", default=os.environ.get("MUSTER_ROBUSTNESS_OUT", "robustness-out"))
    s.add_argument("--report", default="", help="append one JSON line per run here")
    s.add_argument("--members", type=int, default=3, choices=[3, 5])
    c = sub.add_parser("check", help="re-run the checkers over a saved run")
    c.add_argument("dir")
    args = ap.parse_args(argv)

    if args.cmd == "check":
        rec = Recorder.load(args.dir)
        with open(os.path.join(args.dir, "params.json")) as f:
            p = json.load(f)
        results, stats = check(rec, p["election_s"], p["heartbeat_s"], p["final_revision"])
        system = "muster"
        if os.path.exists(os.path.join(args.dir, "summary.json")):
            with open(os.path.join(args.dir, "summary.json")) as f:
                system = json.load(f).get("system", system)
        for k, v in results.items():
            print("%s: %d violations%s %s" % (k, len(v), "" if counts(system, k) else
                                             " (reported only for %s)" % system,
                                             json.dumps(stats.get(k, {}))))
            for line in v:
                print("  " + line.replace("\n", "\n  "))
        return 1 if any(v for k, v in results.items() if counts(system, k)) else 0

    if args.cmd == "run":
        faults = faults_for(args.system, args.faults.split(","))
        env = {"MUSTER_TEST_BREAK": args.brk} if args.brk else None
        if args.system == "muster-broken" and not args.brk:
            raise SystemExit("--system muster-broken needs --break")
        summary = one_run(args.system, args.seed, faults, out_dir=args.out or None,
                          member_env=env, members=args.members)
        n = sum(v for k, v in summary["violations"].items() if counts(args.system, k))
        if args.expect_violation:
            if summary["run_failed"]:
                return 2
            wanted = args.expect_violation.split(",")
            caught = {k: v for k, v in summary["violations"].items() if k in wanted and v}
            if caught:
                print("self-check: the broken build was caught: %s" % json.dumps(caught))
                if not args.out:  # what was expected: nothing to keep in /tmp
                    shutil.rmtree(summary["dir"], ignore_errors=True)
                return 0
            print("self-check FAILED: %s noticed nothing wrong with the broken build"
                  % " or ".join(wanted))
            return 1
        if summary["run_failed"]:
            return 2
        return 1 if n or summary["errors"] else 0

    # soak.  SIGTERM or SIGINT: finish the run in progress (its members are
    # stopped and its directory kept or removed as usual), then stop.
    stopping = threading.Event()

    def stop_soak(signum, frame):
        stopping.set()
        print("soak: stopping after the run in progress")
        sys.stdout.flush()
    signal.signal(signal.SIGTERM, stop_soak)
    signal.signal(signal.SIGINT, stop_soak)
    names = faults_for(args.system, args.faults.split(","))
    deadline = time.monotonic() + parse_duration(args.duration)
    seed = args.seed
    totals = {"runs": 0, "failed": 0, "ops": 0, "violations": 0, "faults": 0}
    # Runs that failed before a single operation: the cluster could not even
    # start (a binary being rebuilt, ports, the disk).  A few in a row end the
    # soak, rather than spend hundreds of seeds on the same set-up error.
    unstarted = 0
    while time.monotonic() < deadline and (not args.runs or totals["runs"] < args.runs) and \
            not stopping.is_set():
        rng = random.Random(seed)
        faults = [rng.choice(names) for _ in range(args.per_run)]
        summary = one_run(args.system, seed, faults, out_dir=args.out, members=args.members)
        totals["runs"] += 1
        totals["faults"] += len(faults)
        totals["ops"] += summary["ops"].get("ok", 0) + summary["ops"].get("unknown", 0)
        nv = sum(v for k, v in summary["violations"].items() if counts(args.system, k))
        totals["violations"] += nv
        if nv or summary["errors"] or summary["run_failed"]:
            totals["failed"] += 1
        started = summary["ops"].get("ok", 0) + summary["ops"].get("unknown", 0) + \
            summary["ops"].get("fail", 0) > 0
        unstarted = unstarted + 1 if summary["run_failed"] and not started else 0
        if args.report:
            slim = {k: v for k, v in summary.items() if k != "results"}
            with open(args.report, "a") as f:
                f.write(json.dumps(slim, sort_keys=True) + "\n")
        seed += 1
        if unstarted >= 3:
            print("soak: stopping: %d runs in a row failed before any operation "
                  "(see the last run's error above)" % unstarted)
            break
    print("soak: %s" % json.dumps(totals))
    return 1 if totals["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
