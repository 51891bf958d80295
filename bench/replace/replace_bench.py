#!/usr/bin/env python3
"""bench/replace/replace_bench.py: replacing a dead member, muster's
hands-free path (--discovery-replace-dead) against etcd 3.4's manual
procedure scripted as fast as possible, on the same machine.

Per round and system: a 3-member cluster (heartbeat 50 ms, election
500 ms) left to settle for 6 s, some keys written, one non-leader member killed with SIGKILL and
its data dir removed; then, once the leader has not heard it for longer
than the threshold (as when an autoscaling group boots the new instance
minutes later), the clock starts and

  - muster-auto: a new muster node is started with the members' discovery
    URL, its own name and addresses, and --discovery-replace-dead 1s;
  - muster-srv: the same through DNS SRV records (dnsmasq): the cluster
    bootstrapped from `_etcd-server._tcp` records, which are rewritten to
    name the new node before it starts (as an autoscaling hook would);
  - etcd-manual: `etcdctl member remove <dead>`, `etcdctl member add new
    --peer-urls=...`, then a new etcd started with
    --initial-cluster-state existing and the cluster `member add` printed;

and stops when the cluster has three started voters, none a learner, and
every member answers /health -- the same HTTP checks for both systems
(the member list through the v3 JSON gateway, which etcd 3.4 serves too).
Output: one line per round and a summary (median, min, max).  --profile
prints, for each muster round, when each step of the replacement happened
(from the members' log timestamps, relative to the new node's start).

Standard library only; reuses tests/lib/harness.py and the bootstrap
tests' helpers (free ports, process group, muster-discovery).
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration", "bootstrap"))
from bootstrap import (BootCluster, Discovery, ProcessGroup, free_port, start_dnsmasq,  # noqa: E402
                       wait_for)

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"
THRESHOLD_S = 1.0
DOMAIN = "example.test"
# A running cluster, not one that just formed: both systems refuse member
# changes ("unhealthy cluster") until the members have been connected 5 s.
SETTLE_S = 6.0


def etcdctl(endpoint, *args):
    env = dict(os.environ, ETCDCTL_API="3")
    r = subprocess.run([ETCDCTL, "--endpoints", endpoint, "--dial-timeout", "2s",
                        "--command-timeout", "5s"] + list(args) + ["-w", "json"],
                       env=env, capture_output=True, timeout=20, text=True)
    if r.returncode != 0:
        raise RuntimeError("etcdctl %s: %s" % (" ".join(args), r.stderr.strip()))
    return json.loads(r.stdout)


def three_voters(members_json):
    ms = members_json.get("members", [])
    return len(ms) == 3 and all(m.get("name") and not m.get("isLearner") for m in ms)


def post_json(client_url, path, body, timeout=2):
    """POST to a v3 JSON gateway route (muster's and etcd 3.4's): the answer, or None."""
    req = urllib.request.Request(client_url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def healthy(client_url):
    try:
        with urllib.request.urlopen(client_url + "/health", timeout=2) as r:
            return b'"true"' in r.read()
    except OSError:
        return False


def done_check(list_via, clients):
    """Three started voters (the member list, through one live member) and
    every member's /health: the same check for both systems."""
    def done():
        j = post_json(list_via, "/v3/cluster/member/list", {})
        return j is not None and three_voters(j) and all(healthy(c) for c in clients)
    return done


# The steps of a replacement and the log line that ends each (the new
# node's, or the leader's), for --profile.
STEPS = [
    ("new", "joining discovery cluster", "process up, discovery asked"),
    ("new", "got bootstrap from DNS for etcd-server", "process up, SRV records read"),
    ("new", "the SRV records name a running cluster", "SRV: a running cluster without it"),
    ("new", "the cluster formed without this node", "cluster and leader found"),
    ("leader", "removing a dead member to make room", "lock taken, dead member chosen"),
    ("leader", "added a replacement member as a learner", "removed + learner added"),
    ("new", "this node replaces a dead member", "answer received"),
    ("new", '"msg":"started"', "raft started"),
    ("new", "leader changed", "leader known"),
    ("new", "installed snapshot", "snapshot installed"),
    ("new", "published local member", "published"),
    ("new", "ready to serve client requests", "serving clients"),
    ("new", "replacement member promoted", "promoted"),
]


