"""A cluster of real muster or etcd 3.4 members on loopback, every peer link
through the fault-injecting relay (relay.py), for the robustness runs.

Processes are owned by tests/lib/harness.py's ProcessGroup (killed and
reaped when it closes), ports come from its free_port(), waits are
conditions with deadlines (wait_for).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from harness import ETCD, free_port, wait_for  # noqa: E402

import client as v3  # noqa: E402

BIN_DIR = os.environ.get("MUSTER_BIN_DIR", "")


def binary(system):
    if system == "etcd":
        return ETCD
    name = {"muster": "muster", "muster-broken": "muster-broken"}[system]
    return os.path.join(BIN_DIR, name) if BIN_DIR else name


FAULTFS = os.environ.get("MUSTER_FAULTFS", os.path.join(BIN_DIR, "libmuster_faultfs.so")
                         if BIN_DIR else "")


class Member:
    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self.client_port = free_port()
        self.peer_port = free_port()  # where it listens
        self.front_port = free_port()  # what it advertises: the relay
        self.data_dir = cluster.group.path("%s.data" % name)
        self.disk_control = cluster.group.path("%s.disk" % name)
        self.proc = None
        self.paused = False
        self.incarnation = 0
        self.endpoint = None
        cluster.relay.add_front(name, self.front_port, self.peer_port)
        self.set_disk("ok")

    @property
    def client_url(self):
        return "http://127.0.0.1:%d" % self.client_port

    @property
    def front_url(self):
        return "http://127.0.0.1:%d" % self.front_port

    def argv(self, initial_cluster, state):
        c = self.cluster
        a = [binary(c.system), "--name", self.name, "--data-dir", self.data_dir,
             "--listen-client-urls", self.client_url,
             "--advertise-client-urls", self.client_url,
             "--listen-peer-urls", "http://127.0.0.1:%d" % self.peer_port,
             "--initial-advertise-peer-urls", self.front_url,
             "--initial-cluster", initial_cluster,
             "--initial-cluster-token", c.token,
             "--initial-cluster-state", state,
             "--heartbeat-interval", str(c.heartbeat_ms),
             "--election-timeout", str(c.election_ms),
             "--snapshot-count", str(c.snapshot_count)]
        if c.system == "etcd":
            a += ["--logger", "zap", "--log-outputs", "stderr"]
        else:
            a += ["--experimental-snapshot-catchup-entries", str(c.catchup_entries)]
        return a

    def start(self, initial_cluster=None, state="new"):
        c = self.cluster
        env = dict(os.environ)
        if c.system != "etcd" and FAULTFS and os.path.exists(FAULTFS):
            env["LD_PRELOAD"] = FAULTFS
            env["MUSTER_FAULTFS_CONTROL"] = self.disk_control
        env.update(c.member_env)
        self.incarnation += 1
        self.proc = c.group.start("%s.%d" % (self.name, self.incarnation),
                                  self.argv(initial_cluster or c.initial_cluster(), state), env=env)
        c.relay.set_pid(self.name, self.proc.pid)
        self.paused = False
        return self

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def kill9(self):
        if self.proc is None:
            return
        if self.paused:
            self.resume()
        self.proc.kill(signal.SIGKILL)
        self.proc.wait(10)
        self.cluster.relay.set_pid(self.name, None)

    def pause(self):
        if self.alive() and not self.paused:
            os.kill(self.proc.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self):
        if self.proc is not None and self.paused:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.paused = False

    def set_disk(self, mode):
        """ok | stall | eio: what fsync/fdatasync do in this member.  muster:
        the LD_PRELOAD shim reads the control file on every call.  etcd: Go
        makes its system calls itself, past any shim, so strace, attached to
        every thread of the running member, injects the fault at the system
        call: a stall holds each fsync/fdatasync at its entry until the
        tracer lets go ("ok" detaches it), EIO fails them.  While traced,
        the member's other system calls are slower too (each stops in the
        tracer), a cost muster's shim does not have."""
        tmp = self.disk_control + ".tmp"
        with open(tmp, "w") as f:
            f.write(mode + "\n")
        os.replace(tmp, self.disk_control)
        if self.cluster.system == "etcd":
            self._untrace()
            if mode != "ok" and self.alive():
                self._trace(mode)

    def _trace(self, mode):
        # 3,600 s: a stall lasts until "ok" detaches the tracer.
        inject = "delay_enter=3600000000" if mode == "stall" else "error=EIO"
        log = self.cluster.group.path("%s.strace.%d" % (self.name, self.incarnation))
        # The calls it caught go to their own file: _untrace counts them.
        self.trace_calls = log + ".calls"
        with open(log, "w") as err:
            self.tracer = subprocess.Popen(
                ["strace", "-f", "-p", str(self.proc.pid), "-o", self.trace_calls,
                 "-e", "trace=fsync,fdatasync", "-e", "inject=fsync,fdatasync:" + inject],
                stdout=subprocess.DEVNULL, stderr=err)
        # Attached once strace says so for the process (it then attaches the
        # other threads before it lets any of them run on).
        # (With EIO the member may have failed and exited, and strace with
        # it, before this looks.)
        def attached():
            if "attached" in open(log).read():
                return True
            if self.tracer.poll() is not None:
                raise AssertionError("strace exited: " + open(log).read()[-2000:])
            return False
        try:
            wait_for(attached, 10, "strace to attach to %s" % self.name, interval=0.02)
        except AssertionError as e:
            # A member that is gone (another fault killed it) takes no disk
            # fault; one that is alive and was not faulted fails the run.
            if self.alive():
                raise RuntimeError("cannot inject %s into %s: %s" % (mode, self.name, e))

    def _untrace(self):
        """Detaches the tracer; records in disk_calls_caught how many
        fsync/fdatasync calls it held or failed.  strace logs a call that
        returns at once as "fdatasync(11) = 0", or, when another thread's
        event comes between, as "fdatasync(11 <unfinished ...>" and later
        "<... fdatasync resumed>) = 0"; a call still held when the tracer
        lets go has the first line and no second.  So held = entries left
        unfinished less those resumed; failed = the calls that returned EIO."""
        t = getattr(self, "tracer", None)
        self.tracer = None
        if t is None:
            return
        if t.poll() is None:
            t.terminate()  # strace detaches every thread and exits
            t.wait(10)
        try:
            with open(self.trace_calls) as f:
                lines = f.read().splitlines()
            calls = [l for l in lines if re.search(r"\b(?:fsync|fdatasync)\b", l)]
            unfinished = sum(1 for l in calls if "<unfinished ...>" in l)
            resumed = sum(1 for l in calls if " resumed>" in l)
            failed = sum(1 for l in calls if " EIO " in l)
            self.disk_calls_caught = max(0, unfinished - resumed) + failed
        except FileNotFoundError:
            self.disk_calls_caught = 0

    def wipe(self):
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def call(self, path, body, timeout=2.0):
        ep = v3.Endpoint("127.0.0.1", self.client_port, timeout)
        try:
            return ep.call(path, body)
        finally:
            ep.close()

    def status(self, timeout=1.0):
        """(revision, leader id, raft term, member id) or None."""
        if not self.alive() or self.paused:
            return None
        st, doc = self.call("/v3/maintenance/status", {}, timeout=timeout)
        if st != "ok":
            return None
        h = doc.get("header", {})
        return (int(h.get("revision", 0) or 0), int(doc.get("leader", 0) or 0),
                int(doc.get("raftTerm", doc.get("raft_term", 0)) or 0),
                int(h.get("member_id", 0) or 0))


