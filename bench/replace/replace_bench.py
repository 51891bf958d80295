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
  - etcd-manual: `etcdctl member remove <dead>`, `etcdctl member add new
    --peer-urls=...`, then a new etcd started with
    --initial-cluster-state existing and the cluster `member add` printed;

and stops when the cluster has three started voters, none a learner, and
every member answers /health.  Output: one line per round and a summary
(median, min, max).

Standard library only; reuses tests/lib/harness.py and the bootstrap
tests' helpers (free ports, process group, muster-discovery).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration", "bootstrap"))
from bootstrap import BootCluster, Discovery, ProcessGroup, free_port, wait_for  # noqa: E402

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"
THRESHOLD_S = 1.0
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


# ---- muster ---------------------------------------------------------------

def muster_round(group):
    d = Discovery(group)
    url = d.new_token(3)
    c = BootCluster(3, group=group)
    c.start(["--discovery", url])
    c.wait_healthy(timeout=60)
    time.sleep(SETTLE_S)
    m1 = c.members[0]
    for i in range(50):
        m1.put("k%d" % i, "v")
    st, j = m1.call("/v3/maintenance/status", {})
    leader = j["leader"]
    victim = next(m for m in c.members
                  if m.status()["header"]["member_id"] != leader)
    victim.kill9()
    shutil.rmtree(victim.data_dir)
    live = [m for m in c.members if m is not victim]
    time.sleep(THRESHOLD_S + 0.5)
    t0 = time.monotonic()
    n = c.add("new")
    n.start(["--discovery", url, "--discovery-replace-dead", "%ds" % THRESHOLD_S])

    def done():
        try:
            st, j = live[0].call("/v3/cluster/member/list", {})
            return (st == 200 and three_voters(j) and n.healthy()
                    and all(m.healthy() for m in live))
        except OSError:
            return False
    wait_for(done, 60, "3 healthy voters", interval=0.005)
    return time.monotonic() - t0


# ---- etcd -----------------------------------------------------------------

def etcd_healthy(client):
    import urllib.request
    try:
        with urllib.request.urlopen(client + "/health", timeout=2) as r:
            return b'"true"' in r.read()
    except OSError:
        return False


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
    wait_for(lambda: all(etcd_healthy(clients[n]) for n in names), 60, "etcd healthy")
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
    # The scripted manual procedure, as fast as it can go.
    t0 = time.monotonic()
    ep = clients[live[0]]
    etcdctl(ep, "member", "remove", "%x" % victim["ID"])
    new_peer, new_client = "http://127.0.0.1:%d" % free_port(), "http://127.0.0.1:%d" % free_port()
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

    def done():
        try:
            return (three_voters(etcdctl(ep, "member", "list")) and etcd_healthy(new_client)
                    and all(etcd_healthy(clients[n]) for n in live))
        except (RuntimeError, subprocess.TimeoutExpired):
            return False
    wait_for(done, 60, "etcd: 3 healthy voters", interval=0.005)
    return time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    results = {"muster-auto": [], "etcd-manual": []}
    for r in range(args.rounds):
        order = [("muster-auto", muster_round), ("etcd-manual", etcd_round)]
        if r % 2:
            order.reverse()
        for name, fn in order:
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