def profile(t0_wall, new_log, leader_log, t_done):
    """Prints each step's time (ms since the new node's start) from log ts."""
    def ts(line):
        try:
            j = json.loads(line)
        except ValueError:
            return None
        t = j.get("ts", "")
        try:
            return datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc).timestamp()
        except ValueError:
            return None
    logs = {"new": new_log.splitlines(), "leader": leader_log.splitlines()}
    print("  %-40s %8s" % ("step (log line)", "ms"), file=sys.stderr)
    for who, needle, what in STEPS:
        line = next((x for x in logs[who] if needle in x), None)
        t = ts(line) if line else None
        if t is not None:
            print("  %-40s %8.1f" % (what, (t - t0_wall) * 1000), file=sys.stderr)
    print("  %-40s %8.1f" % ("3 healthy voters seen by the bench", t_done * 1000), file=sys.stderr)


# ---- muster ---------------------------------------------------------------

def muster_round(group, srv=False, show_profile=False):
    if srv:
        c = BootCluster(3, group=group, host="localhost")
        records = lambda ms: [("_etcd-server._tcp", "localhost", m.peer_port) for m in ms]  # noqa
        dns, server = start_dnsmasq(group, DOMAIN, records(c.members))
        boot = ["--discovery-srv", DOMAIN, "--dns-server", server,
                "--discovery-replace-dead", "%ds" % THRESHOLD_S]
    else:
        url = Discovery(group).new_token(3)
        c = BootCluster(3, group=group)
        boot = ["--discovery", url, "--discovery-replace-dead", "%ds" % THRESHOLD_S]
    c.start(boot)
    c.wait_healthy(timeout=60)
    time.sleep(SETTLE_S)
    m1 = c.members[0]
    for i in range(50):
        m1.put("k%d" % i, "v")
    st, j = m1.call("/v3/maintenance/status", {})
    leader = j["leader"]
    leader_m = next(m for m in c.members if m.status()["header"]["member_id"] == leader)
    victim = next(m for m in c.members if m is not leader_m)
    victim.kill9()
    shutil.rmtree(victim.data_dir)
    live = [m for m in c.members if m is not victim]
    n = c.add("new", host="localhost") if srv else c.add("new")
    if srv:  # the DNS update comes before the new instance boots
        dns.close()
        start_dnsmasq(group, DOMAIN, records(live + [n]), name="dnsmasq-2",
                      port=int(server.rsplit(":", 1)[1]))
    time.sleep(THRESHOLD_S + 0.5)
    done = done_check(live[0].client_url, [m.client_url for m in live] + [n.client_url])
    t0, t0_wall = time.monotonic(), time.time()
    n.start(boot)
    wait_for(done, 60, "3 healthy voters", interval=0.005)
    took = time.monotonic() - t0
    if show_profile:
        profile(t0_wall, n.proc.log(), leader_m.proc.log(), took)
    return took


# ---- etcd -----------------------------------------------------------------

