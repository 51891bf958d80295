"""--enable-pprof serves real profiles: a CPU profile and a heap sample
that gperftools' own pprof (google-pprof) symbolizes against the muster
binary, down to muster's C++ function names, and that `go tool pprof`
reads; without the flag /debug/pprof/ is 404, as etcd's.

Go's bundled `go tool pprof` symbolizes a local binary with Go's own DWARF
reader, which names no C++ function and takes about a minute over a build
with debug information; the test runs it with -symbolize=none over files
(the format, the sample type, the mappings), and google-pprof for the names
(docs/operations.md).  Given the member's URL and -symbolize=remote, `go
tool pprof` asks the member itself for the names (/debug/pprof/symbol), as
an operator without the binary does with etcd."""

import os
import shutil
import subprocess
import threading
import unittest

from ops import MUSTER, ProcessGroup, etcd_cluster, request, single_member, wait_for

import harness  # noqa: E402 (ops put tests/lib on the path)

GO = shutil.which("go") or "/usr/bin/go"
GOOGLE_PPROF = shutil.which("google-pprof") or "/usr/bin/google-pprof"


def go_pprof_top(profile, env_home):
    env = dict(os.environ, HOME=env_home, GOFLAGS="-mod=mod", GOTOOLCHAIN="local",
               PPROF_TMPDIR=env_home)
    return subprocess.run([GO, "tool", "pprof", "-symbolize=none", "-top", "-nodecount=25",
                           MUSTER, profile],
                          capture_output=True, text=True, timeout=120, env=env)


def go_pprof_remote_top(url, env_home):
    env = dict(os.environ, HOME=env_home, GOFLAGS="-mod=mod", GOTOOLCHAIN="local",
               PPROF_TMPDIR=env_home)
    return subprocess.run([GO, "tool", "pprof", "-symbolize=remote", "-top", "-nodecount=400",
                           url],
                          capture_output=True, text=True, timeout=120, env=env)


def google_pprof_text(profile, env_home):
    return subprocess.run([GOOGLE_PPROF, "--text", MUSTER, profile], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, HOME=env_home))


@unittest.skipUnless(os.path.exists(GO), "go tool pprof (golang-go) is needed to read profiles")
@unittest.skipUnless(os.path.exists(GOOGLE_PPROF),
                     "google-pprof (google-perftools) is needed to symbolize profiles")
