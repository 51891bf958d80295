"""Shared helpers for the operability tests: single members and clusters of
real muster processes (tests/integration/node/cluster.py), real etcd 3.4
beside them, and waits with deadlines."""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "node"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "lib"))

from cluster import MUSTER, Cluster, Member  # noqa: E402,F401
from harness import ETCD, ETCDCTL, Etcd, ProcessGroup, free_port, request, wait_for  # noqa: E402,F401

BIN_DIR = os.environ.get("MUSTER_BIN_DIR", "")
MUSTERCTL = os.path.join(BIN_DIR, "musterctl") if BIN_DIR else "musterctl"


def etcd_cluster(group, size, extra=()):
    """`size` real etcd 3.4 members forming one cluster; returns them once
    every one is healthy."""
    import harness
    members = []
    ports = [(free_port(), free_port()) for _ in range(size)]
    initial = ",".join("e%d=http://127.0.0.1:%d" % (i, p) for i, (p, _) in enumerate(ports))
    for i, (peer, client) in enumerate(ports):
        e = harness.Etcd.__new__(harness.Etcd)
        e.group, e.name = group, "e%d" % i
        e.peer_port, e.client_port = peer, client
        e.data_dir = group.path(e.name + ".etcd")
        e.peer_url = "http://127.0.0.1:%d" % peer
        e.client_url = "http://127.0.0.1:%d" % client
        argv = [ETCD, "--name", e.name, "--data-dir", e.data_dir,
                "--listen-peer-urls", e.peer_url, "--initial-advertise-peer-urls", e.peer_url,
                "--listen-client-urls", e.client_url, "--advertise-client-urls", e.client_url,
                "--initial-cluster", initial, "--initial-cluster-token", "ops-etcd",
                "--heartbeat-interval", "50", "--election-timeout", "500",
                "--logger", "zap", "--log-outputs", "stderr"] + list(extra)
        e.proc = group.start("etcd-" + e.name, argv)
        members.append(e)
    for e in members:
        wait_for(e.healthy, 60, "etcd %s to be healthy" % e.name, interval=0.1)
    return members


def etcdctl(endpoints, *args, timeout=30, env=None):
    e = dict(os.environ, ETCDCTL_API="3")
    if env:
        e.update(env)
    return subprocess.run([ETCDCTL, "--endpoints", endpoints, "--dial-timeout", "3s",
                           "--command-timeout", "10s"] + list(args),
                          env=e, capture_output=True, text=True, timeout=timeout)


def single_member(group, name="m1", extra=(), env=None):
    """A one-member muster cluster, started; not waited for."""
    c = Cluster(1, group=group, token="ops-" + name)
    c.members[0].name = name
    c.members[0].extra = list(extra)
    c.members[0].env = env
    c.start()
    return c
