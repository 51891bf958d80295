"""deploy/systemd/ as an operator installs it: the EnvironmentFile example is
read by muster (every variable recognised, values used), and the unit is a
Type=notify service that runs muster with that file."""

import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cluster import MUSTER  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
SYSTEMD = os.path.join(ROOT, "deploy", "systemd")


def environment_file(path):
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them: comments and
    blank lines skipped, one pair of surrounding quotes removed."""
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or line.startswith(";"):
                continue
            k, v = line.split("=", 1)
            if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
                v = v[1:-1]
            env[k.strip()] = v
    return env


class SystemdFilesTest(unittest.TestCase):
    def test_environment_file_example_is_read_by_muster(self):
        env = environment_file(os.path.join(SYSTEMD, "muster.env.example"))
        self.assertTrue(all(k.startswith("ETCD_") for k in env), env)
        with tempfile.TemporaryDirectory() as d:
            run_env = {"PATH": os.environ.get("PATH", ""), "ETCD_DATA_DIR": d}
            run_env.update(env)
            r = subprocess.run([MUSTER], env=run_env, capture_output=True, text=True, timeout=30)
        out = r.stdout + r.stderr
        self.assertNotIn("unrecognized environment variable", out)
        self.assertIn("recognized and used environment variable ETCD_NAME=infra1", out)
        # The example points at certificates this machine does not have: the
        # member stops, naming the file it was told to use.
        self.assertEqual(r.returncode, 1, out)
        self.assertIn("/etc/muster/pki/", out)
        self.assertNotIn("terminate called", out)

    def test_unit_is_type_notify_and_uses_the_environment_file(self):
        with open(os.path.join(SYSTEMD, "muster.service")) as f:
            unit = f.read()
        lines = [l.strip() for l in unit.splitlines() if l.strip() and not l.startswith("#")]
        self.assertIn("Type=notify", lines)
        self.assertIn("EnvironmentFile=/etc/muster/muster.env", lines)
        self.assertTrue(any(l.startswith("ExecStart=/usr/local/bin/muster") for l in lines))
        self.assertIn("TimeoutStartSec=0", lines)
        for section in ("[Unit]", "[Service]", "[Install]"):
            self.assertIn(section, lines)


if __name__ == "__main__":
    unittest.main(verbosity=2)
