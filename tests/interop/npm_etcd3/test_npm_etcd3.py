"""The npm `etcd3` client 1.1.2 (grpc-js, a second language's gRPC stack)
against a 3-member muster cluster, and against etcd 3.4 as a sanity check:
client.js does KV put/get/delete, a txn with if/then/else, a watch that
receives put and delete events, and a lease kept alive with a key attached.

The client is installed at test time with `npm ci` from the committed
package-lock.json into MUSTER_NPM_DIR (CMake points it under the build
tree), once; later runs reuse it.
"""

import fcntl
import json
import os
import shutil
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
from harness import ProcessGroup  # noqa: E402
from v3cluster import V3Cluster  # noqa: E402

NPM_DIR = os.environ.get("MUSTER_NPM_DIR", os.path.join(ROOT, "build", "npm-etcd3"))


def install_etcd3():
    """npm ci into NPM_DIR unless the same lock file is installed there."""
    os.makedirs(NPM_DIR, exist_ok=True)
    with open(os.path.join(NPM_DIR, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(os.path.join(HERE, "package-lock.json")) as f:
            want = f.read()
        have_path = os.path.join(NPM_DIR, "package-lock.json")
        installed = os.path.join(NPM_DIR, "node_modules", "etcd3", "package.json")
        if os.path.exists(installed) and os.path.exists(have_path):
            with open(have_path) as f:
                if f.read() == want:
                    return NPM_DIR
        for name in ("package.json", "package-lock.json"):
            shutil.copy(os.path.join(HERE, name), os.path.join(NPM_DIR, name))
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                           cwd=NPM_DIR, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise AssertionError("npm ci failed (%d):\n%s%s" % (r.returncode, r.stdout, r.stderr))
        with open(installed) as f:
            assert json.load(f)["version"] == "1.1.2"
    return NPM_DIR


class NpmEtcd3(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.npm_dir = install_etcd3()

    def run_client(self, kind):
        group = ProcessGroup("muster-npm-etcd3-%s-" % kind)
        self.addCleanup(group.close)
        c = V3Cluster(group, kind).start()
        try:
            c.wait_ready()
        except AssertionError as e:
            self.fail("%s\n%s" % (e, group.dump_logs()))
        env = dict(os.environ, NODE_PATH=os.path.join(self.npm_dir, "node_modules"))
        r = subprocess.run(["node", os.path.join(HERE, "client.js"), ",".join(c.endpoints)],
                           env=env, capture_output=True, text=True, timeout=90)
        lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
        detail = "exit %d\nstdout:\n%s\nstderr:\n%s\nlogs:\n%s" % (
            r.returncode, r.stdout, r.stderr[-3000:], group.dump_logs(2000))
        self.assertTrue(lines, detail)
        summary = json.loads(lines[-1])
        self.assertTrue(summary["ok"], summary.get("error", "") + "\n" + detail)
        self.assertEqual(r.returncode, 0, detail)
        self.assertEqual(len(summary["checks"]), 4, detail)

    def test_muster(self):
        self.run_client("muster")

    def test_etcd(self):
        self.run_client("etcd")


if __name__ == "__main__":
    unittest.main()
