"""musterctl end to end: the real binary against real members on loopback.

MUSTERCTL_TEST_SERVER selects what the members are: "muster" (default, the
muster binary from MUSTER_BIN_DIR) or "etcd" (etcd 3.4 from PATH, the server
whose behaviour musterctl copies).  The clusters come from
tests/integration/node/cluster.py; only the binary differs.
"""

import base64
import hashlib
import http.client
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "node"))
import cluster  # noqa: E402
from cluster import Cluster, Member, b64, wait_for  # noqa: E402

SERVER = os.environ.get("MUSTERCTL_TEST_SERVER", "muster")
if SERVER == "etcd":
    cluster.MUSTER = shutil.which("etcd") or "etcd"
BIN_DIR = os.environ.get("MUSTER_BIN_DIR", "")
MUSTERCTL = os.path.join(BIN_DIR, "musterctl") if BIN_DIR else "musterctl"


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MUSTERCTL_") and not k.startswith("ETCDCTL_")}
    env.update(extra)
    return env


class Result:
    def __init__(self, p):
        self.code = p.returncode
        self.out = p.stdout
        self.err = p.stderr

    def __repr__(self):
        return "exit %d\nstdout:\n%s\nstderr:\n%s" % (self.code, self.out, self.err)


class MusterctlTest(unittest.TestCase):
    def make(self, size):
        c = Cluster(size, token="musterctl-test")
        self.addCleanup(c.close)
        self.addCleanup(lambda: self._dump_on_failure(c))
        c.start()
        c.wait_healthy()
        wait_for(c.leader, 15, "one agreed leader")
        return c

    def _dump_on_failure(self, c):
        outcome = getattr(self, "_outcome", None)
        errors = getattr(outcome, "errors", None) or []
        if any(e for e in errors if e[1]) or (outcome and not getattr(outcome, "success", True)):
            print(c.group.dump_logs(3000), file=sys.stderr)

    def ctl(self, *args, endpoints=None, env=None, stdin=None, timeout=30):
        argv = [MUSTERCTL] + list(args)
        if endpoints is not None:
            argv.append("--endpoints=" + endpoints)
        p = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout,
                           env=clean_env(**(env or {})))
        return Result(p)

    def ok(self, *args, **kw):
        r = self.ctl(*args, **kw)
        self.assertEqual(r.code, 0, r)
        return r

    # ------------------------------------------------------------------ kv

    def test_put_get_del_in_every_format(self):
        c = self.make(1)
        ep = c.members[0].client_url
        self.assertEqual(self.ok("put", "foo", "bar", endpoints=ep).out, "OK\n")
        self.assertEqual(self.ok("put", "foo2", "bar 2", endpoints=ep).out, "OK\n")
        self.assertEqual(self.ok("put", "k3", endpoints=ep, stdin="from stdin").out, "OK\n")
        self.assertEqual(self.ok("get", "foo", endpoints=ep).out, "foo\nbar\n")
        self.assertEqual(self.ok("get", "--prefix", "foo", endpoints=ep).out,
                         "foo\nbar\nfoo2\nbar 2\n")
        self.assertEqual(self.ok("get", "foo", "--prefix", "--keys-only", endpoints=ep).out,
                         "foo\n\nfoo2\n\n")
        self.assertEqual(self.ok("get", "k3", endpoints=ep).out, "k3\nfrom stdin\n")
        self.assertEqual(self.ok("get", "nothing", endpoints=ep).out, "")

        # --rev reads the past; json has numbers where the gateway has strings.
        j = json.loads(self.ok("-w", "json", "get", "foo", endpoints=ep).out)
        rev1 = j["kvs"][0]["mod_revision"]
        self.assertIsInstance(rev1, int)
        self.assertIsInstance(j["header"]["cluster_id"], int)
        self.assertEqual(base64.b64decode(j["kvs"][0]["value"]), b"bar")
        self.assertEqual(j["count"], 1)
        self.assertEqual(self.ok("put", "foo", "newer", endpoints=ep).out, "OK\n")
        self.assertEqual(self.ok("get", "foo", "--rev", str(rev1), endpoints=ep).out, "foo\nbar\n")
        self.assertEqual(self.ok("get", "foo", endpoints=ep).out, "foo\nnewer\n")
        r = self.ctl("get", "foo", "--rev", "100000", endpoints=ep)
        self.assertEqual(r.code, 1, r)
        self.assertIn("Error: etcdserver: mvcc: required revision is a future revision", r.err)

        j = json.loads(self.ok("put", "x", "y", "-w", "json", endpoints=ep).out)
        self.assertEqual(set(j), {"header"})
        self.assertIsInstance(j["header"]["revision"], int)

        self.assertEqual(self.ok("del", "nothing", endpoints=ep).out, "0\n")
        self.assertEqual(self.ok("del", "x", endpoints=ep).out, "1\n")
        j = json.loads(self.ok("del", "--prefix", "foo", "--write-out=json", endpoints=ep).out)
        self.assertEqual(j["deleted"], 2)
        self.assertEqual(self.ok("get", "--prefix", "foo", endpoints=ep).out, "")

        for cmd in (["put", "a", "b"], ["get", "a"], ["del", "a"]):
            r = self.ctl(*cmd, "-w", "table", endpoints=ep)
            self.assertEqual(r.code, 4, r)
            self.assertEqual(r.err, "Error: table not supported as output format\n")
        r = self.ctl("get", endpoints=ep)
        self.assertEqual(r.code, 128, r)
        r = self.ctl("get", "a", "-w", "yaml", endpoints=ep)
        self.assertEqual(r.code, 128, r)

    def test_environment_and_failover_to_a_live_endpoint(self):
        c = self.make(1)
        ep = c.members[0].client_url
        dead = "127.0.0.1:%d" % cluster.free_port()
        self.ok("put", "e", "1", env={"MUSTERCTL_ENDPOINTS": ep})
        self.assertEqual(self.ok("get", "e", env={"ETCDCTL_ENDPOINTS": dead + "," + ep}).out,
                         "e\n1\n")
        # The flag beats the environment; MUSTERCTL_ beats ETCDCTL_.
        self.assertEqual(self.ok("get", "e", endpoints=ep, env={"MUSTERCTL_ENDPOINTS": dead}).out,
                         "e\n1\n")
        r = self.ctl("get", "e", env={"MUSTERCTL_ENDPOINTS": dead, "ETCDCTL_ENDPOINTS": ep})
        self.assertEqual(r.code, 2, r)
        self.assertIn("no endpoint could be reached", r.err)
        j = json.loads(self.ok("get", "e", endpoints=ep, env={"ETCDCTL_WRITE_OUT": "json"}).out)
        self.assertEqual(j["count"], 1)

    # --------------------------------------------------------------- watch

    def read_lines(self, proc, n, timeout=15):
        """Up to n lines of a watch's stdout, waiting at most `timeout`."""
        lines = []
        deadline = time.monotonic() + timeout
        while len(lines) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                line = proc.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            lines.append(line)
        return lines

    def watch(self, *args):
        """A running `musterctl watch`; one thread feeds its stdout lines to a queue."""
        p = subprocess.Popen([MUSTERCTL, "watch"] + list(args), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=clean_env())
        p.lines = queue.Queue()

        def pump():
            for line in p.stdout:
                p.lines.put(line.rstrip("\n"))
            p.lines.put(None)

        t = threading.Thread(target=pump, daemon=True)
        t.start()

        def stop():
            p.kill()
            p.wait(10)
            t.join(10)
            p.stdout.close()
            p.stderr.close()
        self.addCleanup(stop)
        return p

    def test_watch_prefix_and_rev_in_simple_and_json(self):
        c = self.make(1)
        m = c.members[0]
        ep = m.client_url
        st, j = m.put("w/a", "1")
        self.assertEqual(st, 200, j)
        start = int(j["header"]["revision"])
        m.put("other", "x")
        m.put("w/b", "2")
        m.call("/v3/kv/deleterange", {"key": b64("w/a")})
        # Replays history from --rev, then keeps streaming new events.
        p = self.watch("--prefix", "w/", "--rev", str(start), "--endpoints", ep)
        self.assertEqual(self.read_lines(p, 9),
                         ["PUT", "w/a", "1", "PUT", "w/b", "2", "DELETE", "w/a", ""])
        m.put("w/c", "3")
        self.assertEqual(self.read_lines(p, 3), ["PUT", "w/c", "3"])

        pj = self.watch("w/b", "--rev", str(start), "-w", "json", "--endpoints", ep)
        lines = self.read_lines(pj, 1)
        self.assertEqual(len(lines), 1)
        ev = json.loads(lines[0])
        self.assertEqual(set(ev), {"Header", "Events", "CompactRevision", "Canceled", "Created"})
        self.assertEqual(len(ev["Events"]), 1)
        self.assertNotIn("type", ev["Events"][0])
        self.assertEqual(base64.b64decode(ev["Events"][0]["kv"]["key"]), b"w/b")
        self.assertIsInstance(ev["Events"][0]["kv"]["mod_revision"], int)
        m.call("/v3/kv/deleterange", {"key": b64("w/b")})
        ev = json.loads(self.read_lines(pj, 1)[0])
        self.assertEqual(ev["Events"][0]["type"], 1)

    def test_watch_from_a_compacted_revision_is_canceled(self):
        c = self.make(1)
        m = c.members[0]
        for i in range(3):
            st, j = m.put("c", str(i))
            self.assertEqual(st, 200, j)
        st, j = m.call("/v3/kv/compaction", {"revision": j["header"]["revision"]})
        self.assertEqual(st, 200, j)
        r = self.ctl("watch", "c", "--rev", "1", endpoints=m.client_url)
        self.assertEqual(r.code, 1, r)
        self.assertEqual(r.out, "")
        self.assertIn("watch was canceled (", r.err)
        self.assertIn("compacted", r.err)
        self.assertTrue(r.err.endswith("Error: watch is canceled by the server\n"), r)

    def test_watch_resumes_on_another_member_without_gaps(self):
        c = self.make(3)
        a, b = c.members[0], c.members[1]
        p = self.watch("k", "--endpoints", a.client_url + "," + b.client_url)
        # Wait until the watch is in place: keep writing until it shows up.
        wait_for(lambda: a.put("k", "probe")[0] == 200 and self.read_lines(p, 3, timeout=1),
                 20, "the watch to print a probe")
        a.kill9()
        for i in range(3):
            wait_for(lambda: b.put("k", "after%d" % i)[0] == 200, 20, "a write on %s" % b.name)
        values = []
        deadline = time.monotonic() + 20
        while "after2" not in values and time.monotonic() < deadline:
            got = self.read_lines(p, 3, timeout=max(0.1, deadline - time.monotonic()))
            if len(got) == 3:
                values.append(got[2])
        # Every write after the failure appears once, in order (probes may repeat
        # before it).
        tail = [v for v in values if v.startswith("after")]
        self.assertEqual(tail, ["after0", "after1", "after2"], values)
        p.kill()
        p.wait(10)
        self.assertIn("watch stream from %s ended" % a.client_url, p.stderr.read())

    # ------------------------------------------------ member and endpoint

    def test_member_list_and_endpoints_of_a_three_member_cluster(self):
        c = self.make(3)
        eps = ",".join(m.client_url for m in c.members)

        # musterctl prints what the first endpoint answers; compare with the
        # gateway's own answer there.
        st, j = c.members[0].call("/v3/cluster/member/list", {})
        self.assertEqual(st, 200, j)
        want = sorted("%x, %s, %s, %s, %s, false" % (
            int(m["ID"]), "started" if m.get("name") else "unstarted", m.get("name", ""),
            ",".join(m["peerURLs"]), ",".join(m.get("clientURLs", [])))
            for m in j["members"])
        out = self.ok("member", "list", endpoints=eps).out
        self.assertEqual(sorted(out.splitlines()), want)
        self.assertEqual(len(want), 3)

        table = self.ok("member", "list", "-w", "table", endpoints=eps).out.splitlines()
        self.assertEqual(len(table), 3 + 3 + 1)
        self.assertRegex(table[1], r"^\|\s+ID\s+\|\s+STATUS\s+\|\s+NAME\s+\|\s+PEER ADDRS\s+\|"
                                   r"\s+CLIENT ADDRS\s+\|\s+IS LEARNER\s+\|$")
        self.assertTrue(all(len(line) == len(table[0]) for line in table))
        js = json.loads(self.ok("member", "list", "-w", "json", endpoints=eps).out)
        self.assertEqual(sorted(m["ID"] for m in js["members"]), sorted(int(m["ID"]) for m in j["members"]))

        health = self.ok("endpoint", "health", endpoints=eps).out.splitlines()
        self.assertEqual(len(health), 3)
        for line, m in zip(health, c.members):
            self.assertRegex(line, r"^%s is healthy: successfully committed proposal: took = "
                                   r"[0-9.]+(ns|µs|ms|s)$" % re.escape(m.client_url))
        hj = json.loads(self.ok("endpoint", "health", "-w", "json", endpoints=eps).out)
        self.assertEqual([h["health"] for h in hj], [True] * 3)
        ht = self.ok("endpoint", "health", "-w", "table", endpoints=eps).out
        self.assertRegex(ht.splitlines()[1], r"^\|\s+ENDPOINT\s+\|\s+HEALTH\s+\|\s+TOOK\s+\|\s+ERROR\s+\|$")
        self.assertEqual(len(ht.splitlines()), 3 + 3 + 1)

        status = self.ok("endpoint", "status", endpoints=eps).out.splitlines()
        self.assertEqual(len(status), 3)
        leaders = [s.split(", ")[4] for s in status]
        self.assertEqual(sorted(leaders), ["false", "false", "true"], status)
        ids = {s.split(", ")[1] for s in status}
        self.assertEqual(ids, {"%x" % int(m["ID"]) for m in j["members"]})
        sj = json.loads(self.ok("endpoint", "status", "-w", "json", endpoints=eps).out)
        self.assertEqual([s["Endpoint"] for s in sj], [m.client_url for m in c.members])
        self.assertIsInstance(sj[0]["Status"]["raftIndex"], int)
        st_table = self.ok("endpoint", "status", "-w", "table", endpoints=eps).out.splitlines()
        self.assertIn("RAFT APPLIED INDEX", st_table[1])
        self.assertEqual(len(st_table), 3 + 3 + 1)
        # --cluster asks every member's advertised client URLs.
        st, j1 = c.members[1].call("/v3/cluster/member/list", {})
        urls = [u for m in j1["members"] for u in m.get("clientURLs", [])]
        self.assertIn(c.members[1].client_url, urls)
        cl = self.ok("endpoint", "health", "--cluster", endpoints=c.members[1].client_url).out
        self.assertEqual([line.split(" is healthy")[0] for line in cl.splitlines()], urls)

        # One follower down: the others still answer (once they agree on a
        # leader again, should an election happen), exit status 1.
        lead = wait_for(c.leader, 15, "one agreed leader")
        victim = [m for m in c.members if m is not lead][-1]
        victim.kill9()
        box = {}

        def two_healthy():
            box["r"] = self.ctl("endpoint", "health", endpoints=eps)
            return len(box["r"].out.splitlines()) == 2
        wait_for(two_healthy, 15, "the two live members to report healthy")
        r = box["r"]
        self.assertEqual(r.code, 1, r)
        self.assertIn("%s is unhealthy: failed to commit proposal: " % victim.client_url, r.err)
        self.assertTrue(r.err.endswith("Error: unhealthy cluster\n"), r)
        r = self.ctl("endpoint", "status", endpoints=eps)
        self.assertEqual(r.code, 1, r)
        self.assertEqual(len(r.out.splitlines()), 2)
        self.assertIn("Failed to get the status of endpoint %s" % victim.client_url, r.err)

    def test_member_add_learner_promote_update_remove(self):
        c = self.make(1)
        ep = c.members[0].client_url
        new = Member(c, "m2")
        r = self.ctl("member", "add", "m2", "--learner", "--peer-urls", new.peer_url, endpoints=ep)
        self.assertEqual(r.code, 0, r)
        lines = r.out.splitlines()
        self.assertRegex(lines[0], r"^Member [ 0-9a-f]{16} added to cluster [ 0-9a-f]{16}$")
        # etcdctl prints IDs as %16x: an ID with a leading zero nibble is
        # space-padded in these lines, and unpadded in member list.
        printed_id = lines[0][len("Member "):len("Member ") + 16]
        new_id = printed_id.strip()
        settings = dict(line.split("=", 1) for line in lines[2:])
        self.assertEqual(settings["ETCD_NAME"], '"m2"')
        self.assertEqual(settings["ETCD_INITIAL_CLUSTER_STATE"], '"existing"')
        self.assertEqual(settings["ETCD_INITIAL_ADVERTISE_PEER_URLS"], '"%s"' % new.peer_url)
        initial = settings["ETCD_INITIAL_CLUSTER"].strip('"')
        self.assertEqual(sorted(initial.split(",")),
                         sorted(["m1=" + c.members[0].peer_url, "m2=" + new.peer_url]))
        self.assertIn("%s, unstarted, , %s, , true" % (new_id, new.peer_url),
                      self.ok("member", "list", endpoints=ep).out)

        # Start it with what member add printed, and promote it once caught up.
        c.members.append(new)
        new.start(initial_cluster=initial, extra=["--initial-cluster-state", "existing"])
        wait_for(lambda: new.healthy() or not new.alive(), 30, "the learner to start")
        r = self.ok("member", "promote", new_id, "--wait-timeout", "30s", endpoints=ep)
        self.assertEqual(r.out.split(" promoted in cluster ")[0], "Member " + printed_id)
        self.assertIn("%s, started, m2, %s, %s, false" % (new_id, new.peer_url, new.client_url),
                      self.ok("member", "list", endpoints=ep).out)
        r = self.ctl("member", "promote", new_id, endpoints=ep)
        self.assertEqual(r.code, 1, r)
        self.assertIn("Error: etcdserver: can only promote a learner member", r.err)

        # Update to the same URL it listens on (the member keeps working).
        r = self.ok("member", "update", new_id, "--peer-urls", new.peer_url, "-w", "json",
                    endpoints=ep)
        self.assertIn(int(new_id, 16), [m["ID"] for m in json.loads(r.out)["members"]])
        # etcd refuses to remove a voter until it has been connected for a
        # while (strict reconfig check): retry until accepted.
        box = {}

        def removed():
            box["r"] = self.ctl("member", "remove", new_id, endpoints=ep)
            return box["r"].code == 0 or "unhealthy cluster" not in box["r"].err
        wait_for(removed, 30, "member remove to be accepted")
        r = box["r"]
        self.assertEqual(r.code, 0, r)
        self.assertRegex(r.out, r"^Member %s removed from cluster [ 0-9a-f]{16}\n$" % printed_id)
        self.assertEqual(len(self.ok("member", "list", endpoints=ep).out.splitlines()), 1)
        r = self.ctl("member", "remove", new_id, endpoints=ep)
        self.assertEqual(r.code, 1, r)
        self.assertIn("Error: etcdserver: member not found", r.err)
        r = self.ctl("member", "remove", "not-hex", endpoints=ep)
        self.assertEqual(r.code, 128, r)

    # ------------------------------------------------------------ snapshot

    def test_snapshot_save_is_a_complete_checksummed_logical_backup(self):
        c = self.make(1)
        m = c.members[0]
        ep = m.client_url
        expected = {}
        for i in range(1100):  # more than one 1000-key page
            k, v = "snap/%05d" % i, "value-%d" % i
            st, j = m.put(k, v)
            self.assertEqual(st, 200, j)
            expected[k] = v
        st, lease = m.call("/v3/lease/grant", {"TTL": 600})
        self.assertEqual(st, 200, lease)
        st, j = m.put("leased", "x", lease=lease["ID"])
        self.assertEqual(st, 200, j)
        expected["leased"] = "x"
        revision = int(j["header"]["revision"])

        path = c.group.path("backup.snap")
        r = self.ok("snapshot", "save", "--logical", path, endpoints=ep, timeout=60)
        self.assertEqual(r.out, "Snapshot saved at %s\n" % path)
        self.assertRegex(r.err, r"snapshot: %d keys, 1 leases \(.*\) at revision %d from %s in "
                         % (len(expected), revision, re.escape(ep)))
        self.assertFalse(os.path.exists(path + ".part"))

        with open(path, "rb") as f:
            raw = f.read()
        lines = raw.split(b"\n")
        self.assertEqual(lines[-1], b"")
        body, end = b"\n".join(lines[:-2]) + b"\n", json.loads(lines[-2])["end"]
        self.assertEqual(end["sha256"], hashlib.sha256(body).hexdigest())
        head = json.loads(lines[0])
        self.assertEqual((head["muster_snapshot"], head["kind"], head["revision"]),
                         (1, "logical", str(revision)))
        self.assertEqual(head["member_id"], m.status()["header"]["member_id"])
        kvs = [json.loads(line)["kv"] for line in lines[1:-2] if b'"kv"' in line[:6]]
        leases = [json.loads(line)["lease"] for line in lines[1:-2] if b'"lease"' in line[:9]]
        got = {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
               for kv in kvs}
        self.assertEqual(got, expected)
        self.assertEqual(end["kvs"], len(expected))
        self.assertEqual([l["ID"] for l in leases], [lease["ID"]])
        self.assertEqual(leases[0]["grantedTTL"], "600")
        leased = [kv for kv in kvs if base64.b64decode(kv["key"]) == b"leased"][0]
        self.assertEqual(leased["lease"], lease["ID"])

        # A file name that is not UTF-8 (Linux allows any byte): saved, and
        # -w json writes the byte as U+FFFD, as etcdctl's Go encoder does.
        # (The JSON writer threw, after the file was written.)
        odd = c.group.path("odd-\udcff.snap")  # the byte 0xff on the command line
        r = self.ok("snapshot", "save", "--logical", "-w", "json", odd, endpoints=ep, timeout=60)
        self.assertTrue(os.path.exists(os.fsencode(odd)))
        self.assertEqual(json.loads(r.out)["path"], odd.replace("\udcff", "\ufffd"))

        # An unwritable destination leaves nothing behind and fails.
        r = self.ctl("snapshot", "save", "--logical", "/nonexistent-dir/x.snap", endpoints=ep)
        self.assertEqual(r.code, 1, r)
        # No member: nothing is written either.
        c.members[0].kill9()
        bad = c.group.path("unreachable.snap")
        r = self.ctl("snapshot", "save", "--logical", bad, endpoints=ep)
        self.assertEqual(r.code, 2, r)
        self.assertFalse(os.path.exists(bad) or os.path.exists(bad + ".part"))

    # ----------------------------------------------------------------- TLS

    def make_certs(self, group):
        """A CA, a server certificate for 127.0.0.1, a client certificate, and a
        client certificate from another CA (untrusted), made with openssl."""
        d = group.path("certs")
        os.makedirs(d)

        def run(*args):
            subprocess.run(["openssl"] + list(args), check=True, capture_output=True, cwd=d)

        def ext(name, text):
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        ext("server.ext", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
        ext("client.ext", "extendedKeyUsage=clientAuth\n")
        for ca in ("ca", "other-ca"):
            run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca + ".key",
                "-out", ca + ".pem", "-days", "2", "-subj", "/CN=" + ca)
        for name, ca, extfile in (("server", "ca", "server.ext"), ("client", "ca", "client.ext"),
                                  ("stranger", "other-ca", "client.ext")):
            run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out",
                name + ".csr", "-subj", "/CN=" + name)
            run("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
                "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", extfile)
        return lambda name: os.path.join(d, name)

    def test_tls_flags_and_environment_with_client_cert_auth(self):
        c = Cluster(1, token="musterctl-tls")
        self.addCleanup(c.close)
        self.addCleanup(lambda: self._dump_on_failure(c))
        cert = self.make_certs(c.group)

        class TlsMember(Member):
            @property
            def client_url(self):
                return "https://127.0.0.1:%d" % self.client_port

        m = TlsMember(c, "m1")
        c.members = [m]
        m.start(extra=["--cert-file", cert("server.pem"), "--key-file", cert("server.key"),
                       "--trusted-ca-file", cert("ca.pem"), "--client-cert-auth"])
        tls = ["--cacert", cert("ca.pem"), "--cert", cert("client.pem"), "--key", cert("client.key")]
        wait_for(lambda: (m.alive() or c._died(m)) and
                 self.ctl("endpoint", "health", *tls, endpoints=m.client_url).code == 0,
                 30, "the TLS member to be healthy")

        self.assertEqual(self.ok("put", "t", "1", *tls, endpoints=m.client_url).out, "OK\n")
        # A scheme-less endpoint is https when TLS files are given.
        hostport = "127.0.0.1:%d" % m.client_port
        self.assertEqual(self.ok("get", "t", *tls, endpoints=hostport).out, "t\n1\n")
        # The same through the environment, etcdctl's names included.
        env = {"MUSTERCTL_ENDPOINTS": m.client_url, "ETCDCTL_CACERT": cert("ca.pem"),
               "ETCDCTL_CERT": cert("client.pem"), "MUSTERCTL_KEY": cert("client.key")}
        self.assertEqual(self.ok("get", "t", env=env).out, "t\n1\n")
        # snapshot save speaks gRPC over the same TLS (ALPN h2, client cert).
        snap = c.group.path("tls.snap")
        self.assertEqual(self.ok("snapshot", "save", snap, *tls, endpoints=hostport).out,
                         "Snapshot saved at %s\n" % snap)
        self.assertEqual(os.path.getsize(snap) % 512, 32)
        r = self.ctl("snapshot", "save", c.group.path("nocert.snap"), "--cacert", cert("ca.pem"),
                     endpoints=m.client_url)
        self.assertNotEqual(r.code, 0, r)
        self.assertFalse(os.path.exists(c.group.path("nocert.snap")))
        # Without a CA the server is trusted only on request.
        self.assertEqual(self.ok("get", "t", "--insecure-skip-tls-verify", "--cert",
                                 cert("client.pem"), "--key", cert("client.key"),
                                 endpoints=m.client_url).out, "t\n1\n")

        refused = {
            "no client certificate": ["--cacert", cert("ca.pem")],
            "untrusted client certificate": ["--cacert", cert("ca.pem"), "--cert",
                                             cert("stranger.pem"), "--key", cert("stranger.key")],
            "server not verifiable": ["--cert", cert("client.pem"), "--key", cert("client.key")],
        }
        for what, flags in refused.items():
            r = self.ctl("get", "t", *flags, endpoints=m.client_url)
            self.assertNotEqual(r.code, 0, "%s: %r" % (what, r))
            self.assertEqual(r.out, "", what)
            self.assertTrue(r.err.startswith("Error: "), "%s: %r" % (what, r))
        r = self.ctl("get", "t", endpoints="http://127.0.0.1:%d" % m.client_port)
        self.assertNotEqual(r.code, 0, r)
        self.assertEqual(r.out, "")

    # ------------------------------------------------------------------ auth
    def test_user_and_password_with_auth_enabled(self):
        c = self.make(1)
        m = c.members[0]

        def gw(path, body, token=None):
            st, j = m.call(path, body) if token is None else self.gateway(m, path, body, token)
            self.assertEqual(st, 200, "%s: %s" % (path, j))
            return j
        # Users and roles through the JSON gateway (musterctl has no user
        # commands): root, and alice with readwrite on a/.
        gw("/v3/auth/user/add", {"name": "root", "password": "rootpw"})
        gw("/v3/auth/role/add", {"name": "root"})
        gw("/v3/auth/user/grant", {"user": "root", "role": "root"})
        gw("/v3/auth/user/add", {"name": "alice", "password": "alicepw"})
        gw("/v3/auth/role/add", {"name": "arole"})
        gw("/v3/auth/role/grant", {"name": "arole", "perm": {
            "permType": "READWRITE", "key": b64("a/"), "range_end": b64("a0")}})
        gw("/v3/auth/user/grant", {"user": "alice", "role": "arole"})
        gw("/v3/auth/enable", {})
        ep = m.client_url

        # Without a user: etcd's error, exit 1.
        r = self.ctl("put", "a/1", "x", endpoints=ep)
        self.assertEqual((r.code, r.out, r.err), (1, "", "Error: etcdserver: user name is empty\n"))
        # name:password, and --user with --password.
        self.assertEqual(self.ok("put", "a/1", "one", "--user", "alice:alicepw", endpoints=ep).out,
                         "OK\n")
        self.assertEqual(self.ok("get", "a/1", "--user", "alice", "--password", "alicepw",
                                 endpoints=ep).out, "a/1\none\n")
        # The environment, as etcdctl's ETCDCTL_USER.
        self.assertEqual(self.ok("get", "a/1", env={"ETCDCTL_USER": "alice:alicepw"},
                                 endpoints=ep).out, "a/1\none\n")
        # A name alone: the password is asked for ("Password: ", then a line).
        r = self.ok("get", "a/1", "--user", "alice", endpoints=ep, stdin="alicepw\n")
        self.assertEqual(r.out, "Password: \na/1\none\n")
        # Outside alice's range: permission denied, exit 1.
        r = self.ctl("put", "b/1", "x", "--user", "alice:alicepw", endpoints=ep)
        self.assertEqual((r.code, r.err), (1, "Error: etcdserver: permission denied\n"))
        r = self.ctl("get", "b/1", "--user", "alice:alicepw", endpoints=ep)
        self.assertEqual((r.code, r.err), (1, "Error: etcdserver: permission denied\n"))
        # A wrong password or an unknown user: no client, exit 2 (etcdctl's).
        for user in ("alice:wrong", "nobody:x"):
            r = self.ctl("get", "a/1", "--user", user, endpoints=ep)
            self.assertEqual((r.code, r.out), (2, ""), r)
            self.assertEqual(r.err, "Error: etcdserver: authentication failed, invalid user ID "
                                    "or password\n")
        # With --password, --user is the whole name (colon included).
        r = self.ctl("get", "a/1", "--user", "alice:alicepw", "--password", "alicepw",
                     endpoints=ep)
        self.assertEqual(r.code, 2, r)
        # Root may do what alice may not.
        self.assertEqual(self.ok("put", "b/1", "root-was-here", "--user", "root:rootpw",
                                 endpoints=ep).out, "OK\n")
        token = gw("/v3/auth/authenticate", {"name": "root", "password": "rootpw"})["token"]
        gw("/v3/auth/disable", {}, token)
        self.assertEqual(self.ok("get", "b/1", endpoints=ep).out, "b/1\nroot-was-here\n")
        # A user given to a cluster without auth is not an error (clientv3).
        self.assertEqual(self.ok("get", "b/1", "--user", "alice:alicepw", endpoints=ep).out,
                         "b/1\nroot-was-here\n")

    def gateway(self, member, path, body, token):
        conn = http.client.HTTPConnection("127.0.0.1", member.client_port, timeout=15)
        try:
            conn.request("POST", path, body=json.dumps(body),
                         headers={"Content-Type": "application/json", "Authorization": token})
            r = conn.getresponse()
            text = r.read().decode()
            return r.status, json.loads(text) if text else None
        finally:
            conn.close()


if __name__ == "__main__":
    # Exit 77 (ctest's SKIP_RETURN_CODE) when every selected test was skipped,
    # so a skip shows as skipped rather than passed.
    main = unittest.main(exit=False, verbosity=2)
    r = main.result
    if r.testsRun and len(r.skipped) == r.testsRun:
        sys.exit(77)
    sys.exit(0 if r.wasSuccessful() else 1)
