"""Backup and restore as etcd's disaster-recovery guide does it, on real
processes on loopback: `etcdctl snapshot save` (the real etcdctl 3.4, over
gRPC) from a running muster cluster, the cluster destroyed, three new
members built with `muster snapshot restore`, started: every key, every
revision and the leases are back.  Damaged files are refused with a clear
error and nothing written; `muster snapshot status` prints etcdctl's shapes.
"""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "node"))
from cluster import Cluster, MUSTER, b64, unb64, wait_for  # noqa: E402
from harness import ETCDCTL  # noqa: E402

BIN_DIR = os.environ.get("MUSTER_BIN_DIR", "")
MUSTERCTL = os.path.join(BIN_DIR, "musterctl") if BIN_DIR else "musterctl"


def run(args, timeout=60, env=None):
    e = dict(os.environ)
    e["ETCDCTL_API"] = "3"
    if env:
        e.update(env)
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=e)


def etcdctl(endpoint, *args):
    return run([ETCDCTL, "--endpoints", endpoint, "--dial-timeout", "5s",
                "--command-timeout", "30s"] + list(args))


def restore(snapshot, member, *extra):
    """`muster snapshot restore` for `member` of its (new) cluster."""
    c = member.cluster
    return run([MUSTER, "snapshot", "restore", snapshot,
                "--name", member.name,
                "--initial-cluster", c.initial_cluster(),
                "--initial-cluster-token", c.token,
                "--initial-advertise-peer-urls", member.peer_url,
                "--data-dir", member.data_dir] + list(extra))


def all_kvs(member, revision=None):
    """Every key (serializable read of this member) as {key: (value,
    create_revision, mod_revision, version, lease)}, and the header revision."""
    body = {"key": b64("\0"), "range_end": b64("\0"), "serializable": True}
    if revision:
        body["revision"] = str(revision)
    st, j = member.call("/v3/kv/range", body)
    if st != 200:
        raise AssertionError("range on %s: %s %s" % (member.name, st, j))
    out = {}
    for kv in j.get("kvs", []):
        out[unb64(kv["key"])] = (unb64(kv.get("value", "")), kv.get("create_revision"),
                                 kv.get("mod_revision"), kv.get("version"), kv.get("lease", "0"))
    return out, int(j["header"]["revision"])