class PprofTest(unittest.TestCase):
    def setUp(self):
        self.group = ProcessGroup("muster-ops-pprof-")
        self.addCleanup(self.group.close)

    def save(self, profile, name):
        path = self.group.path(name)
        with open(path, "wb") as f:
            f.write(profile)
        return path

    def top(self, path):
        """`go tool pprof -top` over a profile the member served."""
        r = go_pprof_top(path, self.group.path())
        self.assertEqual(r.returncode, 0, r.stderr)
        return r

    def symbolized(self, path):
        """google-pprof's text report: one line per function."""
        r = google_pprof_text(path, self.group.path())
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def profiled_member(self):
        """A member started with --enable-pprof, healthy."""
        c = single_member(self.group, extra=["--enable-pprof"])
        m = c.members[0]
        wait_for(m.healthy, 30, "member healthy")
        return m

    def under_load(self, m, fn):
        """fn()'s result, taken while a thread puts keys into m (so the
        member's own code runs in a profile's samples)."""
        stop = threading.Event()

        def load():
            i = 0
            while not stop.is_set():
                m.put("load/%d" % (i % 500), "x" * 512)
                i += 1
        t = threading.Thread(target=load)
        t.start()
        try:
            return fn()
        finally:
            stop.set()
            t.join()

    def test_cpu_and_heap_profiles_open_in_pprof(self):
        m = self.profiled_member()
        st, h, cpu = self.under_load(m, lambda: request(
            m.client_url, "GET", "/debug/pprof/profile?seconds=2", timeout=30))
        self.assertEqual(st, 200, cpu[:200])
        self.assertEqual(h["content-type"], "application/octet-stream")
        path = self.save(cpu, "cpu.prof")
        r = self.top(path)
        self.assertIn("Type: cpu", r.stdout)
        # Samples over 2 s of load, attributed to the member's own mappings.
        self.assertRegex(r.stdout, r"Showing nodes accounting for \d+(\.\d+)?m?s")
        self.assertIn("[muster]", r.stdout)
        # Named down to muster's own functions (the load is puts, so the
        # member's code runs in the samples).
        text = self.symbolized(path)
        self.assertRegex(text, r"(?m)^Total: [1-9]\d* samples")
        self.assertRegex(text, r"\bmuster::\w+", text[:2000])

        st, _, heap = request(m.client_url, "GET", "/debug/pprof/heap")
        if harness.SANITIZER:
            # A sanitizer build has no tcmalloc (docs/reliability.md): it says so.
            self.assertEqual(st, 501, heap[:200])
            self.assertIn(b"sanitizer build, without tcmalloc", heap)
        else:
            self.assertEqual(st, 200)
            self.assertTrue(heap.startswith(b"heap profile:"), heap[:200])
            path = self.save(heap, "heap.prof")
            self.assertIn("flat%", self.top(path).stdout)
            # What holds the heap, named: the member's allocations.
            text = self.symbolized(path)
            self.assertRegex(text, r"(?m)^Total: [\d.]+ MB", text[:2000])
            self.assertRegex(text, r"\bmuster::\w+", text[:2000])

        # Bad input and a second concurrent profile get clear errors.
        st, _, body = request(m.client_url, "GET", "/debug/pprof/profile?seconds=abc")
        self.assertEqual(st, 400, body)
        self.assertIn(b"seconds must be an integer", body)
        st, _, body = request(m.client_url, "GET", "/debug/pprof/goroutine")
        self.assertEqual(st, 404)
        st, _, body = request(m.client_url, "GET", "/debug/pprof/")
        self.assertEqual(st, 200)
        self.assertIn(b"profile", body)

    def test_go_tool_pprof_gets_function_names_from_the_member(self):
        m = self.profiled_member()
        r = self.under_load(m, lambda: go_pprof_remote_top(
            m.client_url + "/debug/pprof/profile?seconds=2", self.group.path()))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Type: cpu", r.stdout)
        # The member's own functions, named by the member and demangled by
        # pprof (no parameter lists).
        self.assertRegex(r.stdout, r"\bmuster::(server|net|storage|raft|base)::\w", r.stdout[:3000])
        self.assertNotRegex(r.stdout, r"\b_ZN6muster")

        # The protocol as Go's net/http/pprof speaks it.
        st, h, body = request(m.client_url, "GET", "/debug/pprof/symbol")
        self.assertEqual((st, body), (200, b"num_symbols: 1\n"))
        self.assertTrue(h["content-type"].startswith("text/plain"), h)
        # Words that are not addresses, and addresses no function covers
        # (the zero page, an address past user space), name nothing.
        st, _, body = request(m.client_url, "POST", "/debug/pprof/symbol",
                              body=b"zzz+-5++ 0x10+0x+0x1+0xffffffffffffff00+18446744073709551616")
        self.assertEqual((st, body), (200, b"num_symbols: 1\n"))
        # A body over the server's limit is refused; the member keeps serving.
        st, _, _ = request(m.client_url, "POST", "/debug/pprof/symbol",
                           body=b"0x1+" * (2 << 20))
        self.assertEqual(st, 413)
        self.assertTrue(m.healthy())

    def test_symbol_answers_as_etcd_does(self):
        """What the protocol leaves to the server (no name for what is not
        an address, or not a function), answered as etcd 3.4 answers it."""
        m = self.profiled_member()
        e = etcd_cluster(self.group, 1, extra=["--enable-pprof"])[0]
        asks = [("GET", "/debug/pprof/symbol", None),
                ("GET", "/debug/pprof/symbol?0x1+zzz+0xffffffffffffff00", None),
                ("POST", "/debug/pprof/symbol", b"zzz+-5++ 0x10+0x+0x1+18446744073709551616"),
                ("POST", "/debug/pprof/symbol", b"")]
        for method, path, body in asks:
            got = [request(x.client_url, method, path, body=body) for x in (m, e)]
            (ms, mh, mb), (es, eh, eb) = got
            self.assertEqual((ms, mb), (es, eb), (method, path, body))
            self.assertEqual(mh["content-type"], eh["content-type"])
            self.assertEqual(mb, b"num_symbols: 1\n")

    def test_without_the_flag_pprof_is_not_served(self):
        c = single_member(self.group)
        m = c.members[0]
        wait_for(m.healthy, 30, "member healthy")
        st, _, _ = request(m.client_url, "GET", "/debug/pprof/profile?seconds=1")
        self.assertEqual(st, 404)


if __name__ == "__main__":
    unittest.main(verbosity=2)
