"""etcd's authentication guide driven by the real etcdctl 3.4 against a
3-member etcd 3.4 cluster and a 3-member muster cluster: the same script,
the normalised outputs compared (the machinery of test_etcdctl.py).

Covered: user add root, roles and permissions (single key and --prefix),
user grant-role, auth enable (etcdctl's own root-role dance), reads and
writes allowed and denied with etcd's errors, no credentials, wrong
password, unknown user, management refused to non-root users, a revoked
permission enforced by every member, a password change that invalidates
the user's tokens, auth disable.  Through the JSON gateway: Authenticate,
a token used on another member, a malformed token, a token after a
password change.  Where muster is deliberately stricter than etcd (a
permission whose range end is before its key), the step is left out of
the comparison and muster's answer is asserted on its own.
"""

import json
import os
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "lib"))
sys.path.insert(0, HERE)
from harness import ProcessGroup, request  # noqa: E402
from v3cluster import V3Cluster, systems  # noqa: E402
import test_etcdctl  # noqa: E402  (not its classes: unittest would run them here too)


ROOT = ["--user", "root:rootpw"]
ALICE = ["--user", "alice:alicepw"]


def gateway(s, member, path, body, token=None):
    """POST to a member's JSON gateway; the answer recorded in the
    transcript with tokens and headers left out."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = token
    status, _, data = request(member.client_url, "POST", path, json.dumps(body),
                              headers=headers)
    doc = json.loads(data) if data.strip() else {}
    shown = {k: v for k, v in doc.items() if k not in ("header", "token")}
    for kv in shown.get("kvs", []):  # revisions depend on the cluster's history
        kv.pop("create_revision", None)
        kv.pop("mod_revision", None)
    if "token" in doc:
        shown["token"] = "<token>"
    s.record("$ POST %s%s (%s)\n[%d]\n%s\n" % (
        member.name, path, "token" if token is not None else "no token", status,
        json.dumps(shown, sort_keys=True)))
    return status, doc


class Clusters:
    """An etcd and a muster cluster for the tests of a class (the set-up of
    test_etcdctl.py), with the auth state reset before each test."""
    setUpClass = classmethod(test_etcdctl.EtcdctlComparison.setUpClass.__func__)
    tearDownClass = classmethod(test_etcdctl.EtcdctlComparison.tearDownClass.__func__)
    move_leader = classmethod(test_etcdctl.EtcdctlComparison.move_leader.__func__)
    start_clusters = classmethod(test_etcdctl.EtcdctlComparison.start_clusters.__func__)

    def setUp(self):
        test_etcdctl.EtcdctlComparison.setUp(self)
        # A test that failed half-way may have left auth on and users behind.
        for c in self.clusters:
            c.ctl("auth", "disable", *ROOT)
            for user in ("alice", "muster-client", "root"):
                c.ctl("user", "delete", user)
            for role in ("myrole", "badrole", "clientrole", "root"):
                c.ctl("role", "delete", role)

    normalizer = test_etcdctl.EtcdctlComparison.normalizer
    compare = test_etcdctl.EtcdctlComparison.compare


class AuthComparison(Clusters, unittest.TestCase):
    certs = False

    def test_authentication_guide(self):
        def script(s):
            m1, m2, m3 = s.cluster.members
            s.ctl("user", "add", "root:rootpw", show="user add root:<pw>", expect_rc=0)
            s.ctl("role", "add", "myrole", expect_rc=0)
            s.ctl("role", "grant-permission", "myrole", "readwrite", "foo", expect_rc=0)
            s.ctl("role", "grant-permission", "--prefix=true", "myrole", "read", "/pre/",
                  expect_rc=0)
            s.ctl("role", "grant-permission", "myrole", "write", "w1", "w5", expect_rc=0)
            s.ctl("user", "add", "alice:alicepw", show="user add alice:<pw>", expect_rc=0)
            s.ctl("user", "grant-role", "alice", "myrole", expect_rc=0)
            s.ctl("user", "grant-role", "alice", "nosuchrole", expect_rc=1)
            s.ctl("role", "get", "myrole", expect_rc=0)
            s.ctl("user", "get", "alice", "--detail", expect_rc=0)
            s.ctl("user", "list", expect_rc=0)
            s.ctl("role", "list", expect_rc=0)
            # etcdctl adds the root role and grants it when enabling fails
            # with "root user does not have root role".
            s.ctl("auth", "enable", expect_rc=0)
            s.ctl("role", "list", *ROOT, expect_rc=0)

            s.ctl("put", "foo", "bar", *ALICE, expect_rc=0)
            s.ctl("get", "foo", *ALICE, expect_rc=0)
            s.ctl("put", "/pre/x", "y", *ALICE, expect_rc=1)
            s.ctl("put", "w3", "y", *ALICE, expect_rc=0)
            s.ctl("get", "w3", *ALICE, expect_rc=1)
            s.ctl("put", "/pre/x", "y", *ROOT, expect_rc=0)
            s.ctl("get", "/pre/", "--prefix", *ALICE, expect_rc=0)
            s.ctl("get", "/pr", "--prefix", *ALICE, expect_rc=1)
            s.ctl("del", "foo", "--prev-kv", *ALICE, expect_rc=0)
            s.ctl("get", "foo", expect_rc=1)
            s.ctl("put", "foo", "x", expect_rc=1)
            # etcdctl authenticates while connecting: exit 2, no request made.
            s.ctl("get", "foo", "--user", "alice:wrong", show="get foo --user alice:<wrong>",
                  expect_rc=2)
            s.ctl("get", "foo", "--user", "nobody:x", expect_rc=2)
            s.ctl("txn", *ALICE, input='value("/pre/x") = "y"\n\nput foo in\n\nput /pre/x no\n\n',
                  show="txn as alice (else branch writes /pre/x)", expect_rc=1)
            s.ctl("txn", *ALICE, input='value("/pre/x") = "y"\n\nput foo in\n\nget foo\n\n',
                  show="txn as alice (all allowed)", expect_rc=0)
            s.ctl("user", "add", "bob:b", *ALICE, show="user add bob:<pw> as alice", expect_rc=1)
            s.ctl("user", "list", *ALICE, expect_rc=1)
            s.ctl("user", "get", "alice", *ALICE, expect_rc=0)
            s.ctl("role", "get", "myrole", *ALICE, expect_rc=0)
            s.ctl("role", "get", "root", *ALICE, expect_rc=1)
            s.ctl("member", "list", *ALICE, unordered=True, expect_rc=0)
            s.ctl("user", "delete", "root", *ROOT, expect_rc=1)
            s.ctl("user", "revoke-role", "root", "root", *ROOT, expect_rc=1)

            # A revocation applied once is enforced by every member.
            s.ctl("role", "revoke-permission", "myrole", "foo", *ROOT, expect_rc=0)
            for m in (m1, m2, m3):
                s.ctl("put", "foo", "again", *ALICE, endpoints=[m.client_url],
                      show="put foo again as alice via %s" % m.name, expect_rc=1)
                s.ctl("get", "foo", *ALICE, endpoints=[m.client_url],
                      show="get foo as alice via %s" % m.name, expect_rc=1)
            s.ctl("role", "revoke-permission", "myrole", "foo", *ROOT, expect_rc=1)

            # The gateway: a token from m1 used on m2, then a password change.
            st, doc = gateway(s, m1, "/v3/auth/authenticate",
                              {"name": "alice", "password": "alicepw"})
            token = doc.get("token", "")
            self.assertTrue(token, doc)
            gateway(s, m2, "/v3/kv/range", {"key": "L3ByZS94"}, token)      # /pre/x
            gateway(s, m2, "/v3/kv/put", {"key": "L3ByZS94", "value": "eA=="}, token)
            gateway(s, m3, "/v3/kv/range", {"key": "L3ByZS94"}, "not-a-token")
            gateway(s, m3, "/v3/kv/range", {"key": "L3ByZS94"},
                    "AAAAAAAAAAAAAAAA." + token.rsplit(".", 1)[-1])
            if s.cluster.kind == "muster":
                # A token naming a log index far ahead: etcd 3.4 waits for
                # that index to be applied (its request hangs); muster
                # looks once more after a read barrier and refuses it.
                status, _, data = request(m3.client_url, "POST", "/v3/kv/range",
                                          json.dumps({"key": "L3ByZS94"}),
                                          headers={"Authorization": token + "000"}, timeout=20)
                self.assertEqual(status, 401, data)
                self.assertIn(b"etcdserver: invalid auth token", data)
            gateway(s, m1, "/v3/kv/range", {"key": "L3ByZS94"})
            gateway(s, m1, "/v3/auth/authenticate", {"name": "alice", "password": "nope"})
            gateway(s, m1, "/v3/auth/user/list", {}, token)
            s.ctl("user", "passwd", "alice", "--interactive=false", *ROOT, input="newpw\n",
                  show="user passwd alice (stdin)", expect_rc=0)
            gateway(s, m1, "/v3/kv/range", {"key": "L3ByZS94"}, token)
            gateway(s, m2, "/v3/kv/range", {"key": "L3ByZS94"}, token)
            s.ctl("get", "/pre/x", *ALICE, expect_rc=2)
            s.ctl("get", "/pre/x", "--user", "alice:newpw", show="get /pre/x --user alice:<new>",
                  expect_rc=0)

            s.ctl("auth", "disable", "--user", "alice:newpw", show="auth disable as alice",
                  expect_rc=1)
            s.ctl("auth", "disable", *ROOT, expect_rc=0)
            s.ctl("get", "/pre/x", expect_rc=0)
            s.ctl("put", "foo", "free", expect_rc=0)
            gateway(s, m1, "/v3/kv/range", {"key": "Zm9v"}, token)
        text = self.compare(script)
        self.assertIn("Authentication Enabled", text)
        self.assertIn("Error: etcdserver: permission denied", text)
        self.assertIn("Error: etcdserver: user name is empty", text)
        self.assertIn("authentication failed, invalid user ID or password", text)
        self.assertIn("Error: etcdserver: invalid auth management", text)
        self.assertIn('"etcdserver: invalid auth token"', text)
        self.assertIn("Authentication Disabled", text)

    def test_bad_permission_ranges_are_refused(self):
        """etcd 3.4 stores a permission whose range end is before its key
        (it then grants nothing); muster refuses it with a clear error and
        changes nothing.  Compared: everything around it."""
        def script(s):
            s.ctl("role", "add", "badrole", expect_rc=0)
            s.ctl("role", "grant-permission", "badrole", "read", "b", "a", tag="bad")
            s.ctl("role", "get", "badrole", tag="bad")
            s.ctl("role", "grant-permission", "badrole", "read", "a", "b", expect_rc=0)
            s.ctl("role", "get", "badrole", expect_rc=0, tag="bad")  # etcd lists [b, a) too
            s.ctl("role", "delete", "badrole", expect_rc=0)
            s.ctl("role", "grant-permission", "badrole", "read", "a", "b", expect_rc=1)
            if s.cluster.kind == "muster":
                # Not one of etcd's errors, so etcdctl prints it with its code.
                self.assertIn("Error: rpc error: code = InvalidArgument desc = etcdserver: "
                              "invalid permission: permission range end is not after its key",
                              s.transcript[1])
                self.assertIn("[exit 1]", s.transcript[1])
                self.assertNotIn("[b, a)", s.transcript[2])
                self.assertIn("KV Read:\n\t[a, b) (prefix a)\nKV Write:", s.transcript[4])
        self.compare(script, skip_tags={"bad": ["muster refuses what etcd 3.4 stores"]})


class AuthTlsComparison(Clusters, unittest.TestCase):
    """The same clusters with cfssl certificates and --client-cert-auth:
    etcdctl presents client.pem (CN "muster-client"), and with auth on that
    CN is the user of every request that carries no token."""
    certs = True

    def test_client_certificate_name_is_the_user(self):
        def script(s):
            s.ctl("user", "add", "root:rootpw", show="user add root:<pw>", expect_rc=0)
            s.ctl("role", "add", "root", expect_rc=0)
            s.ctl("user", "grant-role", "root", "root", expect_rc=0)
            s.ctl("user", "add", "muster-client:pw", show="user add muster-client:<pw>",
                  expect_rc=0)
            s.ctl("role", "add", "clientrole", expect_rc=0)
            s.ctl("role", "grant-permission", "--prefix=true", "clientrole", "readwrite", "cn/",
                  expect_rc=0)
            s.ctl("user", "grant-role", "muster-client", "clientrole", expect_rc=0)
            s.ctl("auth", "enable", expect_rc=0)
            s.ctl("put", "cn/a", "1", expect_rc=0)
            s.ctl("get", "cn/", "--prefix", expect_rc=0)
            s.ctl("put", "other", "1", expect_rc=1)
            s.ctl("user", "list", expect_rc=1)
            s.ctl("put", "other", "1", *ROOT, expect_rc=0)
            s.ctl("get", "other", *ROOT, expect_rc=0)
            s.ctl("auth", "disable", expect_rc=1)
            s.ctl("auth", "disable", *ROOT, expect_rc=0)
            s.ctl("user", "delete", "muster-client", expect_rc=0)
            s.ctl("role", "delete", "clientrole", expect_rc=0)
        text = self.compare(script)
        self.assertIn("$ etcdctl put cn/a 1\n[exit 0]\nOK", text)
        self.assertIn("$ etcdctl put other 1\n[exit 1]", text)


class AuthJwtComparison(Clusters, unittest.TestCase):
    """Both clusters with --auth-token jwt and the same RSA key pair: the
    same script compares, and a token etcd signed is accepted by muster
    (and the other way round), since the format is etcd's."""
    certs = False

    @classmethod
    def setUpClass(cls):
        cls.group = ProcessGroup("muster-interop-auth-jwt-")
        try:
            key = cls.group.path("jwt.key")
            pub = cls.group.path("jwt.pub")
            for argv in (["openssl", "genrsa", "-out", key, "2048"],
                         ["openssl", "rsa", "-in", key, "-pubout", "-out", pub]):
                subprocess.run(argv, check=True, capture_output=True, timeout=60)
            jwt = "jwt,pub-key=%s,priv-key=%s,sign-method=RS256,ttl=10m" % (pub, key)
            flags = test_etcdctl.FLAGS + ["--auth-token", jwt]
            cls.clusters = [V3Cluster(cls.group, k, label="%s-jwt%d" % (k, i + 1), extra=flags)
                            for i, k in enumerate(systems())]
            cls.start_clusters()
        except BaseException:
            sys.stderr.write(cls.group.dump_logs())
            cls.group.close()
            raise

    def test_jwt_tokens(self):
        def script(s):
            m1, m2, m3 = s.cluster.members
            s.ctl("user", "add", "root:rootpw", show="user add root:<pw>", expect_rc=0)
            s.ctl("user", "add", "alice:alicepw", show="user add alice:<pw>", expect_rc=0)
            s.ctl("role", "add", "myrole", expect_rc=0)
            s.ctl("role", "grant-permission", "--prefix=true", "myrole", "readwrite", "j/",
                  expect_rc=0)
            s.ctl("user", "grant-role", "alice", "myrole", expect_rc=0)
            s.ctl("auth", "enable", expect_rc=0)
            s.ctl("put", "j/a", "1", *ALICE, expect_rc=0)
            s.ctl("get", "j/a", *ALICE, expect_rc=0)
            s.ctl("put", "k", "1", *ALICE, expect_rc=1)
            s.ctl("get", "j/a", "--user", "alice:wrong", show="get j/a --user alice:<wrong>",
                  expect_rc=2)
            st, doc = gateway(s, m1, "/v3/auth/authenticate",
                              {"name": "alice", "password": "alicepw"})
            token = doc.get("token", "")
            self.assertEqual(token.count("."), 2, doc)  # a JWS, not a simple token
            gateway(s, m3, "/v3/kv/range", {"key": "ai9h"}, token)       # j/a
            gateway(s, m3, "/v3/kv/range", {"key": "ai9h"}, token[:-3] + "AAA")
            gateway(s, m3, "/v3/kv/range", {"key": "ai9h"}, "a.b.c")
            # Any auth change makes the token old.
            s.ctl("role", "add", "another", *ROOT, expect_rc=0)
            gateway(s, m2, "/v3/kv/range", {"key": "ai9h"}, token)
            gateway(s, m2, "/v3/kv/put", {"key": "ai9h", "value": "eA=="}, token)
            s.ctl("get", "j/a", *ALICE, expect_rc=0)  # etcdctl authenticates afresh
            s.ctl("role", "delete", "another", *ROOT, expect_rc=0)
            s.cluster.jwt_token = gateway(s, m1, "/v3/auth/authenticate",
                                          {"name": "alice", "password": "alicepw"})[1]["token"]
        text = self.compare(script)
        self.assertIn('"etcdserver: revision of auth store is old"', text)
        self.assertIn('"etcdserver: invalid auth token"', text)
        # The clusters share the key and went through the same auth changes
        # (so the same auth revision): each accepts the other's tokens.
        for signer, checker in (self.clusters, reversed(self.clusters)):
            status, _, data = request(checker.members[1].client_url, "POST", "/v3/kv/range",
                                      json.dumps({"key": "ai9h"}),
                                      headers={"Authorization": signer.jwt_token})
            self.assertEqual(status, 200, "%s's token at %s: %s" % (signer.kind, checker.kind,
                                                                    data))
            self.assertIn(b'"value":"MQ=="', data)
        for c in self.clusters:
            c.ctl("auth", "disable", *ROOT)


if __name__ == "__main__":
    unittest.main()
