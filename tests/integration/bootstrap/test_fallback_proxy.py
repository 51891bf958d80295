"""Extra joiners become proxies (--discovery-fallback=proxy, the default), as
a user meets them: N+1 nodes started together on a size-N token, whichever
registers too late serves clients by forwarding to the cluster, and every
node keeps its role and the data across a restart of everything.  With auth
on, a client authenticates through the proxy (gRPC with the real etcdctl,
the JSON gateway, musterctl) and its token works there and on the members."""

import json
import os
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "proxy"))
from bootstrap import (BootTest, BootCluster, Discovery, ProcessGroup, musterctl,  # noqa: E402
                       request, wait_for)
from harness import ETCDCTL  # noqa: E402
from proxy_helpers import WatchStream, b64  # noqa: E402


class FallbackProxyTest(BootTest):
    PREFIX = "muster-fallback-test-"

    def roles(self, c):
        """name -> "member" | "proxy" from what each node keeps in its data dir."""
        out = {}
        for m in c.members:
            member = os.path.isdir(os.path.join(m.data_dir, "member"))
            proxy = os.path.isdir(os.path.join(m.data_dir, "proxy"))
            self.assertNotEqual(member, proxy, "%s: member=%s proxy=%s" % (m.name, member, proxy))
            out[m.name] = "member" if member else "proxy"
        return out

    def form(self, size, extra):
        d = Discovery(self.group)
        url = d.new_token(size)
        c = BootCluster(size + extra, group=self.group)
        c.start(["--discovery", url])  # all at once
        # Members and proxies alike answer /health (a proxy forwards it).
        c.wait_healthy(timeout=60)
        wait_for(lambda: list(self.roles_or_none(c).values()).count("proxy") == extra, 30,
                 "%d node(s) to settle as proxies" % extra)
        roles = self.roles(c)
        members = [m for m in c.members if roles[m.name] == "member"]
        proxies = [m for m in c.members if roles[m.name] == "proxy"]
        self.assertEqual(len(members), size)
        # The token lists exactly the members; the proxies did not register.
        code, out, err = musterctl("discovery", "show", url)
        self.assertEqual(code, 0, err)
        for m in members:
            self.assertIn(m.name, out)
        for p in proxies:
            self.assertNotIn(p.name + "=", out)
        # Every node, proxies included, sees the same size-member cluster.
        for node in c.members:
            st, j = node.call("/v3/cluster/member/list", {})
            self.assertEqual(st, 200, j)
            self.assertEqual(sorted(x["name"] for x in j["members"]),
                             sorted(m.name for m in members), node.name)
        return url, c, members, proxies

    def roles_or_none(self, c):
        try:
            return self.roles(c)
        except AssertionError:
            return {}

    def check_proxy_serves(self, proxy, members, tag):
        # A watch through the proxy sees a write through a member and one
        # through the proxy itself, in order.
        key = "w/%s" % tag
        w = WatchStream(proxy.client_port, {"key": b64(key)})
        self.addCleanup(w.close)
        self.assertEqual(w.status, 200)
        wait_for(lambda: len(w.lines) >= 1, 10, "the watch to be created")
        st, j = members[0].put(key, "via-member")
        self.assertEqual(st, 200, j)
        st, j = proxy.put(key, "via-proxy")
        self.assertEqual(st, 200, j)
        wait_for(lambda: len(w.events()) >= 2, 10, "two events through the proxy's watch")
        self.assertEqual([e[2] for e in w.events()[:2]], ["via-member", "via-proxy"])
        w.close()
        # A write through the proxy is read on every member.
        st, j = proxy.put("k/%s" % tag, "v")
        self.assertEqual(st, 200, j)
        for m in members:
            self.assertEqual(m.value("k/%s" % tag), "v", m.name)
        self.assertEqual(proxy.value("k/%s" % tag), "v")

    def test_three_members_and_one_proxy_keep_roles_and_data_across_restarts(self):
        url, c, members, proxies = self.form(3, 1)
        proxy = proxies[0]
        self.check_proxy_serves(proxy, members, "before")
        roles = self.roles(c)

        # Restart everything with the same flags: no re-discovery, same roles.
        c.stop_all()
        c.start(None)
        c.wait_healthy(timeout=60)
        self.assertEqual(self.roles(c), roles)
        for m in members:
            self.assertIn("server has been already initialized", m.proc.log(), m.name)
        self.assertEqual(proxy.value("k/before"), "v")
        self.check_proxy_serves(proxy, members, "after")

    def test_proxy_on_with_discovery_reads_the_token_without_registering(self):
        url, c, members, proxies = self.form(3, 0)
        p = c.add("explicit-proxy")
        p.start(["--discovery", url, "--proxy", "on"])
        wait_for(lambda: (p.alive() or c._died(p)) and p.healthy(), 30, "the proxy to serve")
        self.assertTrue(os.path.isdir(os.path.join(p.data_dir, "proxy")))
        self.check_proxy_serves(p, members, "explicit")
        code, out, err = musterctl("discovery", "show", url, "-w", "json")
        self.assertEqual(code, 0, err)
        self.assertEqual(len(json.loads(out)["members"]), 3)

    def test_auth_tokens_work_through_an_extra_joiners_proxy(self):
        url, c, members, proxies = self.form(3, 1)
        proxy, m1 = proxies[0], members[0]

        def etcdctl(node, *args):
            env = dict(os.environ, ETCDCTL_API="3")
            return subprocess.run([ETCDCTL, "--endpoints", node.client_url, "--dial-timeout",
                                   "3s", "--command-timeout", "8s"] + list(args),
                                  capture_output=True, text=True, timeout=30, env=env)
        for argv in (["user", "add", "root:rootpw"], ["user", "add", "alice:alicepw"],
                     ["role", "add", "arole"],
                     ["role", "grant-permission", "--prefix=true", "arole", "readwrite", "a/"],
                     ["user", "grant-role", "alice", "arole"], ["auth", "enable"]):
            r = etcdctl(m1, *argv)
            self.assertEqual(r.returncode, 0, "etcdctl %s: %s" % (argv, r.stderr))
        alice = ["--user", "alice:alicepw"]

        # gRPC: etcdctl calls Authenticate through the proxy, then sends the
        # token in the metadata of each request it relays.
        r = etcdctl(proxy, "put", "a/1", "one", *alice)
        self.assertEqual((r.returncode, r.stdout), (0, "OK\n"), r.stderr)
        r = etcdctl(proxy, "get", "a/1", "--print-value-only", *alice)
        self.assertEqual((r.returncode, r.stdout), (0, "one\n"), r.stderr)
        r = etcdctl(proxy, "put", "b/1", "x", *alice)
        self.assertEqual(r.returncode, 1)
        self.assertIn("Error: etcdserver: permission denied", r.stderr)
        r = etcdctl(proxy, "get", "a/1")
        self.assertIn("Error: etcdserver: user name is empty", r.stderr)
        r = etcdctl(proxy, "get", "a/1", "--user", "alice:wrong")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("authentication failed, invalid user ID or password", r.stderr)

        # The JSON gateway: a token issued through the proxy works at a
        # member, and one issued at a member works through the proxy.
        st, j = proxy.call("/v3/auth/authenticate", {"name": "alice", "password": "alicepw"})
        self.assertEqual(st, 200, j)
        via_proxy = j["token"]
        st, j = m1.call("/v3/auth/authenticate", {"name": "alice", "password": "alicepw"})
        self.assertEqual(st, 200, j)
        via_member = j["token"]
        for node, token in ((members[2], via_proxy), (proxy, via_member), (proxy, via_proxy)):
            st, _, body = request(node.client_url, "POST", "/v3/kv/range",
                                  json.dumps({"key": b64("a/1")}),
                                  headers={"Authorization": token,
                                           "Content-Type": "application/json"})
            self.assertEqual(st, 200, body)
            self.assertEqual(json.loads(body)["kvs"][0]["value"], b64("one"))
        st, _, body = request(proxy.client_url, "POST", "/v3/kv/range",
                              json.dumps({"key": b64("a/1")}),
                              headers={"Authorization": "not-a-token",
                                       "Content-Type": "application/json"})
        self.assertEqual(st, 401, body)
        self.assertIn(b"etcdserver: invalid auth token", body)

        # musterctl --user through the proxy.
        code, out, err = musterctl("--endpoints", proxy.client_url, "put", "a/2", "two", *alice)
        self.assertEqual((code, out), (0, "OK\n"), err)
        code, out, err = musterctl("--endpoints", proxy.client_url, "get", "a/2", *alice)
        self.assertEqual((code, out), (0, "a/2\ntwo\n"), err)

    def test_five_members_and_two_proxies(self):
        url, c, members, proxies = self.form(5, 2)
        for i, p in enumerate(proxies):
            self.check_proxy_serves(p, members, "p%d" % i)


if __name__ == "__main__":
    unittest.main(verbosity=2)
