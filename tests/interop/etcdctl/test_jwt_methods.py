"""`--auth-token jwt,...,sign-method=...` with one method of each family etcd
3.4 accepts (auth/options.go: RSA PKCS#1, RSA-PSS, ECDSA, HMAC), against a
one-member muster and a one-member etcd 3.4 holding the same key:

- the real etcdctl authenticates (--user) and its token is accepted: a put
  and a get as a user with a prefix permission;
- the token muster signed is accepted by etcd and etcd's by muster (the
  same format, header and claims);
- a token signed outside both with the right key (the openssl command, or
  Python's hmac) is accepted: muster's verifier does not merely agree with
  its own signer;
- a token with the same claims signed with another key is refused by both
  with "etcdserver: invalid auth token".
"""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "lib"))
from harness import ProcessGroup, request  # noqa: E402
from v3cluster import V3Cluster  # noqa: E402

ALICE = ["--user", "alice:alicepw"]


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def der_to_raw(der, width):
    """An ECDSA signature in DER (openssl's output) as JWS's r||s."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7f)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        out += der[i + 2:i + 2 + n].lstrip(b"\0").rjust(width, b"\0")
        i += 2 + n
    return out


def sign(method, key_path, claims):
    """A JWT signed with `key_path` by the openssl command (HS: hmac)."""
    header = b64url(json.dumps({"alg": method, "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    data = (header + "." + body).encode()
    digest = "sha" + method[2:]
    if method.startswith("HS"):
        with open(key_path, "rb") as f:
            sig = hmac.new(f.read(), data, getattr(hashlib, digest)).digest()
    else:
        argv = ["openssl", "dgst", "-" + digest, "-sign", key_path]
        if method.startswith("PS"):
            argv += ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"]
        sig = subprocess.run(argv, input=data, capture_output=True, check=True,
                             timeout=30).stdout
        if method.startswith("ES"):
            sig = der_to_raw(sig, {"256": 32, "384": 48, "512": 66}[method[2:]])
    return header + "." + body + "." + b64url(sig)


def make_key(group, name, method):
    """(priv, pub) files for `method`; HS has a secret and no public key."""
    priv = group.path(name + ".key")
    if method.startswith("HS"):
        with open(priv, "wb") as f:
            f.write(os.urandom(64))
        return priv, None
    pub = group.path(name + ".pub")
    if method.startswith("ES"):
        curve = {"256": "prime256v1", "384": "secp384r1", "512": "secp521r1"}[method[2:]]
        gen = ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:" + curve,
               "-out", priv]
    else:
        gen = ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
               "-out", priv]
    subprocess.run(gen, check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "pkey", "-in", priv, "-pubout", "-out", pub], check=True,
                   capture_output=True, timeout=60)
    return priv, pub


class JwtSignMethods(unittest.TestCase):
    def setUp(self):
        self.group = ProcessGroup("muster-interop-jwt-")
        self.addCleanup(self.group.close)

    def read(self, cluster, token):
        """A range of j/a with `token`: (HTTP status, body)."""
        status, _, data = request(cluster.members[0].client_url, "POST", "/v3/kv/range",
                                  json.dumps({"key": base64.b64encode(b"j/a").decode()}),
                                  headers={"Authorization": token,
                                           "Content-Type": "application/json"})
        return status, json.loads(data)

    def run_method(self, method):
        priv, pub = make_key(self.group, "right", method)
        wrong, _ = make_key(self.group, "wrong", method)
        flag = "jwt,priv-key=%s,sign-method=%s,ttl=10m" % (priv, method)
        if pub:
            flag += ",pub-key=" + pub
        clusters = [V3Cluster(self.group, kind, label="%s-%s" % (kind, method), size=1,
                              extra=["--auth-token", flag]) for kind in ("etcd", "muster")]
        try:
            for c in clusters:
                c.start()
            for c in clusters:
                c.wait_ready()
        except BaseException:
            sys.stderr.write(self.group.dump_logs())
            raise
        tokens = {}
        for c in clusters:
            for argv in (["user", "add", "root:rootpw"], ["user", "add", "alice:alicepw"],
                         ["role", "add", "jrole"],
                         ["role", "grant-permission", "--prefix=true", "jrole", "readwrite", "j/"],
                         ["user", "grant-role", "alice", "jrole"], ["auth", "enable"]):
                r = c.ctl(*argv)
                self.assertEqual(r.returncode, 0, "%s: etcdctl %s: %s" % (c.kind, argv, r.stderr))
            # etcdctl authenticates with its user and its token is accepted.
            r = c.ctl("put", "j/a", "1", *ALICE)
            self.assertEqual((r.returncode, r.stdout), (0, "OK\n"), "%s: %s" % (c.kind, r.stderr))
            r = c.ctl("get", "j/a", "--print-value-only", *ALICE)
            self.assertEqual((r.returncode, r.stdout), (0, "1\n"), "%s: %s" % (c.kind, r.stderr))
            r = c.ctl("put", "k", "1", *ALICE)
            self.assertIn("Error: etcdserver: permission denied", r.stderr, c.kind)
            status, _, data = request(c.members[0].client_url, "POST", "/v3/auth/authenticate",
                                      json.dumps({"name": "alice", "password": "alicepw"}),
                                      headers={"Content-Type": "application/json"})
            self.assertEqual(status, 200, data)
            tokens[c.kind] = json.loads(data)["token"]
            header = json.loads(b64url_decode(tokens[c.kind].split(".")[0]))
            self.assertEqual(header, {"alg": method, "typ": "JWT"}, c.kind)

        # Each accepts the other's tokens (the same key, the same auth
        # revision after the same steps).
        claims = json.loads(b64url_decode(tokens["muster"].split(".")[1]))
        self.assertEqual(sorted(claims), ["exp", "revision", "username"])
        for c in clusters:
            for signer, token in tokens.items():
                status, doc = self.read(c, token)
                self.assertEqual(status, 200, "%s's token at %s: %s" % (signer, c.kind, doc))
                self.assertEqual(doc["kvs"][0]["value"], base64.b64encode(b"1").decode())
            # Signed outside both with the right key: accepted; with another
            # key: refused.
            good = dict(claims, exp=int(time.time()) + 300)
            status, doc = self.read(c, sign(method, priv, good))
            self.assertEqual(status, 200, "%s: openssl-signed token: %s" % (c.kind, doc))
            status, doc = self.read(c, sign(method, wrong, good))
            self.assertEqual((status, doc.get("message")), (401, "etcdserver: invalid auth token"),
                             "%s: a token signed with another key: %s" % (c.kind, doc))

    def test_rsa_pkcs1_rs384(self):
        self.run_method("RS384")

    def test_rsa_pss_ps256(self):
        self.run_method("PS256")

    def test_ecdsa_es512(self):
        self.run_method("ES512")

    def test_hmac_hs256(self):
        self.run_method("HS256")


if __name__ == "__main__":
    unittest.main()
