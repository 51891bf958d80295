"""Three-member clusters of etcd 3.4 or muster, started with the same flags,
for the tests that run etcd's own v3 clients (etcdctl, clientv3, npm etcd3)
against both.

    group = ProcessGroup("muster-interop-")
    c = V3Cluster(group, "muster", extra=["--max-txn-ops", "4"]).start()
    c.wait_ready()
    c.endpoints  # ["http://127.0.0.1:port", ...]

MUSTER_V3_SYSTEMS (default "etcd,muster") names the two systems the
comparison tests run; "etcd,etcd" checks that a test's normalisation makes
two etcd clusters compare equal.
"""

import json
import os
import signal
import subprocess
import time

from harness import ETCD, ETCDCTL, free_port, wait_for

BIN_DIR = os.environ.get("MUSTER_BIN_DIR", "")
MUSTER = os.path.join(BIN_DIR, "muster") if BIN_DIR else "muster"
ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
GENCERTS = os.path.join(ROOT, "deploy", "certs", "gencerts.sh")


def systems():
    s = os.environ.get("MUSTER_V3_SYSTEMS", "etcd,muster").split(",")
    assert len(s) == 2 and all(k in ("etcd", "muster") for k in s), s
    return s


def make_certs(out):
    """cfssl certificates (deploy/certs/gencerts.sh) for localhost/127.0.0.1:
    ca.pem, server.pem, server-key.pem, client.pem, client-key.pem ..."""
    r = subprocess.run([GENCERTS, out, "localhost", "127.0.0.1"], capture_output=True,
                       text=True, timeout=120)
    if r.returncode != 0:
        raise AssertionError("gencerts.sh failed (%d):\n%s" % (r.returncode, r.stderr))
    return out


class V3Member:
    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self.client_port = free_port()
        self.peer_port = free_port()
        self.data_dir = cluster.group.path("%s-%s.data" % (cluster.label, name))
        self.proc = None

    @property
    def client_url(self):
        return "%s://127.0.0.1:%d" % ("https" if self.cluster.certs else "http", self.client_port)

    @property
    def peer_url(self):
        return "http://127.0.0.1:%d" % self.peer_port

    def argv(self):
        c = self.cluster
        a = [c.binary, "--name", self.name, "--data-dir", self.data_dir,
             "--listen-client-urls", self.client_url,
             "--advertise-client-urls", self.client_url,
             "--listen-peer-urls", self.peer_url,
             "--initial-advertise-peer-urls", self.peer_url,
             "--initial-cluster", c.initial_cluster(),
             "--initial-cluster-token", "v3-" + c.label,
             "--initial-cluster-state", "new",
             "--heartbeat-interval", str(c.heartbeat_ms),
             "--election-timeout", str(c.election_ms)]
        if c.certs:
            d = c.certs
            a += ["--cert-file", os.path.join(d, "server.pem"),
                  "--key-file", os.path.join(d, "server-key.pem"),
                  "--trusted-ca-file", os.path.join(d, "ca.pem"), "--client-cert-auth"]
        if c.kind == "etcd":
            a += ["--logger", "zap", "--log-outputs", "stderr"]
        return a + list(c.extra)

    def start(self):
        self.proc = self.cluster.group.start(
            "%s-%s-%d" % (self.cluster.label, self.name, int(time.monotonic() * 1000)), self.argv())
        return self

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def kill9(self):
        self.proc.kill(signal.SIGKILL)
        self.proc.wait(10)


class V3Cluster:
    """Three members of `kind` ("etcd" or "muster") on free loopback ports."""

    def __init__(self, group, kind, label=None, size=3, extra=(), certs=None,
                 heartbeat_ms=100, election_ms=1000):
        self.group = group
        self.kind = kind
        self.label = label or kind
        self.binary = ETCD if kind == "etcd" else MUSTER
        self.extra = list(extra)
        self.certs = certs
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.members = [V3Member(self, "m%d" % (i + 1)) for i in range(size)]

    def initial_cluster(self):
        return ",".join("%s=%s" % (m.name, m.peer_url) for m in self.members)

    @property
    def endpoints(self):
        return [m.client_url for m in self.members]

    def start(self):
        for m in self.members:
            m.start()
        return self

    def ctl_env(self):
        env = dict(os.environ, ETCDCTL_API="3")
        for k in list(env):
            if k.startswith("ETCDCTL_") and k != "ETCDCTL_API":
                del env[k]
        if self.certs:
            env.update(ETCDCTL_CACERT=os.path.join(self.certs, "ca.pem"),
                       ETCDCTL_CERT=os.path.join(self.certs, "client.pem"),
                       ETCDCTL_KEY=os.path.join(self.certs, "client-key.pem"))
        return env

    def ctl(self, *args, endpoints=None, timeout=20, input=None):
        """Runs etcdctl 3.4: CompletedProcess with text stdout/stderr."""
        eps = endpoints or self.endpoints
        env = self.ctl_env()
        env["ETCDCTL_ENDPOINTS"] = ",".join(eps)
        return subprocess.run([ETCDCTL, "--dial-timeout", "3s", "--command-timeout", "8s"] +
                              list(args), env=env, capture_output=True, text=True,
                              timeout=timeout, input=input)

    def status(self, member):
        r = self.ctl("endpoint", "status", "-w", "json", endpoints=[member.client_url])
        if r.returncode != 0:
            return None
        return json.loads(r.stdout)[0]["Status"]

    def leader(self):
        """The member every live member names as leader, or None."""
        ids = {}
        leaders = set()
        for m in self.members:
            if not m.alive():
                continue
            s = self.status(m)
            if s is None or not s.get("leader"):
                return None
            ids[s["header"]["member_id"]] = m
            leaders.add(s["leader"])
        if len(leaders) != 1:
            return None
        return ids.get(leaders.pop())

    def wait_ready(self, timeout=60):
        """Every member answers `endpoint health` and all agree on a leader."""
        def dead():
            for m in self.members:
                if not m.alive():
                    raise AssertionError("%s %s exited:\n%s" % (self.kind, m.name,
                                                                 m.proc.log()[-3000:]))

        def healthy():
            dead()
            r = self.ctl("endpoint", "health", timeout=15)
            return r.returncode == 0
        wait_for(healthy, timeout, "%s cluster to be healthy" % self.kind, interval=0.1)
        return wait_for(lambda: dead() or self.leader(), timeout,
                        "%s cluster to agree on a leader" % self.kind, interval=0.1)
