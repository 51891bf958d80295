#!/usr/bin/env python3
"""bench/bootstrap/bootstrap_bench.py: time from start to a healthy cluster,
muster vs etcd 3.4, both bootstrapping through the same muster-discovery.

One muster-discovery runs on loopback for the whole run.  For every round,
heartbeat/election configuration, cluster size N and system (muster, etcd),
the driver creates a fresh size-N token, starts N members back to back with
`--discovery <token URL>` on free ports and fresh data dirs, and measures from
the first exec:

  - healthy: every member answers GET /health with {"health":"true"};
  - listed:  every member's POST /v3/cluster/member/list shows all N members,
             each with client URLs.

Members are polled every --poll-ms (default 5 ms) until --deadline.  Then
every process is killed (SIGKILL) and its data dir removed.  The two systems
alternate which goes first from one cell to the next, so drift on a shared
machine hits both.

The members' JSON logs give the phases (milestones as the time the last
member -- or, for the leader, the first -- reached it, relative to the first
exec).  Output: one JSON line per cluster start on --out (raw), and a
markdown summary on stdout.

Standard library only; reuses tests/lib/harness.py (free ports, process
group, muster-discovery).
"""

import argparse
import datetime
import http.client
import json
import os
import random
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "lib"))
import harness  # noqa: E402
from harness import Discovery, ProcessGroup  # noqa: E402


def _ephemeral_range():
    try:
        lo, hi = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


_EPHEMERAL = _ephemeral_range()
_given = set()


def free_port():
    """A loopback port that is bindable now, not handed out before, and
    outside the kernel's ephemeral range.  A muster member binds its client
    port only once it has published (about a second after start), so a port
    picked from the ephemeral range could meanwhile become the local end of
    some outgoing connection (harness.free_port picks from that range)."""
    lo, hi = _EPHEMERAL
    candidates = [p for p in range(10000, 30000) if not lo <= p <= hi]
    if not candidates:  # the whole range is ephemeral: fall back to it
        candidates = list(range(10000, 60000))
    for _ in range(500):
        port = random.choice(candidates)
        if port in _given:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        _given.add(port)
        return port
    raise RuntimeError("no free loopback port outside the ephemeral range")


def parse_ts(s):
    """RFC 3339 UTC ('...Z', any fraction) -> seconds since the epoch."""
    s = s.rstrip("Z")
    if "." in s:
        base, frac = s.split(".", 1)
    else:
        base, frac = s, "0"
    dt = datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc)
    return dt.timestamp() + float("0." + frac)


# Milestones in each system's log: name -> predicate over one JSON log record.
# Muster: node/bootstrap/discovery.cpp, node/server/{transport,raft_node}.cpp,
# node/main.cpp.  etcd 3.4.23 with --logger zap.
def _leader_known(rec):
    msg = rec.get("msg", "")
    if msg == "leader changed":  # muster
        return rec.get("leader", "0") not in ("0", "", 0)
    # etcd's raft logger: "raft.node: <id> elected leader <id> at term N"
    return "elected leader" in msg


MILESTONES = {
    "muster": [
        ("first_log", lambda r: True),
        ("discovery_done", lambda r: r.get("msg") == "discovery complete"),
        ("raft_started", lambda r: r.get("caller") == "etcdserver" and r.get("msg") == "started"),
        # The bootstrap configuration applied: the transport knows its peers.
        ("conf_applied", lambda r: r.get("msg") == "applied membership change"),
        ("peer_connected", lambda r: r.get("msg") == "peer connection established"),
        # Present only in a build that advances the first election.
        ("fast_forward", lambda r: "fast-forwarding election ticks" in r.get("msg", "")
         or "first candidate" in r.get("msg", "")),
        ("leader_known", _leader_known),
        ("published", lambda r: r.get("msg") == "published local member to cluster through raft"),
        ("serving", lambda r: r.get("msg") == "ready to serve client requests"),
    ],
    "etcd": [
        ("first_log", lambda r: True),
        ("discovery_done", lambda r: r.get("msg") == "found all needed peers from discovery server"),
        ("raft_started", lambda r: r.get("msg") == "starting local member"),
        ("peer_connected", lambda r: r.get("msg") == "peer became active"),
        # etcd's initial election tick advance (etcdserver/server.go adjustTicks).
        ("fast_forward", lambda r: "fast-forwarding election ticks" in r.get("msg", "")),
        ("leader_known", _leader_known),
        ("published", lambda r: r.get("msg") == "published local member to cluster through raft"),
        ("serving", lambda r: r.get("msg", "").startswith("serving client traffic")),
    ],
}


def log_records(path):
    out = []
    try:
        with open(path, "rb") as f:
            for line in f:
                line = line.strip()
                if not line.startswith(b"{"):
                    continue
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def milestones(system, path, t0):
    """{milestone: seconds after t0 of its first occurrence in this log}."""
    found = {}
    for rec in log_records(path):
        ts = rec.get("ts")
        if not isinstance(ts, str):
            continue
        for name, pred in MILESTONES[system]:
            if name in found:
                continue
            try:
                hit = pred(rec)
            except Exception:  # a record of an unexpected shape
                hit = False
            if hit:
                found[name] = parse_ts(ts) - t0
    return found


