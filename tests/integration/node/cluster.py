"""A muster cluster of real processes on loopback, for the integration tests.

Builds on the shared harness (tests/lib/harness.py): free ports, deadlines,
a ProcessGroup that kills everything at the end.
"""

import base64
import http.client
import json
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "lib"))
from harness import ProcessGroup, free_port, wait_for  # noqa: E402

BIN_DIR = os.environ.get("MUSTER_BIN_DIR", "")
MUSTER = os.path.join(BIN_DIR, "muster") if BIN_DIR else "muster"

HEARTBEAT_MS = 50
ELECTION_MS = 500


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def unb64(s):
    return base64.b64decode(s).decode()


class Member:
    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self.client_port = free_port()
        self.peer_port = free_port()
        self.data_dir = cluster.group.path(name + ".data")
        self.proc = None
        self.extra = []
        self.env = None  # extra environment variables

    @property
    def client_url(self):
        return "http://127.0.0.1:%d" % self.client_port

    @property
    def peer_url(self):
        return "http://127.0.0.1:%d" % self.peer_port

    def start(self, token=None, initial_cluster=None, extra=None):
        args = [MUSTER, "--name", self.name, "--data-dir", self.data_dir,
                "--listen-client-urls", self.client_url,
                "--advertise-client-urls", self.client_url,
                "--listen-peer-urls", self.peer_url,
                "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", initial_cluster or self.cluster.initial_cluster(),
                "--initial-cluster-token", token or self.cluster.token,
                "--heartbeat-interval", str(HEARTBEAT_MS),
                "--election-timeout", str(ELECTION_MS)]
        args += list(extra if extra is not None else self.extra)
        env = None
        if self.env:
            env = dict(os.environ)
            env.update(self.env)
        self.proc = self.cluster.group.start(self.name + "-%d" % int(time.monotonic() * 1000), args,
                                             env=env)
        return self

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def kill9(self):
        self.proc.kill(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        self.proc.kill(signal.SIGTERM)
        if self.proc.wait(15) is None:
            self.kill9()

    # --- HTTP ---
    def call(self, path, body=None, method="POST", timeout=10):
        conn = http.client.HTTPConnection("127.0.0.1", self.client_port, timeout=timeout)
        try:
            data = None if body is None else (body if isinstance(body, (bytes, str)) else json.dumps(body))
            conn.request(method, path, body=data,
                         headers={"Content-Type": "application/json"} if data is not None else {})
            r = conn.getresponse()
            text = r.read().decode("utf-8", "replace")
            try:
                return r.status, json.loads(text) if text else None
            except ValueError:
                return r.status, text
        finally:
            conn.close()

    def put(self, key, value, **kw):
        body = {"key": b64(key), "value": b64(value)}
        body.update(kw)
        return self.call("/v3/kv/put", body)

    def get(self, key, serializable=False, **kw):
        body = {"key": b64(key)}
        if serializable:
            body["serializable"] = True
        body.update(kw)
        return self.call("/v3/kv/range", body)

    def value(self, key, serializable=False):
        st, j = self.get(key, serializable)
        if st != 200:
            raise AssertionError("range %s on %s: %s %s" % (key, self.name, st, j))
        kvs = j.get("kvs", [])
        return unb64(kvs[0]["value"]) if kvs else None

    def status(self):
        st, j = self.call("/v3/maintenance/status", {})
        return j if st == 200 else None

    def healthy(self):
        try:
            st, j = self.call("/health", method="GET", timeout=3)
            return st == 200 and j.get("health") == "true"
        except OSError:
            return False


class Cluster:
    def __init__(self, size, group=None, token="muster-test-cluster"):
        self.group = group or ProcessGroup(prefix="muster-node-test-")
        self.token = token
        self.members = [Member(self, "m%d" % (i + 1)) for i in range(size)]

    def initial_cluster(self):
        return ",".join("%s=%s" % (m.name, m.peer_url) for m in self.members)

    def start(self):
        for m in self.members:
            m.start()
        return self

    def wait_healthy(self, timeout=30, members=None):
        for m in members or self.members:
            wait_for(lambda: (m.alive() or self._died(m)) and m.healthy(), timeout,
                     "%s to be healthy" % m.name)

    def _died(self, m):
        raise AssertionError("%s exited:\n%s" % (m.name, m.proc.log()[-3000:]))

    def leader(self, members=None):
        """The member every live member agrees is leader, or None."""
        seen = set()
        for m in members or self.members:
            if not m.alive():
                continue
            s = m.status()
            if s is None or s.get("leader") in (None, "0"):
                return None
            seen.add(s["leader"])
        if len(seen) != 1:
            return None
        lead = seen.pop()
        for m in self.members:
            s = m.status() if m.alive() else None
            if s and s["header"]["member_id"] == lead:
                return m
        return None

    def close(self):
        self.group.close()
