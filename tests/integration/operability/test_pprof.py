"""--enable-pprof serves real profiles: a CPU profile and a heap sample
that `go tool pprof` reads and symbolizes against the muster binary; without
the flag /debug/pprof/ is 404, as etcd's."""

import os
import shutil
import subprocess
import threading
import time
import unittest

from ops import MUSTER, ProcessGroup, request, single_member, wait_for

import harness  # noqa: E402 (ops put tests/lib on the path)

GO = shutil.which("go") or "/usr/bin/go"


def pprof_top(binary, profile, env_home):
    env = dict(os.environ, HOME=env_home, GOFLAGS="-mod=mod", GOTOOLCHAIN="local",
               PPROF_TMPDIR=env_home)
    return subprocess.run([GO, "tool", "pprof", "-top", "-nodecount=25", binary, profile],
                          capture_output=True, text=True, timeout=120, env=env)


@unittest.skipUnless(os.path.exists(GO), "go tool pprof (golang-go) is needed to read profiles")
class PprofTest(unittest.TestCase):
    def setUp(self):
        self.group = ProcessGroup("muster-ops-pprof-")
        self.addCleanup(self.group.close)

    def top(self, profile, name):
        """`go tool pprof -top` over a profile the member served."""
        path = self.group.path(name)
        with open(path, "wb") as f:
            f.write(profile)
        r = pprof_top(MUSTER, path, self.group.path())
        self.assertEqual(r.returncode, 0, r.stderr)
        return r

    def test_cpu_and_heap_profiles_open_in_pprof(self):
        c = single_member(self.group, extra=["--enable-pprof"])
        m = c.members[0]
        wait_for(m.healthy, 30, "member healthy")
        stop = threading.Event()

        def load():
            i = 0
            while not stop.is_set():
                m.put("load/%d" % (i % 500), "x" * 512)
                i += 1
        t = threading.Thread(target=load)
        t.start()
        try:
            st, h, cpu = request(m.client_url, "GET", "/debug/pprof/profile?seconds=2", timeout=30)
        finally:
            stop.set()
            t.join()
        self.assertEqual(st, 200, cpu[:200])
        self.assertEqual(h["content-type"], "application/octet-stream")
        r = self.top(cpu, "cpu.prof")
        self.assertIn("Type: cpu", r.stdout)
        # Samples over 2 s of load, attributed to the member's own mappings.
        self.assertRegex(r.stdout, r"Showing nodes accounting for \d+(\.\d+)?m?s")
        self.assertIn("[muster]", r.stdout.replace("muster ", "[muster]"))

        st, _, heap = request(m.client_url, "GET", "/debug/pprof/heap")
        if harness.SANITIZER:
            # A sanitizer build has no tcmalloc (docs/reliability.md): it says so.
            self.assertEqual(st, 501, heap[:200])
            self.assertIn(b"sanitizer build, without tcmalloc", heap)
        else:
            self.assertEqual(st, 200)
            self.assertTrue(heap.startswith(b"heap profile:"), heap[:200])
            r = self.top(heap, "heap.prof")
            self.assertIn("flat%", r.stdout)

        # Bad input and a second concurrent profile get clear errors.
        st, _, body = request(m.client_url, "GET", "/debug/pprof/profile?seconds=abc")
        self.assertEqual(st, 400, body)
        self.assertIn(b"seconds must be an integer", body)
        st, _, body = request(m.client_url, "GET", "/debug/pprof/goroutine")
        self.assertEqual(st, 404)
        st, _, body = request(m.client_url, "GET", "/debug/pprof/")
        self.assertEqual(st, 200)
        self.assertIn(b"profile", body)

    def test_without_the_flag_pprof_is_not_served(self):
        c = single_member(self.group)
        m = c.members[0]
        wait_for(m.healthy, 30, "member healthy")
        st, _, _ = request(m.client_url, "GET", "/debug/pprof/profile?seconds=1")
        self.assertEqual(st, 404)


if __name__ == "__main__":
    unittest.main(verbosity=2)
