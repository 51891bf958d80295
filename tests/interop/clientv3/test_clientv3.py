"""Go clientv3 (etcd 3.4, Debian golang-etcd-server-dev) across a member
failure: failover.go, built here offline in GOPATH mode, runs a watch
(WithPrefix, WithRev, WithPrevKV) and a lease keep-alive on one client
while a second client writes sequential values, kills -9 the member
serving both streams (the leader in one test, a follower in another), and checks that the watch resumes on another member
with no lost and no duplicated event and that the lease stays alive.

Against a 3-member muster cluster, and against etcd 3.4 as the reference.
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "lib"))
from harness import ProcessGroup  # noqa: E402
from v3cluster import V3Cluster  # noqa: E402

GOCODE = os.environ.get("GOCODE", "/usr/share/gocode")


def go_build(src, out):
    env = dict(os.environ, GO111MODULE="off", GOPATH=GOCODE)
    if "GOCACHE" not in env:
        home_cache = os.path.join(os.path.expanduser("~"), ".cache", "go-build")
        try:
            os.makedirs(home_cache, exist_ok=True)
            env["GOCACHE"] = home_cache
        except OSError:
            env["GOCACHE"] = os.path.join(tempfile.gettempdir(), "muster-go-cache")
    r = subprocess.run(["go", "build", "-o", out, src], env=env, capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        raise AssertionError("go build %s failed:\n%s" % (src, r.stderr))
    return out


class ClientV3Failover(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.bin_dir = tempfile.mkdtemp(prefix="muster-clientv3-")
        cls.failover = go_build(os.path.join(HERE, "failover.go"),
                                os.path.join(cls.bin_dir, "failover"))

    @classmethod
    def tearDownClass(cls):
        import shutil
        shutil.rmtree(cls.bin_dir, ignore_errors=True)

    def run_failover(self, kind, victim):
        group = ProcessGroup("muster-clientv3-%s-" % kind)
        self.addCleanup(group.close)
        c = V3Cluster(group, kind).start()
        try:
            c.wait_ready()
        except AssertionError as e:
            self.fail("%s\n%s" % (e, group.dump_logs()))
        r = subprocess.run([self.failover, "--endpoints", ",".join(c.endpoints),
                            "--pids", ",".join(str(m.proc.pid) for m in c.members),
                            "--count", "300", "--kill-at", "100", "--ttl", "5", "--victim", victim,
                            "--deadline", "60s"],
                           capture_output=True, text=True, timeout=120)
        lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
        self.assertTrue(lines, "failover printed no summary (exit %d):\n%s\n%s" % (
            r.returncode, r.stderr[-3000:], group.dump_logs()))
        s = json.loads(lines[-1])
        print("\n%s: %s" % (kind, lines[-1]), file=sys.stderr)
        detail = "%s\n\nclient stderr:\n%s\n\nlogs:\n%s" % (
            json.dumps(s, indent=1), r.stderr[-3000:], group.dump_logs(2000))
        self.assertEqual(s["failures"], [], detail)
        self.assertEqual(r.returncode, 0, detail)
        self.assertEqual(s["events"], 300, detail)
        self.assertEqual((s["duplicates"], s["missing"]), (0, 0), detail)
        killed = [m for m in c.members if m.client_url == s["killed_url"]]
        self.assertEqual(len(killed), 1, detail)
        self.assertFalse(killed[0].alive(), "the member was not killed")
        self.assertTrue(any(m != s["killed_member"] for m in s["watch_members"]), detail)
        self.assertEqual(s["victim"], victim, detail)
        self.assertGreaterEqual(s["keepalives_after_kill"], 2, detail)
        self.assertGreater(s["lease_ttl_at_end"], 0, detail)
        self.assertTrue(s["leased_key_at_end"], detail)

    def test_etcd_leader_killed(self):
        self.run_failover("etcd", "leader")

    def test_etcd_follower_killed(self):
        self.run_failover("etcd", "follower")

    def test_muster_leader_killed(self):
        self.run_failover("muster", "leader")

    def test_muster_follower_killed(self):
        self.run_failover("muster", "follower")


if __name__ == "__main__":
    unittest.main()
