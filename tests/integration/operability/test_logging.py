"""--logger, --log-outputs and --log-level work as in etcd 3.4.

A real muster member is started with each setting; its lines are read where
they were sent.  The journal case runs a real systemd-journald in a private
mount namespace (its sockets and files on tmpfs there), starts muster and
etcd 3.4 with --log-outputs=systemd/journal inside it, and compares the
journal fields each wrote (journalctl -o json).
"""

import json
import os
import re
import shutil
import subprocess
import unittest

from ops import ETCD, MUSTER, ProcessGroup, single_member, wait_for

ZAP_KEYS = ["level", "ts", "caller", "msg"]
CAPNSLOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} [CEWNIDT] \| [a-z/]+: .+$")


def json_lines(text):
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


class LoggingTest(unittest.TestCase):
    def setUp(self):
        self.group = ProcessGroup("muster-ops-log-")
        self.addCleanup(self.group.close)

    def ready(self, member):
        wait_for(lambda: member.alive() and member.healthy(), 30, "member ready")

    def test_zap_lines_carry_etcds_keys_and_a_short_caller(self):
        c = single_member(self.group)
        m = c.members[0]
        self.ready(m)
        lines = json_lines(m.proc.log())
        self.assertTrue(lines)
        for rec in lines:
            self.assertEqual(list(rec)[:4], ZAP_KEYS, rec)
            self.assertIn(rec["level"], ("debug", "info", "warn", "error"))
            self.assertRegex(rec["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$")
            # zap's short caller: directory/file.ext:line
            self.assertRegex(rec["caller"], r"^[a-z_0-9]+/[a-z_0-9]+\.(cpp|cc|h):\d+$", rec)
        self.assertIn("ready to serve client requests", [r["msg"] for r in lines])

    def test_log_level_warn_drops_info_lines(self):
        c = single_member(self.group, extra=["--log-level", "warn"])
        m = c.members[0]
        self.ready(m)
        m.put("k", "v")
        levels = {r["level"] for r in json_lines(m.proc.log())}
        self.assertFalse(levels & {"debug", "info"}, levels)

    def test_outputs_stdout_and_a_file(self):
        path = self.group.path("member.log")
        c = single_member(self.group, extra=["--log-outputs", "stdout," + path])
        m = c.members[0]
        self.ready(m)
        with open(path) as f:
            in_file = json_lines(f.read())
        self.assertIn("ready to serve client requests", [r["msg"] for r in in_file])
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        # The harness merges stdout and stderr: the same lines reached stdout.
        self.assertIn("ready to serve client requests",
                      [r["msg"] for r in json_lines(m.proc.log())])

    def test_capnslog_writes_etcd_34_text_lines(self):
        c = single_member(self.group, extra=["--logger", "capnslog", "--log-outputs", "stderr"])
        m = c.members[0]
        self.ready(m)
        lines = [l for l in m.proc.log().splitlines() if l.strip()]
        self.assertTrue(lines)
        for line in lines:
            self.assertRegex(line, CAPNSLOG_LINE)
        self.assertTrue(any("ready to serve client requests" in l for l in lines))
        self.assertTrue(any(" W | etcdmain: Deprecated '--logger=capnslog'" in l for l in lines))

    def test_bad_settings_are_refused_with_etcds_words(self):
        cases = [
            (["--logger", "glog"], 'unknown logger option "glog"'),
            (["--log-level", "loud"], 'unknown log-level "loud"'),
            (["--log-outputs", "default,stderr"], 'multi logoutput for "default" is not supported yet'),
            (["--log-outputs", "/nonexistent-dir/x.log"], "open /nonexistent-dir/x.log: No such file"),
        ]
        for args, want in cases:
            with self.subTest(args=args):
                r = subprocess.run([MUSTER, "--data-dir", self.group.path("bad.data")] + args,
                                   capture_output=True, text=True, timeout=20)
                self.assertEqual(r.returncode, 1, r.stderr)
                fatal = [l for l in json_lines(r.stderr) if l["level"] == "fatal"]
                self.assertEqual(len(fatal), 1, r.stderr)
                self.assertIn(want, fatal[0]["msg"])

    def test_journal_unreachable_is_refused(self):
        if os.path.exists("/run/systemd/journal/socket"):
            self.skipTest("this machine runs a journal")
        r = subprocess.run([MUSTER, "--data-dir", self.group.path("j.data"), "--log-outputs",
                            "systemd/journal"], capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 1)
        self.assertIn("can't find journal", json_lines(r.stderr)[-1]["msg"])

    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("unshare")
                         and os.path.exists("/lib/systemd/systemd-journald"),
                         "needs root, unshare and systemd-journald")
    def test_systemd_journal_gets_the_fields_etcd_writes(self):
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "journal_run.sh")
        out = {}
        for who in ("etcd", "muster"):
            r = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", script,
                                who, MUSTER if who == "muster" else ETCD,
                                self.group.path(who + "-journal")],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, "%s:\n%s\n%s" % (who, r.stdout[-3000:], r.stderr[-3000:]))
            entries = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
            mine = [e for e in entries if e.get("SYSLOG_IDENTIFIER") == who]
            self.assertTrue(mine, "no journal entry from %s:\n%s" % (who, r.stdout[-2000:]))
            out[who] = mine
        for who, entries in out.items():
            for e in entries:
                line = json.loads(e["MESSAGE"])  # the whole zap line is the message
                self.assertEqual(list(line)[:4], ZAP_KEYS, (who, line))
                self.assertEqual(e["PRIORITY"], {"debug": "7", "info": "6", "warn": "4",
                                                 "error": "3"}[line["level"]])
                self.assertEqual(e["PACKAGE"], os.path.dirname(line["caller"]), (who, e))
        fields = lambda es: {k for e in es for k in e if not k.startswith("_")}
        self.assertEqual(fields(out["muster"]), fields(out["etcd"]))


if __name__ == "__main__":
    unittest.main(verbosity=2)
