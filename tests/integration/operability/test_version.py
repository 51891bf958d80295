"""/version and `musterctl version` as etcd's: the same keys in the same
order on the client and peer ports, versions a client parses as 3.4, and
etcdctl's two-line shape."""

import json
import re
import subprocess
import unittest

from ops import MUSTERCTL, ETCDCTL, ProcessGroup, etcd_cluster, etcdctl, request, single_member, wait_for


def pairs(body):
    return json.loads(body, object_pairs_hook=list)


class VersionTest(unittest.TestCase):
    def setUp(self):
        self.group = ProcessGroup("muster-ops-version-")
        self.addCleanup(self.group.close)

    def test_version_endpoints_match_etcd(self):
        etcd = etcd_cluster(self.group, 1)[0]
        c = single_member(self.group)
        m = c.members[0]
        wait_for(m.healthy, 30, "member healthy")
        for port_kind in ("client", "peer"):
            with self.subTest(port=port_kind):
                e_url = etcd.client_url if port_kind == "client" else etcd.peer_url
                m_url = m.client_url if port_kind == "client" else m.peer_url
                st_e, h_e, b_e = request(e_url, "GET", "/version")
                st_m, h_m, b_m = request(m_url, "GET", "/version")
                self.assertEqual((st_m, h_m["content-type"]), (st_e, h_e["content-type"]))
                theirs, ours = pairs(b_e), pairs(b_m)
                self.assertEqual([k for k, _ in ours], [k for k, _ in theirs])
                self.assertEqual(dict(ours)["etcdcluster"], dict(theirs)["etcdcluster"])
                self.assertRegex(dict(ours)["etcdserver"], r"^3\.4\.\d+$")
        # What clientv3 reads: Maintenance.Status over gRPC.
        r = etcdctl(m.client_url, "endpoint", "status", "-w", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(json.loads(r.stdout)[0]["Status"]["version"], r"^3\.4\.\d+$")
        # And the server version is a metric, as etcd's.
        _, _, metrics = request(m.client_url, "GET", "/metrics")
        self.assertRegex(metrics.decode(), r'etcd_server_version\{server_version="3\.4\.\d+"\} 1')

    def test_musterctl_version_has_etcdctls_lines(self):
        ours = subprocess.run([MUSTERCTL, "version"], capture_output=True, text=True).stdout
        theirs = subprocess.run([ETCDCTL, "version"], capture_output=True, text=True,
                                env={"ETCDCTL_API": "3"}).stdout
        o, t = ours.splitlines(), theirs.splitlines()
        self.assertEqual(len(o), len(t))
        self.assertTrue(o[0].startswith("musterctl version: "))
        self.assertEqual(o[1], t[1])  # "API version: 3.4"


if __name__ == "__main__":
    unittest.main(verbosity=2)