def etcd_round(group):
    names = ["e1", "e2", "e3"]
    peers = {n: "http://127.0.0.1:%d" % free_port() for n in names}
    clients = {n: "http://127.0.0.1:%d" % free_port() for n in names}
    cluster = ",".join("%s=%s" % (n, peers[n]) for n in names)
    tok = "bench-%d" % time.monotonic_ns()
    procs = {}
    for n in names:
        argv = [ETCD, "--name", n, "--data-dir", group.path(n + ".etcd"),
                "--listen-peer-urls", peers[n], "--initial-advertise-peer-urls", peers[n],
                "--listen-client-urls", clients[n], "--advertise-client-urls", clients[n],
                "--initial-cluster", cluster, "--initial-cluster-token", tok,
                "--heartbeat-interval", "50", "--election-timeout", "500",
                "--logger", "zap", "--log-outputs", "stderr"]
        procs[n] = group.start("etcd-" + n, argv)
    wait_for(lambda: all(healthy(clients[n]) for n in names), 60, "etcd healthy")
    time.sleep(SETTLE_S)
    for i in range(50):
        etcdctl(clients["e1"], "put", "k%d" % i, "v")
    status = etcdctl(clients["e1"], "endpoint", "status")[0]["Status"]
    leader = status["leader"]
    members = etcdctl(clients["e1"], "member", "list")["members"]
    victim = next(m for m in members if m["ID"] != leader)
    vname = victim["name"]
    procs[vname].kill()
    procs[vname].wait(10)
    shutil.rmtree(group.path(vname + ".etcd"))
    live = [n for n in names if n != vname]
    time.sleep(THRESHOLD_S + 0.5)
    new_peer, new_client = "http://127.0.0.1:%d" % free_port(), "http://127.0.0.1:%d" % free_port()
    done = done_check(clients[live[0]], [clients[n] for n in live] + [new_client])
    # The scripted manual procedure, as fast as it can go.
    t0 = time.monotonic()
    ep = clients[live[0]]
    etcdctl(ep, "member", "remove", "%x" % victim["ID"])
    added = None
    while added is None:  # "unhealthy cluster" right after the removal: retry
        try:
            added = etcdctl(ep, "member", "add", "e4", "--peer-urls=" + new_peer)
        except RuntimeError:
            time.sleep(0.01)
    init = ",".join("%s=%s" % (m.get("name") or "e4", m["peerURLs"][0])
                    for m in added["members"])
    argv = [ETCD, "--name", "e4", "--data-dir", group.path("e4.etcd"),
            "--listen-peer-urls", new_peer, "--initial-advertise-peer-urls", new_peer,
            "--listen-client-urls", new_client, "--advertise-client-urls", new_client,
            "--initial-cluster", init, "--initial-cluster-state", "existing",
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--logger", "zap", "--log-outputs", "stderr"]
    group.start("etcd-e4", argv)
    wait_for(done, 60, "etcd: 3 healthy voters", interval=0.005)
    return time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--systems", default="muster-auto,muster-srv,etcd-manual",
                    help="comma-separated: muster-auto, muster-srv, etcd-manual")
    ap.add_argument("--profile", action="store_true",
                    help="print each muster round's steps from the log timestamps")
    args = ap.parse_args()
    rounds = {"muster-auto": lambda g: muster_round(g, show_profile=args.profile),
              "muster-srv": lambda g: muster_round(g, srv=True, show_profile=args.profile),
              "etcd-manual": etcd_round}
    systems = [s for s in args.systems.split(",") if s]
    for s in systems:
        if s not in rounds:
            ap.error("unknown system " + s)
    results = {s: [] for s in systems}
    for r in range(args.rounds):
        # Each system goes first in turn (the machine is shared and noisy).
        order = systems[r % len(systems):] + systems[:r % len(systems)]
        for name in order:
            fn = rounds[name]
            group = ProcessGroup(prefix="muster-replace-bench-")
            try:
                t = fn(group)
            finally:
                group.close()
            results[name].append(t)
            print(json.dumps({"round": r, "system": name, "seconds": round(t, 3)}), flush=True)
    print("\n| path | rounds | median s | min s | max s |\n|---|---:|---:|---:|---:|")
    for name, ts in results.items():
        print("| %s | %d | %.2f | %.2f | %.2f |" % (name, len(ts), statistics.median(ts),
                                                   min(ts), max(ts)))


if __name__ == "__main__":
    main()
