"""A member that has not joined yet holds client connections, as etcd does.

One member of a three-member cluster is started alone: it cannot join (no
quorum).  Its client port accepts TCP connections, and a request sent on one
is answered only once the other members start and the cluster forms -- the
same as etcd 3.4, which binds its client listeners at once and serves them
once ready.  Its --listen-metrics-urls port answers at once: /health with
503 {"health":"false"}, /metrics with 200.
"""

import json
import select
import socket
import unittest

from ops import Cluster, ProcessGroup, etcd_cluster, free_port, request, wait_for, ETCD


def send_health(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    return s


def answered_within(sock, seconds):
    r, _, _ = select.select([sock], [], [], seconds)
    return bool(r)


def read_all(sock, seconds=20):
    sock.settimeout(seconds)
    chunks = []
    while True:
        c = sock.recv(65536)
        if not c:
            break
        chunks.append(c)
    return b"".join(chunks)


class NotReadyTest(unittest.TestCase):
    def setUp(self):
        self.group = ProcessGroup("muster-ops-notready-")
        self.addCleanup(self.group.close)

    def check(self, first_client_port, metrics_port, start_rest):
        # The port takes the connection; the request waits.
        held = send_health(first_client_port)
        self.addCleanup(held.close)
        self.assertFalse(answered_within(held, 1.5), "answered before the cluster formed")
        # The metrics port is served at once: not healthy yet.
        st, _, body = request("http://127.0.0.1:%d" % metrics_port, "GET", "/health")
        self.assertEqual((st, json.loads(body)["health"]), (503, "false"))
        st, _, body = request("http://127.0.0.1:%d" % metrics_port, "GET", "/metrics")
        self.assertEqual(st, 200)
        self.assertIn(b"etcd_server_has_leader 0", body)
        start_rest()
        text = read_all(held).decode()
        self.assertTrue(text.startswith("HTTP/1.1 200"), text)
        self.assertIn('{"health":"true"}', text)

    def test_muster_holds_client_connections_until_it_has_joined(self):
        c = Cluster(3, group=self.group)
        metrics_port = free_port()
        first = c.members[0]
        first.extra = ["--listen-metrics-urls", "http://127.0.0.1:%d" % metrics_port]
        first.start()
        wait_for(lambda: request("http://127.0.0.1:%d" % metrics_port, "GET", "/health")[0] == 503,
                 20, "the metrics port to answer")

        def rest():
            for m in c.members[1:]:
                m.start()
        self.check(first.client_port, metrics_port, rest)

    def test_etcd_does_the_same(self):
        # The reference: etcd 3.4, one of three members started first.
        import harness
        ports = [(free_port(), free_port()) for _ in range(3)]
        metrics_port = free_port()
        initial = ",".join("e%d=http://127.0.0.1:%d" % (i, p) for i, (p, _) in enumerate(ports))

        def start(i):
            peer, client = ports[i]
            argv = [ETCD, "--name", "e%d" % i, "--data-dir", self.group.path("e%d.etcd" % i),
                    "--listen-peer-urls", "http://127.0.0.1:%d" % peer,
                    "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % peer,
                    "--listen-client-urls", "http://127.0.0.1:%d" % client,
                    "--advertise-client-urls", "http://127.0.0.1:%d" % client,
                    "--initial-cluster", initial, "--heartbeat-interval", "50",
                    "--election-timeout", "500", "--logger", "zap", "--log-outputs", "stderr"]
            if i == 0:
                argv += ["--listen-metrics-urls", "http://127.0.0.1:%d" % metrics_port]
            self.group.start("etcd-e%d" % i, argv)
        start(0)
        wait_for(lambda: request("http://127.0.0.1:%d" % metrics_port, "GET", "/health")[0] == 503,
                 20, "etcd's metrics port to answer")
        self.check(ports[0][1], metrics_port, lambda: (start(1), start(2)))
        del harness


if __name__ == "__main__":
    unittest.main(verbosity=2)
