"""The v2 API of real muster members started with --enable-v2.

- etcd's own v2 client (ETCDCTL_API=2 etcdctl) works against a 3-member
  cluster: set/get/mk/mkdir/ls/rm/rmdir/watch/member list/cluster-health,
  and a TTL key expires (the leader revokes its lease);
- the same request sequence sent to a real etcd 3.4 (--enable-v2) and to
  muster gives the same statuses and JSON, apart from indexes;
- without --enable-v2, /v2/ answers 404, as etcd 3.4;
- a 3-member real etcd 3.4 cluster bootstraps with
  --discovery http://<muster client URL>/v2/keys/discovery/<token>, and a
  late fourth etcd finds the token full and becomes a proxy.
"""

import json
import os
import re
import secrets
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "node"))
import harness  # noqa: E402
from harness import Etcd, ProcessGroup, wait_for  # noqa: E402
from cluster import Cluster  # noqa: E402


def etcdctl2(endpoint, *args, timeout=15):
    env = dict(os.environ, ETCDCTL_API="2")
    r = subprocess.run([harness.ETCDCTL, "--endpoints", endpoint] + list(args), env=env,
                       capture_output=True, timeout=timeout)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def v2(base_url, method, path, form=None):
    """(status, headers, parsed JSON body or text)."""
    status, headers, body = harness.request(base_url, method, path, body=form)
    text = body.decode()
    try:
        return status, headers, json.loads(text) if text.strip() else None
    except ValueError:
        return status, headers, text


INDEX_FIELDS = ("modifiedIndex", "createdIndex", "index")


