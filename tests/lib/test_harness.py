"""The harness's own checks: a sanitizer report in a child process fails the
test that started it (ProcessGroup.close), in any build; in a sanitized one
the children are stopped with SIGTERM first, so that LeakSanitizer runs.

The children are shell scripts that print what ASan, LSan and UBSan print;
docs/reliability.md shows the same check failing on a real planted bug in
a sanitized muster.
"""

import os
import shutil
import signal
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import ProcessGroup, SanitizerReport, wait_for  # noqa: E402

ASAN = ("==4242==ERROR: AddressSanitizer: heap-use-after-free on address 0x602000000010\n"
        "READ of size 8 at 0x602000000010 thread T3\n"
        "    #0 0x55 in muster::server::Timers::run() node/server/v3_service.cpp:120:7\n")
UBSAN = "node/raft/log.cpp:88:21: runtime error: signed integer overflow\n"
LSAN = "==4243==ERROR: LeakSanitizer: detected memory leaks\n"


def shell(script):
    return ["/bin/sh", "-c", script]


class SanitizerReportsTest(unittest.TestCase):
    def setUp(self):
        self.saved = harness.SANITIZER
        self.addCleanup(setattr, harness, "SANITIZER", self.saved)
        harness.SANITIZER = ""

    def group(self):
        g = ProcessGroup(prefix="muster-harness-test-")
        self.addCleanup(shutil.rmtree, g.dir, True)
        return g

    def test_a_report_in_a_live_child_fails_close_and_keeps_the_logs(self):
        g = self.group()
        g.start("clean", shell("echo serving; exec sleep 60"))
        p = g.start("m2", shell("printf '%s' \"$R\" >&2; echo still serving; exec sleep 60"),
                    env=dict(os.environ, R=ASAN))
        wait_for(lambda: "still serving" in p.log(), 10, "the child to print its report")
        with self.assertRaises(SanitizerReport) as cm:
            g.close()
        msg = str(cm.exception)
        self.assertIn("m2", msg)
        self.assertIn("heap-use-after-free", msg)
        self.assertIn("v3_service.cpp:120", msg)  # the stack comes with it
        self.assertNotIn("---- clean", msg)
        self.assertTrue(os.path.isdir(g.dir), "the logs are kept")

    def test_a_child_that_died_of_a_ubsan_report_fails_close(self):
        g = self.group()
        p = g.start("m1", shell("printf '%s' \"$R\" >&2; exit 1"), env=dict(os.environ, R=UBSAN))
        wait_for(lambda: not p.alive(), 10, "the child to exit")
        with self.assertRaises(SanitizerReport) as cm:
            g.close()
        self.assertIn("runtime error: signed integer overflow", str(cm.exception))
        self.assertIn("exit status 1", str(cm.exception))

    def test_clean_children_close_quietly_and_leave_nothing(self):
        g = self.group()
        g.start("m1", shell('echo \'{"msg":"runtime error: not a report"}\'; exec sleep 60'))
        g.close()
        self.assertFalse(os.path.isdir(g.dir))

    def test_sanitized_build_stops_children_with_sigterm_so_leaks_are_reported(self):
        # The child prints LSan's report when it gets SIGTERM, as a sanitized
        # muster does when it exits with a leak.
        script = "trap 'printf \"%s\" \"$R\" >&2; exit 23' TERM; echo up; while :; do sleep 0.05; done"
        for sanitized in (False, True):
            harness.SANITIZER = "address,undefined" if sanitized else ""
            g = self.group()
            p = g.start("m1", shell(script), env=dict(os.environ, R=LSAN))
            wait_for(lambda: "up" in p.log(), 10, "the child to start")
            if sanitized:
                with self.assertRaises(SanitizerReport) as cm:
                    g.close()
                self.assertIn("LeakSanitizer", str(cm.exception))
                self.assertIn("exit status 23", str(cm.exception))
            else:  # SIGKILL: nothing runs at exit
                g.close()
                self.assertEqual(p.popen.returncode, -signal.SIGKILL)

    def test_children_report_into_their_log_not_into_sanitize_shs_directory(self):
        env = dict(os.environ, ASAN_OPTIONS="abort_on_error=1:log_path=/tmp/x/report",
                   UBSAN_OPTIONS="log_path=/tmp/x/report:halt_on_error=1")
        out = harness._sanitizer_to_stderr(env)
        self.assertEqual(out["ASAN_OPTIONS"], "abort_on_error=1")
        self.assertEqual(out["UBSAN_OPTIONS"], "halt_on_error=1")
        plain = {"PATH": "/bin", "ASAN_OPTIONS": "abort_on_error=1"}
        self.assertIs(harness._sanitizer_to_stderr(plain), plain)


if __name__ == "__main__":
    unittest.main()