class Poller:
    """One keep-alive HTTP connection to a member's client URL."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def _request(self, method, path, body=None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1.0)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            self.conn.request(method, path, body=body, headers=headers)
            r = self.conn.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException):
            self.close()
            return None, b""

    def healthy(self):
        status, body = self._request("GET", "/health")
        if status != 200:
            return False
        try:
            return json.loads(body).get("health") == "true"
        except ValueError:
            return False

    def lists_all(self, n):
        status, body = self._request("POST", "/v3/cluster/member/list", b"{}")
        if status != 200:
            return False
        try:
            members = json.loads(body).get("members", [])
        except ValueError:
            return False
        return len(members) == n and all(m.get("clientURLs") and m.get("name") for m in members)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def run_once(args, disco, system, n, hb, el, tag):
    """Starts one N-member cluster of `system`, returns the result dict."""
    group = ProcessGroup(prefix="muster-bench-boot-")
    try:
        token_url = disco.new_token(n)
        members = []
        for i in range(n):
            name = "%s%d" % (system, i)
            cport, pport = free_port(), free_port()
            curl, purl = "http://127.0.0.1:%d" % cport, "http://127.0.0.1:%d" % pport
            argv = [args.muster if system == "muster" else args.etcd,
                    "--name", name, "--data-dir", group.path(name + ".data"),
                    "--listen-client-urls", curl, "--advertise-client-urls", curl,
                    "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
                    "--heartbeat-interval", str(hb), "--election-timeout", str(el),
                    "--discovery", token_url]
            if system == "etcd":
                argv += ["--logger", "zap", "--log-outputs", "stderr"]
            members.append((name, cport, argv))
        env = None
        if system == "muster" and args.muster_env:
            env = dict(os.environ)
            env.update(kv.split("=", 1) for kv in args.muster_env)
        # Back to back: the spread between the first and the last exec is
        # recorded (spawn_spread_ms) and counted in both systems' times.
        t0_wall = time.time()
        t0 = time.monotonic()
        procs = [group.start(name, argv, env=env) for name, _, argv in members]
        spread = time.monotonic() - t0
        pollers = [Poller(cport) for _, cport, _ in members]
        healthy_at = [None] * n
        listed_at = [None] * n
        deadline = t0 + args.deadline
        period = args.poll_ms / 1000.0
        next_poll = t0
        failure = None
        while True:
            now = time.monotonic()
            for i, p in enumerate(pollers):
                if healthy_at[i] is None and p.healthy():
                    healthy_at[i] = time.monotonic() - t0
                if healthy_at[i] is not None and listed_at[i] is None and p.lists_all(n):
                    listed_at[i] = time.monotonic() - t0
            if all(x is not None for x in listed_at):
                break
            dead = [pr.name for pr in procs if not pr.alive()]
            if dead:
                failure = "exited: " + ",".join(dead)
                break
            if now >= deadline:
                failure = "deadline %.0fs" % args.deadline
                break
            next_poll += period
            pause = next_poll - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                next_poll = time.monotonic()
        for p in pollers:
            p.close()
        for pr in procs:
            pr.kill()
        for pr in procs:
            pr.wait(10)
        phases = [milestones(system, pr.log_path, t0_wall) for pr in procs]
        res = {
            "tag": tag, "system": system, "size": n, "heartbeat_ms": hb, "election_ms": el,
            "ok": failure is None, "failure": failure,
            "spawn_spread_ms": round(spread * 1000, 2),
            "healthy_s": max(healthy_at) if failure is None else None,
            "first_healthy_s": min((x for x in healthy_at if x is not None), default=None),
            "listed_s": max(listed_at) if failure is None else None,
            "members": phases,
        }
        if failure is not None:
            res["logs"] = group.dump_logs(3000)
        return res
    finally:
        group.close()


def cluster_phase(res, name, agg=max):
    vals = [m[name] for m in res["members"] if name in m]
    if len(vals) != len(res["members"]) and agg is max:
        return None
    return agg(vals) if vals else None


def pct(vals, p):
    vals = sorted(vals)
    if not vals:
        return None
    k = (len(vals) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (k - lo)


def ms(v):
    return "n/a" if v is None else "%.0f" % (v * 1000)


def summarize(results):
    out = []
    cells = {}
    for r in results:
        cells.setdefault((r["heartbeat_ms"], r["election_ms"], r["size"]), {}).setdefault(
            r["system"], []).append(r)
    out.append("| heartbeat / election ms | N | healthy median ms muster / etcd | ratio "
               "| healthy p90 ms muster / etcd | ratio | listed median ms muster / etcd | ratio "
               "| failed runs muster / etcd |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (hb, el, n), by in sorted(cells.items(), key=lambda kv: (-kv[0][0], kv[0][2])):
        row = {}
        for s in ("muster", "etcd"):
            ok = [r for r in by.get(s, []) if r["ok"]]
            row[s] = {
                "h50": pct([r["healthy_s"] for r in ok], 0.5),
                "h90": pct([r["healthy_s"] for r in ok], 0.9),
                "l50": pct([r["listed_s"] for r in ok], 0.5),
                "fail": len(by.get(s, [])) - len(ok),
            }
        m, e = row["muster"], row["etcd"]

        def ratio(a, b):
            return "%.2f" % (a / b) if a is not None and b else "n/a"
        out.append("| %d / %d | %d | %s / %s | %s | %s / %s | %s | %s / %s | %s | %d / %d |" % (
            hb, el, n, ms(m["h50"]), ms(e["h50"]), ratio(m["h50"], e["h50"]),
            ms(m["h90"]), ms(e["h90"]), ratio(m["h90"], e["h90"]),
            ms(m["l50"]), ms(e["l50"]), ratio(m["l50"], e["l50"]), m["fail"], e["fail"]))
    out.append("")
    # Phases: median over rounds of the time (ms after the first exec) at
    # which the last member reached each milestone; the leader: the first
    # member that knew it.
    for system in ("muster", "etcd"):
        names = [n for n, _ in MILESTONES[system]]
        out.append("Phases, %s (median over successful rounds, ms after the first exec; "
                   "the last member to reach it, leader_known: the first):\n" % system)
        out.append("| heartbeat / election ms | N | " + " | ".join(names) + " | healthy | listed |")
        out.append("|---|---:|" + "---:|" * (len(names) + 2))
        for (hb, el, n), by in sorted(cells.items(), key=lambda kv: (-kv[0][0], kv[0][2])):
            ok = [r for r in by.get(system, []) if r["ok"]]
            cols = []
            for name in names:
                agg = min if name == "leader_known" else max
                vals = [v for v in (cluster_phase(r, name, agg) for r in ok) if v is not None]
                cols.append(ms(pct(vals, 0.5)) if vals else "-")
            cols.append(ms(pct([r["healthy_s"] for r in ok], 0.5)))
            cols.append(ms(pct([r["listed_s"] for r in ok], 0.5)))
            out.append("| %d / %d | %d | %s |" % (hb, el, n, " | ".join(cols)))
        out.append("")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    bin_dir = os.environ.get("MUSTER_BIN_DIR", os.path.join(HERE, "..", "..", "build", "bin"))
    ap.add_argument("--muster", default=os.path.join(bin_dir, "muster"))
    ap.add_argument("--discovery-bin", default=os.path.join(bin_dir, "muster-discovery"))
    ap.add_argument("--etcd", default=os.environ.get("ETCD", "/usr/bin/etcd"))
    ap.add_argument("--muster-env", action="append", default=[], metavar="VAR=VALUE",
                    help="extra environment for the muster members (repeatable)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--sizes", default="3,5")
    ap.add_argument("--configs", default="100/1000,50/500",
                    help="heartbeat/election ms pairs, comma-separated")
    ap.add_argument("--systems", default="muster,etcd")
    ap.add_argument("--poll-ms", type=float, default=5.0)
    ap.add_argument("--deadline", type=float, default=30.0)
    ap.add_argument("--out", default="", help="raw JSON lines (one per cluster start)")
    ap.add_argument("--check", action="store_true",
                    help="smoke mode: exit 1 unless every run reached healthy and listed")
    args = ap.parse_args()
    harness.DISCOVERY = args.discovery_bin

    sizes = [int(s) for s in args.sizes.split(",")]
    configs = [tuple(int(x) for x in c.split("/")) for c in args.configs.split(",")]
    systems = args.systems.split(",")
    group = ProcessGroup(prefix="muster-bench-boot-disco-")
    results = []
    out = open(args.out, "w") if args.out else None
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    load_before = open("/proc/loadavg").read().split()[:3]
    t_start = time.monotonic()
    try:
        # --new-rate 0: this run creates one token per cluster start.
        disco = Discovery(group, args=["--new-rate", "0"])
        cell = 0
        for rnd in range(args.rounds):
            for hb, el in configs:
                for n in sizes:
                    order = systems if cell % 2 == 0 else list(reversed(systems))
                    cell += 1
                    for system in order:
                        r = run_once(args, disco, system, n, hb, el, "r%d" % rnd)
                        results.append(r)
                        if out:
                            out.write(json.dumps(r, sort_keys=True) + "\n")
                            out.flush()
                        print("round %d %d/%d N=%d %-6s %s" % (
                            rnd, hb, el, n, system,
                            "healthy %s ms, listed %s ms" % (ms(r["healthy_s"]), ms(r["listed_s"]))
                            if r["ok"] else "FAILED: " + r["failure"]), file=sys.stderr)
                        if not r["ok"]:
                            print(r.get("logs", ""), file=sys.stderr)
    finally:
        group.close()
        if out:
            out.close()
    load_after = open("/proc/loadavg").read().split()[:3]
    print("Run started %s, %d rounds, %.0f s wall; load average before %s, after %s.\n" % (
        started, args.rounds, time.monotonic() - t_start, " ".join(load_before),
        " ".join(load_after)))
    print(summarize(results))
    if args.check and not all(r["ok"] for r in results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