def normalized(doc):
    """The document with what legitimately differs between two servers
    blanked: indexes, expirations, in-order key names (made of an index),
    and remaining TTLs rounded to ten seconds."""
    if isinstance(doc, dict):
        out = {}
        for k, v in doc.items():
            if k in INDEX_FIELDS:
                out[k] = "<index>"
            elif k == "expiration":
                out[k] = "<time>"
            elif k == "ttl" and isinstance(v, int):
                # Remaining seconds: a slow step may cost one on one server.
                out[k] = "<ttl ~%d>" % ((v + 9) // 10 * 10)
            elif k == "key" and isinstance(v, str):
                out[k] = re.sub(r"/\d{20}$", "/<in-order>", v)
            else:
                out[k] = normalized(v)
        return out
    if isinstance(doc, list):
        return [normalized(x) for x in doc]
    return doc


class V2ApiTest(unittest.TestCase):
    def setUp(self):
        self.group = ProcessGroup("muster-v2-test-")
        self.addCleanup(self.group.close)

    def fail_with_logs(self, e):
        raise AssertionError("%s\n\nlogs:\n%s" % (e, self.group.dump_logs())) from None

    def muster_cluster(self, size, v2_enabled=True):
        c = Cluster(size, group=self.group)
        for m in c.members:
            m.extra = ["--enable-v2"] if v2_enabled else []
        c.start()
        c.wait_healthy(30)
        wait_for(lambda: c.leader(), 15, "a leader")
        return c

    def test_etcdctl_v2_commands_work_against_a_three_member_cluster(self):
        try:
            self._etcdctl()
        except AssertionError as e:
            self.fail_with_logs(e)

    def _etcdctl(self):
        c = self.muster_cluster(3)
        ep = ",".join(m.client_url for m in c.members)
        one, two = c.members[0].client_url, c.members[2].client_url

        self.assertEqual(etcdctl2(one, "set", "/foo", "bar")[:2], (0, "bar\n"))
        # Written through one member, read through another (quorum read).
        self.assertEqual(etcdctl2(two, "get", "--quorum", "/foo")[:2], (0, "bar\n"))
        rc, _, err = etcdctl2(ep, "mk", "/foo", "again")
        self.assertNotEqual(rc, 0)
        self.assertIn("105: Key already exists (/foo)", err)
        self.assertEqual(etcdctl2(ep, "mk", "/new", "v")[:2], (0, "v\n"))
        self.assertEqual(etcdctl2(ep, "update", "/new", "w")[:2], (0, "w\n"))
        self.assertEqual(etcdctl2(ep, "mkdir", "/dir")[0], 0)
        self.assertEqual(etcdctl2(ep, "set", "/dir/x", "1")[0], 0)
        rc, out, _ = etcdctl2(ep, "ls", "/")
        self.assertEqual((rc, sorted(out.split())), (0, ["/dir", "/foo", "/new"]))
        rc, out, _ = etcdctl2(ep, "ls", "--recursive", "/")
        self.assertEqual(sorted(out.split()), ["/dir", "/dir/x", "/foo", "/new"])
        rc, _, err = etcdctl2(ep, "rmdir", "/dir")
        self.assertIn("108: Directory not empty (/dir)", err)
        rc, _, err = etcdctl2(ep, "get", "/dir/nothing")
        self.assertIn("100: Key not found (/dir/nothing)", err)
        self.assertEqual(etcdctl2(ep, "rm", "--recursive", "/dir")[0], 0)
        rc, out, _ = etcdctl2(ep, "rm", "/foo")
        self.assertEqual(rc, 0)
        self.assertIn("PrevNode.Value: bar", out)
        rc, out, _ = etcdctl2(ep, "ls", "/")
        self.assertEqual(out.split(), ["/new"])

        # watch: a long poll answered by a write through another member.
        # (etcdctl syncs the member list first, then picks any member.)
        env = dict(os.environ, ETCDCTL_API="2")
        watcher = subprocess.Popen([harness.ETCDCTL, "--endpoints", two, "watch", "/w"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            # The watch is in place once a member counts an open waiter.
            wait_for(lambda: sum(v2(m.client_url, "GET", "/v2/stats/store")[2]["watchers"]
                                 for m in c.members) == 1, 10, "etcdctl watch to wait")
            self.assertEqual(etcdctl2(one, "set", "/w", "woken")[0], 0)
            out, _ = watcher.communicate(timeout=10)
            self.assertEqual(out.decode(), "woken\n")
        finally:
            if watcher.poll() is None:
                watcher.kill()
                watcher.wait()

        # A TTL key goes away: the leader revokes its lease.
        self.assertEqual(etcdctl2(ep, "set", "--ttl", "1", "/tmp", "x")[0], 0)
        wait_for(lambda: "100: Key not found" in etcdctl2(two, "get", "/tmp")[2], 15,
                 "the TTL key to expire")

        # Members: every member, as etcd lists them, from every member.
        rc, out, _ = etcdctl2(ep, "member", "list")
        self.assertEqual(rc, 0)
        lines = sorted(out.strip().splitlines())
        self.assertEqual(len(lines), 3, out)
        for m, line in zip(sorted(c.members, key=lambda m: m.name), sorted(
                lines, key=lambda l: re.search(r"name=(\S+)", l).group(1))):
            self.assertIn("name=%s peerURLs=%s clientURLs=%s" % (m.name, m.peer_url,
                                                                m.client_url), line)
        self.assertEqual(sum("isLeader=true" in l for l in lines), 1, out)
        rc, out, _ = etcdctl2(ep, "cluster-health")
        self.assertEqual(rc, 0, out)
        self.assertIn("cluster is healthy", out)
        status, _, body = v2(one, "GET", "/v2/machines")
        self.assertEqual(status, 200)
        self.assertEqual(body, ", ".join(sorted(m.client_url for m in c.members)))

        # member add / remove through the v2 members API (etcdctl v2).  As
        # etcd, a member refuses changes until it has been connected to the
        # voters for 5 s ("unhealthy cluster", a 5xx that etcdctl v2 words
        # as "has no leader"): retry until accepted.
        newcomer = "http://127.0.0.1:%d" % harness.free_port()
        box = {}

        # A peer URL already in use: refused with etcd's 409 once the
        # cluster takes changes at all (the URLs are checked after the
        # health rules, as etcd checks them when the change is applied).
        taken = c.members[1].peer_url

        def refused_as_taken():
            box["r"] = etcdctl2(one, "member", "add", "m5", taken)
            return "has no leader" not in box["r"][2]
        wait_for(refused_as_taken, 30, "member add to be checked")
        rc, out, err = box["r"]
        self.assertNotEqual(rc, 0)
        self.assertIn("Peer URLs already exists", out + err)

        def added():
            box["r"] = etcdctl2(one, "member", "add", "m4", newcomer)
            return box["r"][0] == 0 or "has no leader" not in box["r"][2]
        wait_for(added, 30, "member add to be accepted")
        rc, out, err = box["r"]
        self.assertEqual(rc, 0, err)
        m = re.match(r"Added member named m4 with ID ([0-9a-f]+) to cluster", out)
        self.assertTrue(m, out)
        new_id = m.group(1)
        self.assertIn('ETCD_INITIAL_CLUSTER_STATE="existing"', out)
        # The member that took the change answered once it applied it; another
        # member lists it once it has applied it too (GET /v2/members is each
        # member's own view, as in etcd).
        wait_for(lambda: new_id in [x["id"] for x in v2(two, "GET", "/v2/members")[2]["members"]],
                 10, "the other member to list m4")
        # While m4 is an unstarted voter the cluster is unhealthy for any
        # further voter, as in etcd (a 5xx, "has no leader" to etcdctl v2).
        rc, out, err = etcdctl2(one, "member", "add", "m5", newcomer)
        self.assertNotEqual(rc, 0)
        self.assertIn("has no leader", out + err)
        rc, out, err = etcdctl2(one, "member", "remove", new_id)
        self.assertEqual((rc, out.strip()), (0, "Removed member %s from cluster" % new_id), err)
        rc, out, err = etcdctl2(one, "member", "remove", new_id)
        self.assertNotEqual(rc, 0)

    def test_same_requests_give_the_same_json_as_etcd_34(self):
        try:
            self._same_json()
        except AssertionError as e:
            self.fail_with_logs(e)

    def _same_json(self):
        etcd = Etcd(self.group, "ref", enable_v2=True)
        muster = self.muster_cluster(1).members[0]
        plain = Cluster(1, group=self.group, token="no-v2")
        plain.members[0].name = "plain"  # its own data dir in the shared group
        plain.members[0].data_dir = self.group.path("plain.data")
        plain.start()
        wait_for(etcd.healthy, 30, "etcd to be healthy")
        plain.wait_healthy(30)

        # (method, path, form); a path may be a function of the earlier
        # answers on the same server (their indexes differ).
        steps = [
            ("PUT", "/v2/keys/cmp/a", "value=1"),
            ("PUT", "/v2/keys/cmp/a", "value=2"),
            ("GET", "/v2/keys/cmp/a", None),
            ("PUT", "/v2/keys/cmp/a?prevExist=false", "value=3"),
            ("PUT", "/v2/keys/cmp/a?prevExist=true", "value=3"),
            ("PUT", "/v2/keys/cmp/a?prevValue=nope", "value=4"),
            ("PUT", "/v2/keys/cmp/a?prevValue=3", "value=5"),
            ("PUT", "/v2/keys/cmp/b?prevExist=true", "value=1"),
            ("PUT", "/v2/keys/cmp/dir?dir=true", None),
            ("PUT", "/v2/keys/cmp/dir", "dir=true&prevExist=false"),
            ("PUT", "/v2/keys/cmp/dir/x", "value=x"),
            ("PUT", "/v2/keys/cmp/dir/sub/y", "value=y"),
            ("PUT", "/v2/keys/cmp/_hidden", "value=h"),
            ("GET", "/v2/keys/cmp?sorted=true", None),
            ("GET", "/v2/keys/cmp?recursive=true&sorted=true", None),
            ("GET", "/v2/keys/cmp/_hidden", None),
            ("GET", "/v2/keys/cmp/missing/deeper", None),
            ("GET", "/v2/keys/cmp/a/x", None),
            ("PUT", "/v2/keys/cmp/a/x", "value=1"),
            ("PUT", "/v2/keys/cmp/dir", "value=v"),
            ("PUT", "/v2/keys/", "value=v"),
            ("DELETE", "/v2/keys/cmp/dir", None),
            ("DELETE", "/v2/keys/cmp/dir?dir=true", None),
            ("DELETE", "/v2/keys/cmp/dir?recursive=true", None),
            ("PUT", "/v2/keys/cmp/t", "value=v&ttl=100"),
            ("PUT", "/v2/keys/cmp/t?prevExist=true&refresh=true", "ttl=200"),
            ("PUT", "/v2/keys/cmp/t", "ttl=abc"),
            ("PUT", "/v2/keys/cmp/t?prevValue=", "value=1"),
            ("PUT", "/v2/keys/cmp/t?refresh=true", "ttl=5&value=x"),
            ("PUT", "/v2/keys/cmp/t?refresh=true", "value="),
            ("PUT", "/v2/keys/cmp/t?prevExist=maybe", "value=1"),
            ("GET", "/v2/keys/cmp?recursive=nope", None),
            ("GET", "/v2/keys/cmp?wait=true&waitIndex=x", None),
            ("PUT", "/v2/keys/cmp/a?wait=true", "value=1"),
            ("POST", "/v2/keys/cmp/queue", "value=job1"),
            ("POST", "/v2/keys/cmp/queue", "value=job2"),
            ("GET", "/v2/keys/cmp/queue?sorted=true", None),
            ("POST", "/v2/keys/cmp/a", "value=x"),
            ("PUT", "/v2/keys/cmp/c?noValueOnSuccess=true", "value=1"),
            ("DELETE", "/v2/keys/cmp/a?prevValue=nope", None),
            ("DELETE", "/v2/keys/cmp/a?prevValue=5", None),
            # A wait for a change already made: answered from history.
            # (step 38 wrote /cmp/c; its X-Etcd-Index is that write's index).
            ("GET", lambda r: "/v2/keys/cmp/c?wait=true&waitIndex=%s" % r[38][1]["x-etcd-index"],
             None),
            ("GET", "/v2/keys/cmp?recursive=true&sorted=true", None),
            # A wait on a key inside a deleted directory gets the directory's
            # delete (step 44's X-Etcd-Index is the delete's index).
            ("PUT", "/v2/keys/cmp/dir2/x", "value=x"),
            ("DELETE", "/v2/keys/cmp/dir2?recursive=true", None),
            ("GET", lambda r: "/v2/keys/cmp/dir2/x?wait=true&waitIndex=%s"
             % r[44][1]["x-etcd-index"], None),
            ("PATCH", "/v2/keys/cmp/a", None),
            # The previous node keeps the TTL it had; ttl=0 is a TTL (the
            # node expires at once), an empty ttl= is none.
            ("PUT", "/v2/keys/cmp/t2", "value=v&ttl=100"),
            ("PUT", "/v2/keys/cmp/t2", "value=w"),
            ("PUT", "/v2/keys/cmp/t3", "value=v&ttl=100"),
            ("PUT", "/v2/keys/cmp/t3?prevExist=true", "value=w&ttl="),
            ("PUT", "/v2/keys/cmp/t4", "value=v&ttl=100"),
            ("DELETE", "/v2/keys/cmp/t4", None),
            ("PUT", "/v2/keys/cmp/z", "value=v&ttl=0"),
        ]

        def run(url):
            answers = []
            for method, path, form in steps:
                p = path(answers) if callable(path) else path
                answers.append(v2(url, method, p, form))
            return answers

        want = run(etcd.client_url)
        got = run(muster.client_url)
        self.assertEqual(steps[38][1], "/v2/keys/cmp/c?noValueOnSuccess=true")
        self.assertEqual(steps[44][1], "/v2/keys/cmp/dir2?recursive=true")
        for (method, path, form), (ws, wh, wb), (gs, gh, gb) in zip(steps, want, got):
            waits = callable(path) or "wait=true" in path
            what = "%s %s %s" % (method, "<wait>" if callable(path) else path, form or "")
            self.assertEqual(gs, ws, "%s: status (muster %s, etcd %s)" % (what, gb, wb))
            if method == "PATCH":
                self.assertEqual(gh.get("allow"), wh.get("allow"), what)
                continue
            self.assertEqual(normalized(gb), normalized(wb), what)
            if ws < 500:
                self.assertEqual(gh.get("content-type"), wh.get("content-type"), what)
                for h in ("x-etcd-index", "x-etcd-cluster-id"):
                    self.assertIn(h, gh, what)
                if ws in (200, 201) and not waits:
                    for h in ("x-raft-index", "x-raft-term"):
                        self.assertIn(h, gh, what)

        # The member list has etcd's shape.
        ws, _, wb = v2(etcd.client_url, "GET", "/v2/members")
        gs, gh, gb = v2(muster.client_url, "GET", "/v2/members")
        self.assertEqual(gs, ws)
        self.assertEqual([sorted(m) for m in gb["members"]], [sorted(m) for m in wb["members"]])
        self.assertEqual(gb["members"][0]["clientURLs"], [muster.client_url])
        self.assertEqual(gh["x-etcd-cluster-id"],
                         "%x" % int(muster.status()["header"]["cluster_id"]))

        # Without --enable-v2, as etcd 3.4 without it: 404.
        for path in ("/v2/keys/cmp", "/v2/members", "/v2/machines"):
            status, _, _ = v2(plain.members[0].client_url, "GET", path)
            self.assertEqual(status, 404, path)
        status, _, _ = v2(plain.members[0].client_url, "PUT", "/v2/keys/x", "value=1")
        self.assertEqual(status, 404)

    def test_etcd_cluster_bootstraps_through_a_token_hosted_on_muster(self):
        try:
            self._discovery()
        except AssertionError as e:
            self.fail_with_logs(e)

    def _discovery(self):
        c = self.muster_cluster(3)
        host = c.members[1]
        token = secrets.token_hex(16)
        token_path = "/v2/keys/discovery/" + token
        # As the seeds do it: the size key, written with curl.
        r = subprocess.run(["curl", "-sS", "-X", "PUT", host.client_url + token_path +
                            "/_config/size", "-d", "value=3"], capture_output=True, timeout=15)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["node"]["value"], "3")

        url = host.client_url + token_path
        etcds = [Etcd(self.group, "d%d" % i, ["--discovery", url]) for i in range(3)]

        def healthy():
            for e in etcds:
                if not e.proc.alive():
                    raise AssertionError("etcd %s exited:\n%s" % (e.name, e.proc.log()[-3000:]))
            return all(e.healthy() for e in etcds)

        wait_for(healthy, 60, "the etcd cluster to be healthy", interval=0.1)
        want = sorted(e.name for e in etcds)
        for e in etcds:
            names = wait_for(lambda: e.member_names(), 15, "member list on " + e.name,
                             interval=0.2)
            self.assertEqual(names, want)

        # A late joiner finds the token full and becomes a proxy (etcd's
        # default --discovery-fallback=proxy) without registering.
        late = Etcd(self.group, "late", ["--discovery", url])
        wait_for(late.is_proxy, 30, "the late joiner to fall back to proxy", interval=0.1)

        # The token directory on every muster member: the three
        # registrations, _config hidden.
        for m in c.members:
            status, headers, body = v2(m.client_url, "GET", token_path + "?quorum=true")
            self.assertEqual(status, 200, body)
            nodes = body["node"]["nodes"]
            self.assertEqual(sorted(n["value"].split("=", 1)[0] for n in nodes), want)
            for n in nodes:
                # Keys are v2 keys: the path below /v2/keys.
                self.assertRegex(n["key"], "^/discovery/" + token + "/[0-9a-f]+$")
                self.assertIn("=" + "http://127.0.0.1:", n["value"])
            self.assertGreaterEqual(int(headers["x-etcd-index"]),
                                    max(n["modifiedIndex"] for n in nodes))


if __name__ == "__main__":
    unittest.main()
