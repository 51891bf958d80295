"""Members bootstrapping through etcd 3.6's v3 discovery (--discovery-token +
--discovery-endpoints): the token's keys live in a real etcd 3.4 cluster or
in a muster cluster, reached over gRPC.  The size key is written by
`musterctl discovery new --v3`; the token is read back with real etcdctl and
`musterctl discovery show --v3`.  Also: the full-cluster path, etcd 3.6's
errors and flag rules, authentication, and replacing a dead member
(--discovery-replace-dead) over a v3 token."""

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bootstrap import (BootTest, BootCluster, Etcd, MUSTER, free_port, make_certs,  # noqa: E402
                       musterctl, wait_for)
from harness import ETCDCTL  # noqa: E402

HAVE_ETCD = os.path.exists(os.environ.get("ETCD", "/usr/bin/etcd"))


def member_id(peer_urls, token):
    """etcd's member ID: SHA-1 over the sorted peer URLs + the token."""
    h = hashlib.sha1(("".join(sorted(peer_urls)) + token).encode()).digest()
    return int.from_bytes(h[:8], "big")


def etcdctl(endpoint, *args, user=None):
    env = dict(os.environ, ETCDCTL_API="3")
    argv = [ETCDCTL, "--endpoints", endpoint, "--dial-timeout", "2s", "--command-timeout", "5s"]
    if user:
        argv += ["--user", user]
    r = subprocess.run(argv + list(args), env=env, capture_output=True, text=True, timeout=20)
    return r.returncode, r.stdout, r.stderr


def fatal(log):
    """The message of the log's fatal line (what the member exited with)."""
    for line in log.splitlines():
        try:
            j = json.loads(line)
        except ValueError:
            continue
        if j.get("level") == "fatal":
            return j.get("msg", "")
    return ""


