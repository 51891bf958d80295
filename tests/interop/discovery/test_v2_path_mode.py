"""muster-discovery in path mode answers exactly as etcd 3.4's v2 keys API.

The same requests -- the ones a self-hosted discovery URL sees: the size set
up by hand, etcd's discovery client reading, registering, watching and a
bootstrap being undone -- go to a real etcd 3.4 (--enable-v2) and to
muster-discovery under the same /v2/keys/<prefix>/<token> path.  Statuses,
actions, keys, values, error codes, causes and the shape of every node must
be the same; indexes are compared relative to the first write (the two
stores count from different starts), and directory listings as sets (etcd
lists children in no fixed order).
"""

import json
import os
import sys
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "lib"))
from harness import Discovery, Etcd, ProcessGroup, request, wait_for  # noqa: E402

TOKEN = "/v2/keys/discovery/seed-path-mode-token-01"
ID1, ID2 = "4d59f8148bb377e2", "91bc3c398fb3c146"
VALUE1 = "infra0%3Dhttp%3A%2F%2F10.0.1.10%3A2380"
VALUE2 = "infra1%3Dhttp%3A%2F%2F10.0.1.11%3A2380"


def normalize(value, base):
    """Indexes relative to `base`; children sorted by key; volatile fields
    of etcd's (the raft term/index headers) are not in the body."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in ("createdIndex", "modifiedIndex", "index") and isinstance(v, int):
                out[k] = v - base
            else:
                out[k] = normalize(v, base)
        if "nodes" in out:
            out["nodes"] = sorted(out["nodes"], key=lambda n: n["key"])
        return out
    if isinstance(value, list):
        return [normalize(v, base) for v in value]
    return value


class PathModeMatchesEtcdV2(unittest.TestCase):
    def setUp(self):
        self.group = ProcessGroup("muster-interop-pathmode-")
        self.addCleanup(self.group.close)
        self.etcd = Etcd(self.group, "v2", enable_v2=True)
        self.disc = Discovery(self.group, args=["--wait-timeout", "5s"])
        wait_for(self.etcd.healthy, 30, "etcd to be healthy")

    def conversation(self, base_url):
        """The requests, in order; returns [(label, status, body json or text)]."""
        out = []
        base = {}

        def call(label, method, path, body=None):
            status, headers, data = request(base_url, method, path, body)
            text = data.decode()
            doc = json.loads(text) if text.strip().startswith("{") else text
            if "base" not in base and status in (200, 201) and isinstance(doc, dict):
                base["base"] = doc["node"]["modifiedIndex"]
            out.append((label, status, doc, int(headers.get("x-etcd-index", "0"))))
            return doc

        call("set size", "PUT", TOKEN + "/_config/size", "value=3")
        call("get size", "GET", TOKEN + "/_config/size?quorum=false&recursive=false&sorted=false")
        call("list empty", "GET", TOKEN + "?quorum=false&recursive=false&sorted=false")
        call("register", "PUT", TOKEN + "/" + ID1 + "?prevExist=false", "value=" + VALUE1)
        call("register again", "PUT", TOKEN + "/" + ID1 + "?prevExist=false", "value=" + VALUE1)
        call("get member", "GET", TOKEN + "/" + ID1)
        # A long-poll for the next change, answered by the second registration.
        waited = {}

        def wait():
            status, _, data = request(base_url, "GET", TOKEN + "?wait=true&recursive=true&waitIndex=" +
                                      str(out[-1][2]["node"]["modifiedIndex"] + 1), timeout=20)
            waited["answer"] = (status, json.loads(data.decode()))

        t = threading.Thread(target=wait)
        t.start()
        # Started and waiting: give the poll a moment's head start by polling
        # the token itself, then register.
        call("list one", "GET", TOKEN + "?quorum=false&recursive=false&sorted=false")
        call("register second", "PUT", TOKEN + "/" + ID2 + "?prevExist=false", "value=" + VALUE2)
        t.join(20)
        self.assertIn("answer", waited, "the long-poll was not answered")
        out.append(("watch", waited["answer"][0], waited["answer"][1], 0))
        call("list two", "GET", TOKEN + "?quorum=false&recursive=false&sorted=false")
        call("list recursive", "GET", TOKEN + "?recursive=true")
        call("delete member", "DELETE", TOKEN + "/" + ID2)
        call("get deleted", "GET", TOKEN + "/" + ID2)
        call("unknown token", "GET", "/v2/keys/discovery/no-such-token-000000001")
        call("unknown size", "GET", "/v2/keys/discovery/no-such-token-000000001/_config/size")
        return [(label, status, normalize(doc, base["base"]) if isinstance(doc, dict) else doc)
                for label, status, doc, _ in out]

    def test_answers_are_etcds(self):
        theirs = self.conversation(self.etcd.client_url)
        ours = self.conversation(self.disc.url)
        self.assertEqual(len(theirs), len(ours))
        for (label, st_e, doc_e), (_, st_m, doc_m) in zip(theirs, ours):
            with self.subTest(request=label):
                self.assertEqual(st_m, st_e, "status of %s: etcd %s, muster %s\netcd: %s\nours: %s"
                                 % (label, st_e, st_m, doc_e, doc_m))
                self.assertEqual(doc_m, doc_e, label)


if __name__ == "__main__":
    unittest.main(verbosity=2)