@unittest.skipUnless(os.path.exists(ETCDCTL), "needs etcdctl 3.4 (Debian etcd-client)")
class SnapshotRestoreTest(unittest.TestCase):
    def make(self, size, **kw):
        c = Cluster(size, **kw)
        self.addCleanup(c.close)
        self.addCleanup(lambda: self._on_fail(c))
        return c

    def _on_fail(self, c):
        if any(e for e in (self._outcome.errors if hasattr(self._outcome, "errors") else []) if e[1]):
            print(c.group.dump_logs(3000), file=sys.stderr)

    def write_data(self, m):
        """Keys, overwrites (several revisions), a delete, a lease with keys,
        a compaction: returns (lease id, compacted revision)."""
        for i in range(40):
            st, _ = m.put("k/%02d" % i, "v%d" % i)
            self.assertEqual(st, 200)
        for i in range(0, 40, 4):
            st, _ = m.put("k/%02d" % i, "v%d-second" % i)
            self.assertEqual(st, 200)
        st, j = m.call("/v3/kv/deleterange", {"key": b64("k/39")})
        self.assertEqual((st, j.get("deleted")), (200, "1"))
        st, j = m.call("/v3/lease/grant", {"TTL": "600"})
        self.assertEqual(st, 200, j)
        lease = j["ID"]
        for name in ("leased/a", "leased/b"):
            st, _ = m.put(name, "held", lease=lease)
            self.assertEqual(st, 200)
        _, rev = all_kvs(m)
        compact_at = rev - 20
        st, j = m.call("/v3/kv/compaction", {"revision": str(compact_at), "physical": True})
        self.assertEqual(st, 200, j)
        for i in range(1, 40, 8):
            st, _ = m.put("k/%02d" % i, "v%d-after-compaction" % i)
            self.assertEqual(st, 200)
        return lease, compact_at

    def save(self, c, path):
        r = etcdctl(c.members[0].client_url, "snapshot", "save", path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("Snapshot saved at %s" % path, r.stdout)
        size = os.path.getsize(path)
        self.assertEqual(size % 512, 32, "dump + 32-byte SHA-256, as etcd's file")
        return size

    def musterctl_save(self, c, path):
        r = run([MUSTERCTL, "--endpoints", c.members[0].client_url, "snapshot", "save", path])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout, "Snapshot saved at %s\n" % path)
        self.assertRegex(r.stderr, r"snapshot: .* at revision \d+ from ")
        self.assertFalse(os.path.exists(path + ".part"))
        size = os.path.getsize(path)
        self.assertEqual(size % 512, 32)
        return size

    def test_etcdctl_save_then_restore_three_new_members_brings_back_keys_revisions_and_leases(self):
        self.drill(self.save)

    def test_musterctl_save_then_restore_three_new_members_brings_back_keys_revisions_and_leases(self):
        self.drill(self.musterctl_save, musterctl=True)

    def drill(self, save, musterctl=False):
        old = self.make(3, token="cluster-before-the-disaster").start()
        old.wait_healthy()
        lease, compact_at = self.write_data(old.members[0])
        before, rev = all_kvs(old.members[0])
        # A read of history between the compaction and now, to compare later.
        history, _ = all_kvs(old.members[0], revision=compact_at + 1)
        old_cluster_id = old.members[0].status()["header"]["cluster_id"]

        snap = old.group.path("backup.db")
        size = save(old, snap)
        if musterctl:
            # The same copy etcdctl takes of the same member, byte for byte.
            other = old.group.path("by-etcdctl.db")
            self.save(old, other)
            with open(snap, "rb") as a, open(other, "rb") as b:
                self.assertEqual(a.read(), b.read())
            # One endpoint only, as etcdctl; an unreachable one writes nothing.
            r = run([MUSTERCTL, "--endpoints", "%s,%s" % (old.members[0].client_url,
                                                        old.members[1].client_url),
                     "snapshot", "save", old.group.path("two.db")])
            self.assertEqual(r.returncode, 128, r.stderr)
            self.assertIn("snapshot must be requested to one selected node", r.stderr)
            r = run([MUSTERCTL, "--endpoints", "127.0.0.1:1", "snapshot", "save",
                     old.group.path("none.db")])
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertFalse(os.path.exists(old.group.path("none.db")) or
                             os.path.exists(old.group.path("none.db.part")))

        # muster snapshot status: etcdctl's three shapes, the revision saved.
        r = run([MUSTER, "snapshot", "status", snap, "-w", "json"])
        self.assertEqual(r.returncode, 0, r.stderr)
        status = json.loads(r.stdout)
        self.assertEqual(list(status), ["hash", "revision", "totalKey", "totalSize"])
        self.assertEqual(status["revision"], rev)
        self.assertEqual(status["totalSize"], size - 32)
        self.assertGreater(status["totalKey"], len(before))
        r = run([MUSTER, "snapshot", "status", snap])
        self.assertEqual(r.stdout.strip(), "%x, %d, %d, %s" % (
            status["hash"], rev, status["totalKey"], r.stdout.strip().split(", ")[3]))
        self.assertRegex(r.stdout, r"^[0-9a-f]+, \d+, \d+, [0-9.]+ (B|kB|MB)\n$")
        r = run([MUSTER, "snapshot", "status", snap, "--write-out=table"])
        lines = r.stdout.splitlines()
        self.assertRegex(lines[1], r"^\| +HASH +\| REVISION \| TOTAL KEYS \| TOTAL SIZE \|$")
        self.assertRegex(lines[3], r"^\| +%x \| +%d \| +%d \| +[0-9.]+ (B|kB|MB) \|$" % (
            status["hash"], rev, status["totalKey"]))

        # The disaster: every member killed, every data dir gone.
        for m in old.members:
            m.kill9()
            shutil.rmtree(m.data_dir)

        new = self.make(3, group=old.group, token="restored-cluster")
        for m in new.members:
            m.data_dir = new.group.path("restored-" + m.name + ".data")
            r = restore(snap, m)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("restored snapshot", r.stderr)
            self.assertTrue(os.path.exists(os.path.join(m.data_dir, "member", "identity.json")))
            self.assertFalse(os.path.exists(m.data_dir + ".restoring"))
        new.start()
        new.wait_healthy()
        wait_for(new.leader, 20, "one agreed leader")

        for m in new.members:
            after, rev_after = all_kvs(m)
            self.assertEqual(rev_after, rev, "revision on %s" % m.name)
            self.assertEqual(after, before, "keys on %s" % m.name)
            hist, _ = all_kvs(m, revision=compact_at + 1)
            self.assertEqual(hist, history, "history on %s" % m.name)
            st, j = m.call("/v3/kv/range", {"key": b64("k/00"), "revision": str(compact_at - 1)})
            self.assertNotEqual(st, 200)
            self.assertIn("required revision has been compacted", j["message"])
            st, j = m.call("/v3/lease/timetolive", {"ID": lease, "keys": True})
            self.assertEqual(st, 200, j)
            self.assertEqual(j["grantedTTL"], "600")
            self.assertEqual(sorted(unb64(k) for k in j["keys"]), ["leased/a", "leased/b"])
        # A new cluster: new ID, the new members only.
        st, j = new.members[1].call("/v3/cluster/member/list", {})
        self.assertEqual(st, 200)
        self.assertNotEqual(j["header"]["cluster_id"], old_cluster_id)
        self.assertEqual(sorted((m["name"], m["peerURLs"][0]) for m in j["members"]),
                         sorted((m.name, m.peer_url) for m in new.members))

        # etcdctl reads and writes the restored cluster.
        eps = ",".join(m.client_url for m in new.members)
        r = etcdctl(eps, "get", "k/04")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "k/04\nv4-second\n")
        r = etcdctl(eps, "get", "k/", "--prefix", "--keys-only", "-w", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        got = json.loads(r.stdout)
        self.assertEqual(got["header"]["revision"], rev)
        self.assertEqual(got["count"], len([k for k in before if k.startswith("k/")]))
        r = etcdctl(eps, "put", "k/new", "after-restore")
        self.assertEqual((r.returncode, r.stdout), (0, "OK\n"), r.stderr)
        wait_for(lambda: all_kvs(new.members[2])[1] == rev + 1, 10, "the write to reach m3")

        # Restarted restored members keep everything (no second restore).
        for m in new.members:
            m.stop()
        new.start()
        new.wait_healthy()
        after, rev_after = all_kvs(new.members[0])
        self.assertEqual(rev_after, rev + 1)
        self.assertEqual(after["k/new"][0], "after-restore")

    def test_snapshot_taken_during_writes_is_exactly_the_state_at_its_revision(self):
        old = self.make(3, token="busy").start()
        old.wait_healthy()
        lead = wait_for(old.leader, 20, "a leader")
        follower = next(m for m in old.members if m is not lead)
        # About 8 MB, so the copy takes a while, in 100-put transactions.
        for base in range(0, 8000, 100):
            ops = [{"request_put": {"key": b64("bulk/%05d" % i), "value": b64("x" * 1000)}}
                   for i in range(base, base + 100)]
            st, j = lead.call("/v3/kv/txn", {"success": ops})
            self.assertEqual(st, 200, j)
        stop = threading.Event()
        written = []

        def writer():
            i = 0
            while not stop.is_set():
                st, j = lead.put("busy/%03d" % (i % 50), "round %d" % i)
                if st == 200:
                    written.append(int(j["header"]["revision"]))
                i += 1

        t = threading.Thread(target=writer)
        t.start()
        try:
            wait_for(lambda: len(written) >= 50, 30, "writes under way")
            snap = old.group.path("busy.db")
            # From a follower, while the leader takes writes.
            r = etcdctl(follower.client_url, "snapshot", "save", snap)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            seen = len(written)
            wait_for(lambda: len(written) >= seen + 50, 30, "writes after the snapshot")
        finally:
            stop.set()
            t.join()
        r = run([MUSTER, "snapshot", "status", snap, "-w", "json"])
        self.assertEqual(r.returncode, 0, r.stderr)
        rev = json.loads(r.stdout)["revision"]
        self.assertLess(rev, max(written), "writes went on past the copy")
        expected, _ = all_kvs(lead, revision=rev)
        self.assertIn("busy/000", expected)
        for m in old.members:
            m.kill9()

        new = self.make(1, group=old.group, token="after-the-busy-one")
        m = new.members[0]
        m.data_dir = new.group.path("restored-busy.data")
        r = restore(snap, m)
        self.assertEqual(r.returncode, 0, r.stderr)
        new.start()
        new.wait_healthy()
        got, rev_after = all_kvs(m)
        self.assertEqual(rev_after, rev)
        self.assertEqual(got, expected)

    def test_damaged_snapshots_are_refused_and_nothing_is_written(self):
        c = self.make(1).start()
        c.wait_healthy()
        for i in range(200):
            st, _ = c.members[0].put("key/%03d" % i, "value %d " % i * 20)
            self.assertEqual(st, 200)
        snap = c.group.path("good.db")
        size = self.save(c, snap)
        with open(snap, "rb") as f:
            good = f.read()
        target = Cluster(1, group=c.group, token="t").members[0]
        target.data_dir = c.group.path("target.data")

        def refused(data, expect, *extra):
            path = c.group.path("bad.db")
            with open(path, "wb") as f:
                f.write(data)
            r = restore(path, target, *extra)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn(expect, r.stderr)
            self.assertRegex(r.stderr, r"(?m)^Error: ")
            self.assertFalse(os.path.exists(target.data_dir), "nothing written")
            self.assertFalse(os.path.exists(target.data_dir + ".restoring"))
            return r

        def flipped(at):
            b = bytearray(good)
            b[at] ^= 0x40
            return bytes(b)

        # One byte flipped anywhere: the digest does not match.
        for at in (5, size // 2, size - 40, size - 1):
            r = refused(flipped(at), "is corrupted: the SHA-256 of its")
        # Truncated: no digest where it belongs.
        for cut in (1, 32, size // 3):
            refused(good[:size - cut], "has no SHA-256 digest at its end")
        # --skip-hash-check does not let damage through: the chunks carry
        # their own checksum (a flip inside the keys and values).
        refused(flipped(size // 2), "is corrupted at byte", "--skip-hash-check")
        refused(good[:size // 3], "is corrupted at byte", "--skip-hash-check")
        # Not a muster snapshot at all.
        refused(b"\0" * 512 + good[-32:], "is corrupted: the SHA-256")
        r = refused(b"x" * 100, "not a muster snapshot", "--skip-hash-check")
        # status refuses the same damage.
        path = c.group.path("bad.db")
        with open(path, "wb") as f:
            f.write(flipped(size // 2))
        r = run([MUSTER, "snapshot", "status", path])
        self.assertEqual(r.returncode, 1)
        self.assertIn("is corrupted", r.stderr)

        # The digest removed (a dump copied without it) restores with
        # --skip-hash-check, as etcd's flag allows.
        path = c.group.path("nodigest.db")
        with open(path, "wb") as f:
            f.write(good[:-32])
        r = restore(path, target, "--skip-hash-check")
        self.assertEqual(r.returncode, 0, r.stderr)
        # An existing data dir is never overwritten.
        r = restore(snap, target)
        self.assertEqual(r.returncode, 1)
        self.assertIn('Error: data-dir "%s" exists' % target.data_dir, r.stderr)
        # Flags checked as a new member's.
        r = run([MUSTER, "snapshot", "restore", snap, "--name", "nobody",
                 "--initial-cluster", "m1=http://127.0.0.1:1", "--data-dir", c.group.path("x")])
        self.assertEqual(r.returncode, 1)
        self.assertIn('couldn\'t find local name "nobody" in the initial cluster configuration',
                      r.stderr)
        r = run([MUSTER, "snapshot", "restore", c.group.path("missing.db"),
                 "--data-dir", c.group.path("y")])
        self.assertEqual(r.returncode, 1)
        self.assertIn("No such file or directory", r.stderr)
        self.assertFalse(os.path.exists(c.group.path("x")) or os.path.exists(c.group.path("y")))


if __name__ == "__main__":
    unittest.main()