class Cluster:
    def __init__(self, group, relay, system, size=3, heartbeat_ms=100, election_ms=1000,
                 snapshot_count=100, catchup_entries=50, member_env=None):
        self.group = group
        self.relay = relay
        self.system = system
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.snapshot_count = snapshot_count
        self.catchup_entries = catchup_entries
        self.member_env = dict(member_env or {})
        self.token = "robust-%d" % os.getpid()
        self.members = [Member(self, "m%d" % (i + 1)) for i in range(size)]
        self.next_name = size + 1
        self.removed = []

    def initial_cluster(self, members=None):
        return ",".join("%s=%s" % (m.name, m.front_url) for m in (members or self.members))

    def start(self):
        for m in self.members:
            m.start()
        return self

    def live(self):
        return [m for m in self.members if m.alive() and not m.paused]

    def statuses(self):
        out = {}
        for m in self.live():
            s = m.status()
            if s is not None:
                out[m.name] = s
        return out

    def leader(self):
        """The member every live, unpaused member names as leader, or None."""
        st = self.statuses()
        live = self.live()
        if not live or len(st) != len(live):
            return None
        leaders = {s[1] for s in st.values()}
        if len(leaders) != 1 or 0 in leaders:
            return None
        lead = leaders.pop()
        for m in live:
            if st[m.name][3] == lead:
                return m
        return None

    def member_by_id(self, member_id):
        for m in self.members:
            s = m.status()
            if s and s[3] == member_id:
                return m
        return None

    def wait_leader(self, timeout=30):
        def dead():
            for m in self.members:
                if m.proc is not None and not m.alive() and not getattr(m, "expect_down", False):
                    raise AssertionError("%s %s exited:\n%s" % (self.system, m.name,
                                                                 m.proc.log()[-3000:]))
        return wait_for(lambda: dead() or self.leader(), timeout,
                        "%s cluster to agree on a leader" % self.system, interval=0.1)

    def wait_writable(self, timeout=30):
        """A put through some member succeeds (a quorum is up and has a leader)."""
        def put():
            for m in self.live():
                st, _ = m.call("/v3/kv/put", {"key": v3.b64("/probe"), "value": v3.b64("x")},
                               timeout=2.0)
                if st == "ok":
                    return True
            return False
        return wait_for(put, timeout, "%s cluster to accept a write" % self.system, interval=0.1)

    # ---------------------------------------------------------------- membership

    def member_list(self, via):
        st, doc = via.call("/v3/cluster/member/list", {}, timeout=3.0)
        if st != "ok":
            return None
        return doc.get("members", [])

    def new_member(self):
        m = Member(self, "m%d" % self.next_name)
        self.next_name += 1
        return m

    def dump(self):
        return json.dumps({m.name: {"client": m.client_port, "peer": m.peer_port,
                                    "front": m.front_port, "pid": m.proc.pid if m.proc else None}
                           for m in self.members + self.removed})


def now():
    return time.monotonic()
