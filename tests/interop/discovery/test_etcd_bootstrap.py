"""Real etcd 3.4 bootstraps through muster-discovery.

Each scenario starts muster-discovery, creates a token, starts N etcd
processes together with --discovery <token URL>, and checks that exactly
`size` of them form the cluster (etcdctl member list), that they are the
first `size` registrations by createdIndex, and that every extra joiner fell
back to a v2 proxy (etcd's default --discovery-fallback=proxy).
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "lib"))
import harness  # noqa: E402
from harness import Discovery, Etcd, ProcessGroup, wait_for  # noqa: E402


class EtcdBootstrapThroughMusterDiscovery(unittest.TestCase):
    def setUp(self):
        self.group = ProcessGroup("muster-interop-discovery-")
        self.addCleanup(self.group.close)
        self.disc = Discovery(self.group, args=["--wait-timeout", "5s"])

    def bootstrap(self, discovery_url, token_path, size, joiners):
        try:
            self._bootstrap(discovery_url, token_path, size, joiners)
        except AssertionError as e:
            raise AssertionError("%s\n\nlogs:\n%s" % (e, self.group.dump_logs())) from None

    def _bootstrap(self, discovery_url, token_path, size, joiners):
        etcds = [Etcd(self.group, "n%d" % i, ["--discovery", discovery_url])
                 for i in range(joiners)]

        def settled():
            for e in etcds:
                if not e.proc.alive() and not e.is_proxy():
                    raise AssertionError("etcd %s exited:\n%s" % (e.name, e.proc.log()[-3000:]))
            proxies = [e for e in etcds if e.is_proxy()]
            members = [e for e in etcds if e not in proxies and e.healthy()]
            return (len(proxies), len(members)) == (joiners - size, size) and (members, proxies)

        members, proxies = wait_for(settled, 60, "%d healthy members and %d proxies" %
                                    (size, joiners - size), interval=0.1)
        want = sorted(e.name for e in members)

        # Every member agrees on the membership: exactly the `size` members.
        for e in members:
            names = wait_for(lambda: e.member_names(), 15,
                             "etcdctl member list on %s" % e.name, interval=0.2)
            self.assertEqual(names, want, "member list on %s" % e.name)

        # They are the first `size` registrations by createdIndex.
        status, headers, body = harness.get_json(self.disc.url + token_path)
        self.assertEqual(status, 200, body)
        self.assertTrue(body["node"]["dir"])
        nodes = sorted(body["node"]["nodes"], key=lambda n: n["createdIndex"])
        self.assertGreaterEqual(len(nodes), size)
        self.assertLessEqual(len(nodes), joiners)
        first = sorted(n["value"].split("=", 1)[0] for n in nodes[:size])
        self.assertEqual(first, want)
        # Under /v2/keys/ the keys are the v2 API's, without that prefix
        # (as etcd answers); a public token's keys are its path.
        key_prefix = token_path[len("/v2/keys"):] if token_path.startswith("/v2/keys/") \
            else token_path
        for n in nodes:
            self.assertTrue(n["key"].startswith(key_prefix + "/"), n["key"])
        self.assertGreaterEqual(int(headers["x-etcd-index"]), nodes[-1]["modifiedIndex"])

        # The cluster works: a write through one member is read from another.
        env = dict(os.environ, ETCDCTL_API="3")
        import subprocess
        put = subprocess.run([harness.ETCDCTL, "--endpoints", members[0].client_url, "put",
                              "interop", "bootstrapped"], env=env, capture_output=True,
                             timeout=15)
        self.assertEqual(put.returncode, 0, put.stderr)
        get = subprocess.run([harness.ETCDCTL, "--endpoints", members[-1].client_url, "get",
                              "interop", "--print-value-only"], env=env, capture_output=True,
                             timeout=15)
        self.assertEqual(get.stdout.decode().strip(), "bootstrapped")

        # The extra joiners are proxies, not members, and have no member dir
        # in use (etcd 3.4 may leave an empty member/snap behind, see
        # research/discovery.md 1.12, but never a WAL).
        for p in proxies:
            self.assertNotIn(p.name, want)
            self.assertFalse(os.path.isdir(os.path.join(p.data_dir, "member", "wal")),
                             "proxy %s has a WAL" % p.name)

    def test_size3_four_joiners_three_members_one_proxy(self):
        url = self.disc.new_token(3)
        self.assertRegex(url, r"^http://127\.0\.0\.1:\d+/[0-9a-f]{32}$")
        path = url[len(self.disc.url):]
        self.bootstrap(url, path, 3, 4)

    def test_size5_seven_joiners(self):
        url = self.disc.new_token(5)
        path = url[len(self.disc.url):]
        self.bootstrap(url, path, 5, 7)

    def test_path_prefix_named_token(self):
        # Seed 003's form: a self-hosted discovery URL with a path prefix,
        # the token created by writing its size key.
        name = "interop-" + os.urandom(8).hex()
        path = "/v2/keys/discovery/" + name
        status, headers, body = self.disc.request("PUT", path + "/_config/size", "value=3")
        self.assertEqual(status, 201, body)
        self.assertIn("x-etcd-index", headers)
        self.bootstrap(self.disc.url + path, path, 3, 4)


if __name__ == "__main__":
    unittest.main(verbosity=2)
