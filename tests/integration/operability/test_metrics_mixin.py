"""Every metric etcd's Grafana dashboard and alert rules (contrib/mixin)
query exists on a live muster member with etcd's name, type, labels and
buckets -- read with Prometheus' own text parser (python3-prometheus-client)
and compared with a live etcd 3.4 cluster given the same traffic."""

import os
import subprocess
import sys
import unittest

from ops import Cluster, ProcessGroup, etcd_cluster, etcdctl, request, wait_for
from etcd_mixin import MIXIN, STREAMS

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # pragma: no cover - install-deps installs it
    text_string_to_metric_families = None


# etcd's CounterVecs without a series until the first event: absent from
# etcd's /metrics before any send fails.  Muster exports them at 0.
ETCD_ONLY_AFTER_AN_EVENT = {"etcd_network_peer_sent_failures_total"}


def families(url):
    st, _, body = request(url, "GET", "/metrics")
    assert st == 200, st
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def name_of(family):
    # The parser strips _total from counters.
    return family.name + "_total" if family.type == "counter" else family.name


def traffic(endpoints):
    """The same client traffic for both: unary calls, a watch stream and a
    lease keep-alive stream, over gRPC with etcdctl."""
    for i in range(20):
        r = etcdctl(endpoints, "put", "mixin/%d" % i, "v%d" % i)
        assert r.returncode == 0, r.stderr
    assert etcdctl(endpoints, "get", "mixin/", "--prefix").returncode == 0
    r = etcdctl(endpoints, "lease", "grant", "60")
    assert r.returncode == 0, r.stderr
    lease = r.stdout.split()[1]
    assert etcdctl(endpoints, "lease", "keep-alive", "--once", lease).returncode == 0
    # A watch that ends by itself: etcdctl exits after the timeout.
    subprocess.run(["timeout", "2", "etcdctl", "--endpoints", endpoints, "watch", "mixin/0"],
                   env=dict(os.environ, ETCDCTL_API="3"), capture_output=True)


@unittest.skipIf(text_string_to_metric_families is None, "python3-prometheus-client missing")
class MixinMetricsTest(unittest.TestCase):
    def setUp(self):
        self.group = ProcessGroup("muster-ops-mixin-")
        self.addCleanup(self.group.close)

    def check_mixin(self, fams, who, peers):
        by_name = {name_of(f): f for f in fams.values()}
        for name, (typ, labels, buckets, selected) in MIXIN.items():
            with self.subTest(who=who, metric=name):
                if who == "etcd" and name in ETCD_ONLY_AFTER_AN_EVENT and name not in by_name:
                    continue  # etcd creates the series at the first failure
                self.assertTrue(name in by_name, "%s has no %s" % (who, name))
                f = by_name[name]
                self.assertEqual(f.type, typ)
                samples = [s for s in f.samples if not s.name.endswith(("_created",))]
                self.assertTrue(samples, name)
                for s in samples:
                    got = set(s.labels) - {"le"}
                    self.assertEqual(got, labels, "%s%s" % (s.name, s.labels))
                for k, v in selected.items():
                    self.assertIn(v, {s.labels.get(k) for s in samples}, (name, k))
                if buckets:
                    les = sorted({float(s.labels["le"]) for s in samples if "le" in s.labels
                                  and s.labels["le"] != "+Inf"})
                    self.assertEqual(len(les), len(buckets), (name, les))
                    for a, b in zip(les, buckets):
                        self.assertAlmostEqual(a, b, delta=b * 1e-9)
                if labels & {"To", "From"}:
                    ids = {s.labels.get("To") or s.labels.get("From") for s in samples}
                    # etcd also counts bytes from ID 0 (probes, streams
                    # before the handshake names the peer), and a peer whose
                    # bytes all arrived that way is never named: etcd names
                    # at least one peer, muster every peer.
                    least = 1 if who == "etcd" else peers
                    self.assertGreaterEqual(len(ids - {"0"}), least, (name, ids))
                    self.assertLessEqual(len(ids - {"0"}), peers, (name, ids))
        started = by_name["grpc_server_started_total"]
        for service, typ in STREAMS:
            self.assertTrue(any(s.labels["grpc_service"] == service and s.labels["grpc_type"] == typ
                                for s in started.samples), (who, service))
        return by_name

    def test_muster_exports_what_etcds_mixin_queries_as_etcd_does(self):
        etcds = etcd_cluster(self.group, 3, extra=["--metrics", "extensive"])
        c = Cluster(3, group=self.group)
        for m in c.members:
            m.extra = ["--metrics", "extensive"]
        c.start()
        c.wait_healthy(60)
        traffic(etcds[0].client_url)
        traffic(c.members[0].client_url)
        # Peer round trips are observed every few seconds, as etcd's prober.
        wait_for(lambda: all(
            any(s.name.endswith("_count") and s.value > 0
                for s in families(m.client_url)["etcd_network_peer_round_trip_time_seconds"].samples)
            for m in c.members), 30, "a peer round trip observed on every member", interval=0.5)
        # A member's per-peer series appear as bytes arrive from each peer:
        # wait (with a deadline) until muster names both peers.
        def peers_named(url, n):
            fams = {name_of(f): f for f in families(url).values()}
            for name, (_, labels, _, _) in MIXIN.items():
                if labels & {"To", "From"} and name in fams:
                    ids = {s.labels.get("To") or s.labels.get("From") for s in fams[name].samples}
                    if len(ids - {"0", None}) < n:
                        return False
            return True
        wait_for(lambda: peers_named(c.members[0].client_url, 2), 30,
                 "both peers in muster's peer series", interval=0.5)
        theirs = self.check_mixin(families(etcds[0].client_url), "etcd", 2)
        ours = self.check_mixin(families(c.members[0].client_url), "muster", 2)
        # Each method both serve has the same grpc_type as in etcd.
        def types(fams):
            return {(s.labels["grpc_service"], s.labels["grpc_method"]): s.labels["grpc_type"]
                    for s in fams["grpc_server_started_total"].samples}
        t_e, t_m = types(theirs), types(ours)
        common = set(t_e) & set(t_m)
        self.assertGreater(len(common), 20, common)
        for k in common:
            self.assertEqual(t_m[k], t_e[k], k)
        # Values that must move with the traffic.
        unary_ok = [s for s in ours["grpc_server_handled_total"].samples
                    if s.labels["grpc_method"] == "Put" and s.labels["grpc_code"] == "OK"]
        self.assertEqual(sum(s.value for s in unary_ok), 20)
        for fam in ("grpc_server_msg_received_total", "grpc_server_msg_sent_total"):
            puts = [s for s in ours[fam].samples if s.labels["grpc_method"] == "Put"]
            self.assertEqual(sum(s.value for s in puts), 20, fam)
        self.assertEqual(sum(s.value for s in ours["etcd_server_has_leader"].samples), 1)
        self.assertGreater(sum(s.value for s in ours["etcd_network_peer_sent_bytes_total"].samples), 0)
        self.assertGreater(sum(s.value for s in ours["process_resident_memory_bytes"].samples), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
