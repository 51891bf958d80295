"""Members bootstrapping through a discovery URL (--discovery): against
muster-discovery, against a real etcd 3.4 v2 keys directory, through a flaky
front and an HTTP forward proxy; the errors an operator meets; `musterctl
discovery`."""

import json
import os
import re
import shutil
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bootstrap import (BootTest, BootCluster, Discovery, Etcd, FlakyFront, ForwardProxy,  # noqa: E402
                       ProcessGroup, free_port, musterctl, request, wait_for)


class DiscoveryBootstrapTest(BootTest):
    PREFIX = "muster-boot-test-"

    def cluster(self, size, **kw):
        return BootCluster(size, group=self.group, **kw)

    def discovery(self):
        return Discovery(self.group)

    def etcd_v2(self):
        e = Etcd(self.group, "etcd-disco", enable_v2=True)
        wait_for(e.healthy, 20, "etcd to be healthy")
        return e

    def check_one_cluster(self, c):
        """Member list complete on every member; a write on one is read on another."""
        c.wait_healthy()
        names = sorted(m.name for m in c.members)
        for m in c.members:
            wait_for(lambda: c.member_names(m) == names, 10, "full member list on " + m.name)
        return self.one_working_cluster(c)

    def restart_all(self, c):
        c.stop_all()
        c.start(None)
        c.wait_healthy()
        for m in c.members:
            self.assertNotIn("joining discovery cluster", m.proc.log(), m.name)
            self.assertIn("server has been already initialized", m.proc.log(), m.name)

    # ---- forming clusters ----

    def test_three_and_five_members_form_one_cluster_through_muster_discovery(self):
        d = self.discovery()
        for size in (3, 5):
            with self.subTest(size=size):
                url = d.new_token(size)
                c = self.cluster(size, names=["s%d-m%d" % (size, i + 1) for i in range(size)])
                c.start(["--discovery", url])
                key = self.check_one_cluster(c)
                # The ID scheme is etcd's: token = the discovery URL.
                st, _, body = request(d.url, "GET", "/" + url.rsplit("/", 1)[1])
                self.assertEqual(st, 200)
                doc = json.loads(body)
                self.assertEqual(len(doc["node"]["nodes"]), size)
                # A restart uses the data dir: no discovery, even with the
                # discovery service gone.
                d.kill9()
                self.restart_all(c)
                self.assertEqual(c.members[1].value(key), "v")
                d.start()
                c.stop_all()

    def test_three_members_form_one_cluster_through_etcd_v2_keys(self):
        e = self.etcd_v2()
        token = "t%d" % time.monotonic_ns()
        st, _, body = request(e.client_url, "PUT", "/v2/keys/discovery/%s/_config/size" % token,
                              "value=3")
        self.assertEqual(st, 201, body)
        url = e.client_url + "/v2/keys/discovery/" + token
        c = self.cluster(3)
        c.start(["--discovery", url])
        key = self.check_one_cluster(c)
        code, out, err = musterctl("discovery", "show", url)
        self.assertEqual(code, 0, err)
        self.assertIn("complete", out)
        for m in c.members:
            self.assertIn(m.name, out)
        self.restart_all(c)
        self.assertEqual(c.members[2].value(key), "v")

    def test_three_members_form_one_cluster_through_a_muster_clusters_v2_keys(self):
        # Seed 003's layout with muster on both sides: discovery tokens kept
        # in a muster cluster's v2 keys.
        host = BootCluster(1, group=self.group, names=["host"])
        host.start(["--initial-cluster", "host=" + host.members[0].peer_url, "--enable-v2"])
        host.wait_healthy()
        host_url = host.members[0].client_url
        path = "/v2/keys/discovery/tok-muster"
        st, _, body = request(host_url, "PUT", path + "/_config/size", "value=3")
        self.assertEqual(st, 201, body)
        base = host_url + path
        c = self.cluster(3)
        c.start(["--discovery", base])
        self.check_one_cluster(c)
        st, _, body = request(host_url, "GET", path)
        registered = [n for n in json.loads(body)["node"].get("nodes", []) if not n.get("dir")]
        self.assertEqual(len(registered), 3, body)

    def test_deletes_and_overwrites_while_waiting_are_not_new_members(self):
        # etcd 3.4 counts every watch event as a member: these three events
        # would end m1's wait early with a wrong cluster.
        e = self.etcd_v2()
        token = "w%d" % time.monotonic_ns()
        path = "/v2/keys/discovery/" + token
        request(e.client_url, "PUT", path + "/_config/size", "value=3")
        url = e.client_url + path
        c = self.cluster(3)
        m1 = c.members[0]
        m1.start(["--discovery", url])
        wait_for(lambda: "waiting for other members" in m1.proc.log(), 20, "m1 to wait")
        m1_id = member_id_hex([m1.peer_url], url)
        st, _, body = request(e.client_url, "PUT", path + "/bogus", "value=bogus=http://127.0.0.1:1")
        self.assertEqual(st, 201, body)
        st, _, body = request(e.client_url, "DELETE", path + "/bogus")
        self.assertEqual(st, 200, body)
        st, _, body = request(e.client_url, "PUT", path + "/" + m1_id, "value=m1=" + m1.peer_url)
        self.assertEqual(st, 200, body)  # an overwrite of m1's own registration
        wait_for(lambda: "a registration was removed" in m1.proc.log(), 10,
                 "m1 to see the delete")
        self.assertTrue(m1.alive(), m1.proc.log())
        c.start(["--discovery", url], members=c.members[1:])
        self.check_one_cluster(c)
        self.assertEqual(c.member_names(), ["m1", "m2", "m3"])

    def test_503s_are_retried_and_the_bootstrap_succeeds(self):
        d = self.discovery()
        url = d.new_token(3)
        front = FlakyFront(d.url, failures=4)
        self.addCleanup(front.close)
        front_url = front.url + "/" + url.rsplit("/", 1)[1]
        c = self.cluster(3)
        c.start(["--discovery", front_url])
        self.check_one_cluster(c)
        self.assertEqual(front.refused, 4)
        retried = sum(m.proc.log().count("discovery request failed; retrying") for m in c.members)
        self.assertEqual(retried, 4)

    def test_discovery_proxy_carries_every_discovery_request(self):
        d = self.discovery()
        url = d.new_token(3)
        proxy = ForwardProxy()
        self.addCleanup(proxy.close)
        c = self.cluster(3)
        c.start(["--discovery", url, "--discovery-proxy", proxy.url])
        self.check_one_cluster(c)
        token = url.rsplit("/", 1)[1]
        puts = [t for t in proxy.targets if t.startswith("PUT ") and token in t]
        self.assertEqual(len(puts), 3, proxy.targets)
        self.assertTrue(all(t.split(" ", 1)[1].startswith(d.url + "/") for t in proxy.targets))

    # ---- a late joiner and errors ----

    def test_extra_joiner_exits_or_falls_back_when_the_cluster_is_full(self):
        d = self.discovery()
        url = d.new_token(1)
        c = self.cluster(1)
        c.start(["--discovery", url])
        c.wait_healthy()
        late = c.add("late")
        late.start(["--discovery", url, "--discovery-fallback", "exit"])
        self.assertEqual(late.exit_code(20), 1)
        self.assertIn("discovery: cluster is full", late.proc.log())
        self.assertFalse(os.path.exists(os.path.join(late.data_dir, "member")))
        proxy = c.add("proxy")
        proxy.start(["--discovery", url])  # --discovery-fallback=proxy is the default
        wait_for(lambda: "falling back to proxy" in proxy.proc.log(), 20,
                 "the extra member to fall back to proxy")
        proxy.kill9()
        # Neither wrote a registration.
        code, out, err = musterctl("discovery", "show", url, "-w", "json")
        self.assertEqual(code, 0, err)
        self.assertEqual(len(json.loads(out)["members"]), 1)

    def test_clear_errors_for_missing_size_bad_size_and_duplicate_id(self):
        e = self.etcd_v2()
        base = e.client_url + "/v2/keys/discovery/"
        c = self.cluster(1)
        m = c.members[0]
        cases = []
        # No _config/size at all.
        cases.append((base + "nosize", "discovery: size key not found"))
        # A size that is not a number.
        request(e.client_url, "PUT", "/v2/keys/discovery/badsize/_config/size", "value=three")
        cases.append((base + "badsize", "discovery: size key is bad"))
        # Our member ID registered by someone else.
        request(e.client_url, "PUT", "/v2/keys/discovery/dup/_config/size", "value=3")
        cases.append((base + "dup", "discovery: found duplicate id"))
        for url, want in cases:
            with self.subTest(url=url):
                if url.endswith("/dup"):
                    mid = member_id_hex([m.peer_url], url)
                    st, _, body = request(e.client_url, "PUT", "/v2/keys/discovery/dup/" + mid,
                                          "value=other=http://127.0.0.1:1")
                    self.assertEqual(st, 201, body)
                shutil.rmtree(m.data_dir, ignore_errors=True)
                m.start(["--discovery", url])
                self.assertEqual(m.exit_code(20), 1, m.proc.log())
                self.assertIn(want, m.proc.log())
        # Also muster-discovery's answer for a token it never issued.
        d = self.discovery()
        m.start(["--discovery", d.url + "/" + "0" * 32])
        self.assertEqual(m.exit_code(20), 1)
        self.assertIn("discovery: size key not found", m.proc.log())

    # ---- musterctl discovery ----

    def test_halfway_failed_bootstrap_is_retried_after_musterctl_discovery_rm(self):
        d = self.discovery()
        code, out, err = musterctl("discovery", "new", "--size", "3", "--endpoint", d.url)
        self.assertEqual(code, 0, err)
        url = out.strip()
        self.assertTrue(re.match(re.escape(d.url) + r"/[0-9a-f]{32}$", url), url)
        code, out, err = musterctl("discovery", "show", url)
        self.assertEqual(code, 0, err)
        self.assertIn("size: 3", out)
        self.assertIn("waiting for 3 more", out)

        c = self.cluster(3)
        m1 = c.members[0]
        m1.start(["--discovery", url])
        wait_for(lambda: "waiting for 2 more" in musterctl("discovery", "show", url)[1], 20,
                 "m1's registration")
        m1.kill9()
        # The operator now moves m1 to another peer port: a new member ID,
        # and the old registration would take a seat in the cluster.
        code, out, err = musterctl("discovery", "show", url, "-w", "json")
        self.assertEqual(code, 0, err)
        doc = json.loads(out)
        self.assertEqual(doc["size"], 3)
        self.assertEqual(doc["waitingFor"], 2)
        stale = doc["members"][0]
        self.assertEqual(stale["name"], "m1")
        self.assertEqual(stale["peerURLs"], [m1.peer_url])
        code, out, err = musterctl("discovery", "rm", url, stale["id"])
        self.assertEqual(code, 0, err)
        self.assertIn("waiting for 3 more", musterctl("discovery", "show", url)[1])

        shutil.rmtree(m1.data_dir, ignore_errors=True)
        m1.peer_port = free_port()
        c.start(["--discovery", url])
        self.check_one_cluster(c)
        code, out, err = musterctl("discovery", "show", url)
        self.assertEqual(code, 0, err)
        self.assertIn("complete", out)
        self.assertNotIn(stale["id"], out)

    def test_member_killed_while_waiting_resumes_its_own_registration(self):
        d = self.discovery()
        url = d.new_token(3)
        c = self.cluster(3)
        m1 = c.members[0]
        m1.start(["--discovery", url])
        wait_for(lambda: "waiting for other members" in m1.proc.log(), 20, "m1 to wait")
        m1.kill9()
        # The others complete the token (m1's registration counts) and form
        # the cluster before m1 is back: m1 must still take its place.
        c.start(["--discovery", url], members=c.members[1:])
        wait_for(lambda: "complete" in musterctl("discovery", "show", url)[1], 20,
                 "the token to be complete")
        m1.start(["--discovery", url])
        self.check_one_cluster(c)
        self.assertIn("found this member's own earlier registration", m1.proc.log())

    def test_wiped_member_is_refused_once_its_cluster_formed(self):
        d = self.discovery()
        url = d.new_token(3)
        c = self.cluster(3)
        c.start(["--discovery", url])
        c.wait_healthy()
        m1 = c.members[0]
        m1.kill9()
        # Its data dir lost: it cannot prove it never started Raft.
        shutil.rmtree(m1.data_dir, ignore_errors=True)
        m1.start(["--discovery", url])
        self.assertEqual(m1.exit_code(20), 1)
        self.assertIn("found duplicate id", m1.proc.log())


def member_id_hex(peer_urls, token):
    """etcd's member ID (first 8 bytes of SHA-1 over sorted URLs + token)."""
    import hashlib
    h = hashlib.sha1(("".join(sorted(peer_urls)) + token).encode()).digest()
    return "%x" % int.from_bytes(h[:8], "big")


if __name__ == "__main__":
    unittest.main()
