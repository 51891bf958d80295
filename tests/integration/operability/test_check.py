"""`musterctl check perf` and `check datascale` as etcdctl's: the same
workloads, prefixes, lines, exit codes, and the keys cleaned up after."""

import re
import subprocess
import unittest

from ops import MUSTERCTL, ProcessGroup, etcdctl, single_member, wait_for


def musterctl(endpoint, *args, env=None, timeout=300):
    return subprocess.run([MUSTERCTL, "--endpoints", endpoint] + list(args), capture_output=True,
                          text=True, timeout=timeout, env=env)


class CheckTest(unittest.TestCase):
    def setUp(self):
        self.group = ProcessGroup("muster-ops-check-")
        self.addCleanup(self.group.close)
        c = single_member(self.group)
        self.m = c.members[0]
        wait_for(self.m.healthy, 30, "member healthy")

    def test_perf_prints_etcdctls_verdict_and_cleans_up(self):
        r = musterctl(self.m.client_url, "check", "perf", "--load", "s", "--duration", "3s")
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 4, r.stdout + r.stderr)
        self.assertRegex(lines[0], r"^(PASS: Throughput is|FAIL: Throughput too low:) \d+ writes/s$")
        self.assertRegex(lines[1], r"^(PASS: Slowest request took|Slowest request took too long:) "
                                   r"\d+\.\d{6}s$")
        self.assertRegex(lines[2], r"^(PASS: Stddev is|Stddev too high:) \d+\.\d{6}s$")
        self.assertIn(lines[3], ("PASS", "FAIL"))
        self.assertEqual(r.returncode, 0 if lines[3] == "PASS" else 1, r.stderr)
        # ~150 writes/s for 3 s went in and were deleted again.
        writes = int(re.search(r"(\d+) writes/s", lines[0]).group(1))
        self.assertGreater(writes, 50)
        g = etcdctl(self.m.client_url, "get", "/etcdctl-check-perf/", "--prefix", "--keys-only")
        self.assertEqual(g.returncode, 0, g.stderr)
        self.assertEqual(g.stdout.strip(), "")

    def test_perf_refuses_a_prefix_with_keys_and_unknown_loads(self):
        self.m.put("/etcdctl-check-perf/x", "y")
        r = musterctl(self.m.client_url, "check", "perf", "--duration", "1s")
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn('prefix "/etcdctl-check-perf/" has keys. Delete with etcdctl del --prefix '
                      "/etcdctl-check-perf/ first", r.stderr)
        r = musterctl(self.m.client_url, "check", "perf", "--load", "huge")
        self.assertEqual(r.returncode, 4)
        self.assertIn("unknown load option huge", r.stderr)
        r = musterctl(self.m.client_url, "check", "disk")
        self.assertEqual(r.returncode, 128)

    def test_datascale_reports_memory_and_shows_progress(self):
        r = musterctl(self.m.client_url, "check", "datascale", "--load", "s", "--auto-compact",
                      env={"MUSTERCTL_PROGRESS": "always", "PATH": "/usr/bin:/bin"})
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0], "Start data scale check for work load [10000 key-value pairs, "
                                   "1024 bytes per key-value, 50 concurrent clients].")
        self.assertRegex(lines[1], r"^PASS: Approximate system memory used : -?\d+\.\d\d MB\.$")
        # Progress lines on stderr, ending at 10000 / 10000.
        self.assertRegex(r.stderr, r"check datascale: \d+ / 10000 \[#* *\]")
        self.assertIn("check datascale: 10000 / 10000", r.stderr)
        g = etcdctl(self.m.client_url, "get", "/etcdctl-check-datascale/", "--prefix", "--keys-only")
        self.assertEqual((g.returncode, g.stdout.strip()), (0, ""))


if __name__ == "__main__":
    unittest.main(verbosity=2)
