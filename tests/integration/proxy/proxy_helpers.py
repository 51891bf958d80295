"""A muster proxy and the clusters it fronts, as real processes on loopback.

Members are either muster members (tests/integration/node/cluster.py) or real
etcd 3.4 members: both serve GET <peer-url>/members, which is how a proxy
learns the members' client URLs.
"""

import base64
import http.client
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "node"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "lib"))
from harness import ETCD, ProcessGroup, free_port, wait_for  # noqa: E402,F401
from cluster import MUSTER, Cluster  # noqa: E402,F401


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def unb64(s):
    return base64.b64decode(s).decode()


def call(port, path, body=None, method="POST", headers=None, timeout=10):
    """One request on a fresh connection: (status, headers dict lower-case,
    parsed JSON body or text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None
        h = dict(headers or {})
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        text = r.read().decode("utf-8", "replace")
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        try:
            return r.status, hdrs, json.loads(text) if text else None
        except ValueError:
            return r.status, hdrs, text
    finally:
        conn.close()


class EtcdMember:
    """A real etcd 3.4 member of a static cluster (v2 API enabled)."""

    def __init__(self, group, name):
        self.group = group
        self.name = name
        self.client_port = free_port()
        self.peer_port = free_port()
        self.data_dir = group.path(name + ".etcd")
        self.proc = None

    @property
    def client_url(self):
        return "http://127.0.0.1:%d" % self.client_port

    @property
    def peer_url(self):
        return "http://127.0.0.1:%d" % self.peer_port

    def start(self, initial_cluster):
        self.proc = self.group.start("etcd-" + self.name, [
            ETCD, "--name", self.name, "--data-dir", self.data_dir,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
            "--initial-cluster", initial_cluster, "--initial-cluster-token", "proxy-test",
            "--heartbeat-interval", "50", "--election-timeout", "500", "--enable-v2",
            "--logger", "zap", "--log-outputs", "stderr"])

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def kill9(self):
        self.proc.kill(signal.SIGKILL)
        self.proc.wait(10)

    def healthy(self):
        try:
            st, _, j = call(self.client_port, "/health", method="GET", timeout=3)
            return st == 200 and isinstance(j, dict) and j.get("health") == "true"
        except OSError:
            return False


class EtcdCluster:
    def __init__(self, size=3):
        self.group = ProcessGroup(prefix="muster-proxy-test-")
        self.members = [EtcdMember(self.group, "e%d" % (i + 1)) for i in range(size)]

    def initial_cluster(self):
        return ",".join("%s=%s" % (m.name, m.peer_url) for m in self.members)

    def start(self):
        for m in self.members:
            m.start(self.initial_cluster())
        return self

    def wait_healthy(self, timeout=30):
        for m in self.members:
            wait_for(m.healthy, timeout, "%s to be healthy" % m.name)

    def close(self):
        self.group.close()


class Proxy:
    """`muster --proxy ...` in front of a cluster."""

    def __init__(self, group, name="proxy"):
        self.group = group
        self.name = name
        self.port = free_port()
        self.data_dir = group.path(name + ".data")
        self.proc = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, args):
        """`args` after the data dir and the listen/advertise URLs."""
        argv = [MUSTER, "--data-dir", self.data_dir,
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url] + list(args)
        self.proc = self.group.start(self.name + "-%d" % int(time.monotonic() * 1000), argv)
        return self

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def stop(self):
        self.proc.kill(signal.SIGTERM)
        if self.proc.wait(15) is None:
            self.proc.kill(signal.SIGKILL)
            self.proc.wait(10)

    def call(self, path, body=None, method="POST", **kw):
        return call(self.port, path, body, method, **kw)

    def wait_serving(self, timeout=20):
        def ok():
            if not self.alive():
                raise AssertionError("proxy exited:\n" + self.proc.log()[-3000:])
            try:
                st, _, j = self.call("/health", method="GET", timeout=3)
            except OSError:
                return False
            return st == 200 and isinstance(j, dict) and j.get("health") == "true"
        wait_for(ok, timeout, "the proxy to forward /health")

    def put(self, key, value, **kw):
        body = {"key": b64(key), "value": b64(value)}
        body.update(kw)
        return self.call("/v3/kv/put", body)

    def value(self, key):
        st, _, j = self.call("/v3/kv/range", {"key": b64(key)})
        if st != 200:
            raise AssertionError("range %s: %s %s" % (key, st, j))
        kvs = j.get("kvs", [])
        return unb64(kvs[0]["value"]) if kvs else None


class WatchStream:
    """A /v3/watch stream read line by line on a thread."""

    def __init__(self, port, create_request):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.conn.request("POST", "/v3/watch", body=json.dumps({"create_request": create_request}),
                          headers={"Content-Type": "application/json"})
        self.sock = self.conn.sock  # kept: the response holds it past conn.close()
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = {k.lower(): v for k, v in self.resp.getheaders()}
        self.lines = []
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    break
                self.lines.append(json.loads(line))
        except (OSError, ValueError, http.client.HTTPException, AttributeError):
            # (AttributeError: http.client's reader after close() from
            # another thread.)
            pass
        self.ended.set()

    def events(self):
        out = []
        for j in list(self.lines):
            for ev in j.get("result", {}).get("events", []):
                out.append((ev.get("type", "PUT"), unb64(ev["kv"]["key"]),
                            unb64(ev["kv"].get("value", "")) if ev["kv"].get("value") else ""))
        return out

    def close(self):
        """Hangs up at once (closing the connection object alone leaves the
        socket open while the reader thread holds the response)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()


def member_id_of(port):
    """The member ID (decimal string, as the gateway writes it) behind a
    client port."""
    st, _, j = call(port, "/v3/maintenance/status", {})
    if st != 200:
        raise AssertionError("status on port %d: %s %s" % (port, st, j))
    return j["header"]["member_id"]


def metric(port, name):
    """Sum of every sample of `name` in a /metrics answer, or None."""
    st, _, text = call(port, "/metrics", method="GET")
    if st != 200:
        return None
    total, seen = 0.0, False
    for line in str(text).splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else None


def peer_serves_members(peer_url):
    """True when GET <peer-url>/members answers the JSON member list."""
    u = urllib.parse.urlsplit(peer_url)
    try:
        st, _, j = call(u.port, "/members", method="GET", timeout=3)
    except OSError:
        return False
    return st == 200 and isinstance(j, list)