class DiscoveryV3Test(BootTest):
    PREFIX = "muster-boot-v3-test-"

    # ---- helpers ----

    def etcd(self, extra=()):
        e = Etcd(self.group, "etcd-v3disc", extra_args=list(extra))
        wait_for(e.healthy, 20, "etcd to be healthy")
        return e

    def muster_backend(self, extra=()):
        host = BootCluster(1, group=self.group, names=["backend"])
        b = host.members[0]
        b.start(["--initial-cluster", "backend=" + b.peer_url] + list(extra))
        host.wait_healthy()
        return b

    def new_token(self, endpoint, size):
        code, out, err = musterctl("discovery", "new", "--v3", "--endpoints", endpoint,
                                   "--size", str(size))
        self.assertEqual(code, 0, err)
        token, flags = out.strip().splitlines()
        self.assertRegex(token, r"^[0-9a-f]{32}$")
        self.assertEqual(flags, "--discovery-token=%s --discovery-endpoints=%s" % (token, endpoint))
        return token, flags.split(" ")

    def cluster(self, size, **kw):
        return BootCluster(size, group=self.group, **kw)

    def check_one_cluster(self, c, token):
        """Member list complete everywhere, IDs computed from the token as etcd
        3.6 does, a write on one member read on another."""
        c.wait_healthy(timeout=60)
        names = sorted(m.name for m in c.members)
        for m in c.members:
            wait_for(lambda: c.member_names(m) == names, 20, "full member list on " + m.name)
        st, j = c.members[0].call("/v3/cluster/member/list", {})
        self.assertEqual(st, 200, j)
        got = {x["name"]: int(x["ID"]) for x in j["members"]}
        for m in c.members:
            self.assertEqual(got[m.name], member_id([m.peer_url], token), m.name)
        return self.one_working_cluster(c)

    def token_json(self, endpoint, token):
        code, out, err = musterctl("discovery", "show", "--v3", "--endpoints", endpoint,
                                   "--token", token, "-w", "json")
        self.assertEqual(code, 0, err)
        return json.loads(out)

    def in_cluster(self, endpoint, token):
        return sorted(m["name"] for m in self.token_json(endpoint, token)["members"]
                      if m["inCluster"])

    def form_and_fill(self, endpoint):
        """Three members through a size-3 token; a fourth finds it full and
        exits (--discovery-fallback=exit) or becomes a proxy (default)."""
        token, flags = self.new_token(endpoint, 3)
        c = self.cluster(3)
        c.start(flags)
        key = self.check_one_cluster(c, token)
        doc = self.token_json(endpoint, token)
        self.assertEqual(doc["size"], 3)
        self.assertTrue(doc["complete"])
        self.assertEqual(sorted((m["name"], m["peerURLs"][0], m["id"]) for m in doc["members"]),
                         sorted((m.name, m.peer_url, "%x" % member_id([m.peer_url], token))
                                for m in c.members))
        # The fourth: the token is full.
        late = c.add("late")
        late.start(flags + ["--discovery-fallback", "exit"])
        self.assertEqual(late.exit_code(30), 1, late.proc.log()[-2000:])
        self.assertTrue(fatal(late.proc.log()).startswith("discovery: cluster is full"),
                        late.proc.log()[-2000:])
        self.assertFalse(os.path.exists(os.path.join(late.data_dir, "member")))
        proxy = c.add("proxy")
        proxy.start(flags)  # --discovery-fallback=proxy is the default (documented)
        wait_for(lambda: "falling back to proxy" in proxy.proc.log(), 30,
                 "the extra member to fall back to proxy")
        wait_for(proxy.healthy, 30, "the proxy to serve")
        self.assertEqual(proxy.value(key), "v")
        # Neither wrote a registration.
        self.assertEqual(len(self.token_json(endpoint, token)["members"]), 3)
        # An existing token is never resized by `discovery new --v3`.
        code, out, err = musterctl("discovery", "new", "--v3", "--endpoints", endpoint,
                                   "--token", token, "--size", "5")
        self.assertEqual(code, 1, out)
        self.assertIn("token %s already exists" % token, err)
        self.assertEqual(self.token_json(endpoint, token)["size"], 3)
        c.members.remove(late)
        c.members.remove(proxy)
        proxy.kill9()
        # A restart uses the data dir: no discovery, even with the backend's
        # token gone from view.
        c.stop_all()
        c.start(["--discovery-token", "gone", "--discovery-endpoints", "127.0.0.1:1"])
        c.wait_healthy(timeout=60)
        for m in c.members:
            self.assertIn("server has been already initialized", m.proc.log(), m.name)
        self.assertEqual(c.members[1].value(key), "v")
        return token, c

    # ---- forming clusters ----

    @unittest.skipUnless(HAVE_ETCD, "etcd not installed")
    def test_three_members_form_one_cluster_through_etcd_and_a_fourth_finds_it_full(self):
        e = self.etcd()
        token, c = self.form_and_fill(e.client_url)
        # Real etcdctl sees etcd 3.6's key layout.
        code, out, err = etcdctl(e.client_url, "get", "/_etcd/registry/" + token, "--prefix",
                                 "-w", "json")
        self.assertEqual(code, 0, err)
        kvs = {base64.b64decode(kv["key"]).decode():
               base64.b64decode(kv["value"]).decode()
               for kv in json.loads(out)["kvs"]}
        want = {"/_etcd/registry/%s/_config/size" % token: "3"}
        for m in c.members:
            want["/_etcd/registry/%s/members/%x" % (token, member_id([m.peer_url], token))] = \
                "%s=%s" % (m.name, m.peer_url)
        self.assertEqual(kvs, want)

    def test_three_members_form_one_cluster_through_a_muster_cluster_and_a_fourth_finds_it_full(
            self):
        b = self.muster_backend()
        token, c = self.form_and_fill(b.client_url)
        # The backend holds the keys (its own v3 API).
        prefix = "/_etcd/registry/%s/members" % token
        st, j = b.call("/v3/kv/range", {"key": base64.b64encode(prefix.encode()).decode(),
                                        "range_end": base64.b64encode(
                                            (prefix[:-1] + "t").encode()).decode(),
                                        "count_only": True})
        self.assertEqual(st, 200, j)
        self.assertEqual(int(j["count"]), 3)

    @unittest.skipUnless(HAVE_ETCD, "etcd not installed")
    def test_authenticated_backend_and_a_wrong_password(self):
        e = self.etcd()
        for args in (["user", "add", "root:rootpw"], ["user", "grant-role", "root", "root"],
                     ["auth", "enable"]):
            code, out, err = etcdctl(e.client_url, *args)
            self.assertEqual(code, 0, (args, err))
        token = "auth-%d" % time.monotonic_ns()
        code, out, err = etcdctl(e.client_url, "put", "/_etcd/registry/%s/_config/size" % token,
                                 "2", user="root:rootpw")
        self.assertEqual(code, 0, err)
        flags = ["--discovery-token", token, "--discovery-endpoints", e.client_url]
        # A wrong password: refused at once with the server's words.
        bad = self.cluster(1, names=["bad"]).members[0]
        bad.start(flags + ["--discovery-user", "root", "--discovery-password", "nope"])
        self.assertEqual(bad.exit_code(20), 1)
        self.assertIn("authentication failed", fatal(bad.proc.log()))
        self.assertNotIn("retry connecting to discovery service", bad.proc.log())
        # Without a user: etcd refuses the request ("user name is empty"),
        # and that is not retried either.
        anon = self.cluster(1, names=["anon"]).members[0]
        anon.start(flags)
        self.assertEqual(anon.exit_code(20), 1)
        self.assertIn("etcdserver: user name is empty", fatal(anon.proc.log()))
        self.assertNotIn("retry connecting to discovery service", anon.proc.log())
        # "user:password" in --discovery-user, and the password flag.
        c = self.cluster(2)
        c.members[0].start(flags + ["--discovery-user", "root:rootpw"])
        c.members[1].start(flags + ["--discovery-user", "root", "--discovery-password", "rootpw"])
        self.check_one_cluster(c, token)

    @unittest.skipUnless(HAVE_ETCD, "etcd not installed")
    def test_tls_endpoints_with_a_client_certificate(self):
        ca, cert, key = make_certs(self.group.dir, ["127.0.0.1"])
        url = "https://127.0.0.1:%d" % free_port()
        e = Etcd(self.group, "etcd-tls", extra_args=[
            "--listen-client-urls", url, "--advertise-client-urls", url, "--cert-file", cert,
            "--key-file", key, "--trusted-ca-file", ca, "--client-cert-auth"])
        tls = ["--cacert", ca, "--cert", cert, "--key", key]
        wait_for(lambda: etcdctl(url, *tls, "endpoint", "health")[0] == 0 or not e.proc.alive(),
                 20, "etcd (TLS) to be healthy")
        # musterctl writes the size key over TLS too.
        code, out, err = musterctl("discovery", "new", "--v3", "--endpoints", url, "--size", "2",
                                   *tls)
        self.assertEqual(code, 0, err)
        token = out.splitlines()[0]
        secure = ["--discovery-token", token, "--discovery-cacert", ca, "--discovery-cert", cert,
                  "--discovery-key", key]
        # Without a client certificate the server refuses the handshake: the
        # endpoint cannot be reached, and with no retries left that is it.
        nocert = self.cluster(1, names=["nocert"]).members[0]
        nocert.start(["--discovery-token", token, "--discovery-endpoints", url,
                      "--discovery-cacert", ca, "--discovery-max-retries", "0"])
        self.assertEqual(nocert.exit_code(20), 1)
        self.assertTrue(fatal(nocert.proc.log()).startswith("discovery: too many retries"),
                        nocert.proc.log()[-2000:])
        # https:// is TLS; a bare host:port is TLS because TLS files are given.
        c = self.cluster(2)
        c.members[0].start(secure + ["--discovery-endpoints", url])
        c.members[1].start(secure + ["--discovery-endpoints", url[len("https://"):]])
        self.check_one_cluster(c, token)

    # ---- errors ----

    @unittest.skipUnless(HAVE_ETCD, "etcd not installed")
    def test_missing_and_bad_size_keys_and_unreachable_endpoints_give_etcd_36_errors(self):
        e = self.etcd()
        m = self.cluster(1).members[0]
        cases = [("nosize", None, "discovery: size key not found"),
                 ("words", "three", "discovery: size key is bad"),
                 ("zero", "0", "discovery: size key is bad"),
                 ("negative", "-2", "discovery: size key is bad")]
        for token, size, want in cases:
            with self.subTest(token=token):
                if size is not None:
                    code, _, err = etcdctl(e.client_url, "put", "--",
                                           "/_etcd/registry/%s/_config/size" % token, size)
                    self.assertEqual(code, 0, err)
                shutil.rmtree(m.data_dir, ignore_errors=True)
                m.start(["--discovery-token", token, "--discovery-endpoints", e.client_url])
                self.assertEqual(m.exit_code(20), 1, m.proc.log()[-2000:])
                self.assertTrue(fatal(m.proc.log()).startswith(want), m.proc.log()[-2000:])
                # Fatal at once, as in etcd 3.6: no retries, nothing written.
                self.assertNotIn("retry connecting to discovery service", m.proc.log())
                code, out, err = etcdctl(e.client_url, "get",
                                         "/_etcd/registry/%s/members" % token, "--prefix",
                                         "--keys-only")
                self.assertEqual((code, out.strip()), (0, ""), err)
        # Nothing listens: etcd 3.6's backoff (2 s, then 4 s ...) between
        # attempts, then "too many retries" after --discovery-max-retries.
        dead = ["127.0.0.1:%d" % free_port(), "http://127.0.0.1:%d" % free_port()]
        shutil.rmtree(m.data_dir, ignore_errors=True)
        t0 = time.monotonic()
        m.start(["--discovery-token", "t", "--discovery-endpoints", ",".join(dead),
                 "--discovery-max-retries", "1", "--discovery-dial-timeout", "200ms",
                 "--discovery-request-timeout", "300ms"])
        self.assertEqual(m.exit_code(30), 1, m.proc.log()[-2000:])
        took = time.monotonic() - t0
        log = m.proc.log()
        self.assertTrue(fatal(log).startswith("discovery: too many retries"), log[-2000:])
        self.assertIn("failed to get cluster size from discovery service", log)
        self.assertEqual(log.count("retry connecting to discovery service"), 1)
        self.assertIn('"backoff":"2s"', log)
        self.assertGreaterEqual(took, 2.0)
        self.assertLess(took, 15.0)

    def test_flag_rules_are_etcd_36s(self):
        d = self.group.path("flags.data")
        base = [MUSTER, "--name", "f", "--data-dir", d]
        conflict = ('multiple discovery or bootstrap flags are set. Choose one of '
                    '"initial-cluster", "discovery", "discovery-endpoints" or "discovery-srv"')
        both = "both --discovery-token and --discovery-endpoints must be set"
        cases = [
            (["--discovery-token", "t"], {}, both),
            (["--discovery-endpoints", "127.0.0.1:2379"], {}, both),
            ([], {"ETCD_DISCOVERY_TOKEN": "t"}, both),
            (["--discovery", "http://127.0.0.1:1/x", "--discovery-token", "t",
              "--discovery-endpoints", "127.0.0.1:2379"], {}, conflict),
            (["--initial-cluster", "f=http://localhost:2380", "--discovery-token", "t",
              "--discovery-endpoints", "127.0.0.1:2379"], {}, conflict),
            (["--discovery-srv", "example.com"],
             {"ETCD_DISCOVERY_TOKEN": "t", "ETCD_DISCOVERY_ENDPOINTS": "127.0.0.1:2379"}, conflict),
            (["--discovery-proxy", "http://127.0.0.1:3128", "--discovery-token", "t",
              "--discovery-endpoints", "127.0.0.1:2379"], {},
             "both v2 discovery settings (discovery, discovery-proxy) and v3 discovery settings "
             "(discovery-token, discovery-endpoints, discovery-cert, discovery-key, "
             "discovery-cacert, discovery-user, discovery-password) are set"),
            (["--discovery-proxy", "http://127.0.0.1:3128", "--discovery-cacert", "/ca.pem"], {},
             "both v2 discovery settings"),
            (["--discovery-token", "t", "--discovery-endpoints", "127.0.0.1:2379,,127.0.0.1:2380"],
             {}, "--discovery-endpoints must not contain empty endpoints"),
        ]
        for args, env, want in cases:
            with self.subTest(args=args, env=env):
                full_env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
                full_env.update(env)
                r = subprocess.run(base + args, env=full_env, capture_output=True, text=True,
                                   timeout=20)
                self.assertEqual(r.returncode, 1, r.stderr[-1000:])
                self.assertTrue(fatal(r.stderr).startswith(want), r.stderr[-1000:])
                self.assertFalse(os.path.exists(d))

    # ---- replacement ----

    def test_a_dead_member_is_replaced_over_v3_discovery(self):
        b = self.muster_backend()
        token, flags = self.new_token(b.client_url, 3)
        c = self.cluster(3)
        c.start(flags)
        self.check_one_cluster(c, token)
        m1, m2, m3 = c.members
        st, j = m1.put("before", "b")
        self.assertEqual(st, 200, j)
        m3.kill9()
        shutil.rmtree(m3.data_dir)
        m4 = c.add("m4")
        m4.start(flags + ["--discovery-replace-dead", "2s"])

        def voters():
            try:
                st, j = m1.call("/v3/cluster/member/list", {})
                return sorted(x.get("name", "") for x in j["members"] if not x.get("isLearner"))
            except OSError:
                return None
        wait_for(lambda: voters() == ["m1", "m2", "m4"], 60, "m4 to be a voter")
        wait_for(m4.healthy, 30, "m4 to be healthy")
        self.assertTrue(os.path.isdir(os.path.join(m4.data_dir, "member")))
        self.assertEqual(m4.value("before"), "b")
        self.assertIn("this node replaces a dead member", m4.proc.log())
        self.assertIn("recorded this member in the v3 discovery token", m4.proc.log())
        # The token's first `size` registrations are the cluster again, m3's
        # gone, m4's under the member ID the cluster gave it.
        doc = self.token_json(b.client_url, token)
        self.assertEqual(sorted(m["name"] for m in doc["members"]), ["m1", "m2", "m4"])
        self.assertEqual(self.in_cluster(b.client_url, token), ["m1", "m2", "m4"])
        st, j = m1.call("/v3/cluster/member/list", {})
        m4_id = next(int(x["ID"]) for x in j["members"] if x.get("name") == "m4")
        self.assertIn("%x" % m4_id, [m["id"] for m in doc["members"]])


if __name__ == "__main__":
    unittest.main()
