"""Process harness for muster-discovery tests (integration, interop, bench).

Every process a test starts is registered with a ProcessGroup and killed
(SIGKILL, then reaped) when the group is closed -- the tests close it from
unittest cleanups, so a failing assertion never leaves a process behind.
Ports are picked free and checked; waits are on conditions with deadlines.

Standard library only (Debian python3): no pip packages.
"""

import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse

BIN_DIR = os.environ.get("MUSTER_BIN_DIR", "")
DISCOVERY = os.path.join(BIN_DIR, "muster-discovery") if BIN_DIR else "muster-discovery"
ETCD = os.environ.get("ETCD", "/usr/bin/etcd")
ETCDCTL = os.environ.get("ETCDCTL", "/usr/bin/etcdctl")

# Sanitized builds (tests/sanitize.sh asan|tsan --integration;
# docs/reliability.md).  MUSTER_SANITIZER names the sanitizers the binaries
# under test were built with ("" for a normal build): a group then stops its
# processes with SIGTERM, so that LeakSanitizer runs at their exit, before
# it kills what is left.  MUSTER_TEST_TIMEOUT_SCALE stretches every
# wait_for deadline (sanitized processes run 2-3x slower); nothing else
# sets it, so a normal build keeps its deadlines.
SANITIZER = os.environ.get("MUSTER_SANITIZER", "")
TIMEOUT_SCALE = max(1.0, float(os.environ.get("MUSTER_TEST_TIMEOUT_SCALE", "1") or "1"))

# The first line of a report of ASan, LSan, TSan or UBSan, in any build: a
# process's log is searched when its group closes, so a report in a child
# process fails the test even when the test never looked at that process
# again (UBSan reports "file:line:col: runtime error: ...").
_SANITIZER_REPORT = re.compile(
    r"^.*(?:==\d+==ERROR: (?:AddressSanitizer|LeakSanitizer)|WARNING: ThreadSanitizer:|"
    r"\S:\d+:\d+: runtime error: |Sanitizer CHECK failed).*$", re.M)


def _sanitizer_to_stderr(env):
    """`env` (None: ours) without a log_path in the sanitizers' options
    (tests/sanitize.sh sets one for the processes nobody watches): a child
    of the harness reports on stderr, into its log, which close() reads."""
    base = os.environ if env is None else env
    names = [k for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS", "LSAN_OPTIONS")
             if "log_path=" in base.get(k, "")]
    if not names:
        return env
    out = dict(base)
    for k in names:
        out[k] = ":".join(o for o in out[k].split(":") if not o.startswith("log_path="))
    return out


class SanitizerReport(AssertionError):
    """A child process's log holds a sanitizer report."""


def sanitizer_reports(text, context=60, width=300):
    """The sanitizer reports in a log's text: one excerpt (the report's
    first line and up to `context` lines after it, each cut at `width`
    characters: C++ template frames run to thousands) per report."""
    out = []
    lines = text.splitlines()
    starts = [text.count("\n", 0, m.start()) for m in _SANITIZER_REPORT.finditer(text)]
    for i in starts:
        out.append("\n".join(line[:width] for line in lines[i:i + context]))
    return out


_port_lock = threading.Lock()
_ports_given = set()


# Ports are drawn below the kernel's ephemeral range (32768-60999 here):
# a port bound to 0 comes from that range, which is also where every
# outgoing connection of a busy suite takes its local port, so one could
# take the port between our check and the child's bind.
_PORT_LO, _PORT_HI = 20000, 32767
_port_rng = random.Random(os.getpid() ^ time.monotonic_ns())


def free_port():
    """A loopback TCP port that is free now and not handed out before by
    this process.  (Pick-and-check: another program may still take it before
    our child binds; the callers that can use port 0 do.)"""
    with _port_lock:
        for _ in range(200):
            port = _port_rng.randint(_PORT_LO, _PORT_HI)
            if port in _ports_given:
                continue
            # Check it again: bind without SO_REUSEADDR must succeed.
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _ports_given.add(port)
            return port
    raise RuntimeError("no free loopback port found")


def wait_for(cond, timeout, what, interval=0.02):
    """Polls cond() until it returns a truthy value (returned) or the
    deadline passes (AssertionError naming `what`)."""
    timeout *= TIMEOUT_SCALE
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # the condition may fail while things start
            last_exc = e
        if time.monotonic() >= deadline:
            msg = "timed out after %.1fs waiting for %s" % (timeout, what)
            if last_exc is not None:
                msg += " (last error: %r)" % (last_exc,)
            raise AssertionError(msg)
        time.sleep(interval)


class Proc:
    """One child process with its output in a log file."""

    def __init__(self, name, args, log_path, env=None):
        self.name = name
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.popen = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=_sanitizer_to_stderr(env), start_new_session=True)

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_lines_json(self):
        out = []
        for line in self.log().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            try:
                os.kill(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout):
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self):
        self.kill(signal.SIGKILL)
        self.wait(10)
        self._log.close()

    def sanitizer_reports(self):
        try:
            return sanitizer_reports(self.log())
        except OSError:
            return []


class ProcessGroup:
    """Owns a temp dir and every process started through it."""

    def __init__(self, prefix="muster-test-"):
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.procs = []
        self.keep = os.environ.get("MUSTER_KEEP_TEST_DIRS") == "1"

    def path(self, *parts):
        p = os.path.join(self.dir, *parts)
        return p

    def start(self, name, args, env=None):
        p = Proc(name, args, self.path(name + ".log"), env=env)
        self.procs.append(p)
        return p

    def close(self):
        """Stops every process (SIGKILL; in a sanitized build SIGTERM first,
        so that LeakSanitizer runs), then fails with SanitizerReport when a
        process's log holds a sanitizer report; the directory is kept then."""
        if SANITIZER:
            self.stop_gracefully()
        for p in self.procs:
            p.close()
        found = self.sanitizer_reports()
        self.procs = []
        if found:
            self.keep = True
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        if found:
            raise SanitizerReport("sanitizer report(s) in child processes (logs kept in %s):\n%s" % (
                self.dir, "\n".join(found)))

    def stop_gracefully(self, timeout=30):
        """SIGTERM (and SIGCONT, for a paused process) to every live process,
        then waits for them to exit, `timeout` seconds at most in all."""
        live = [p for p in self.procs if p.alive()]
        for p in live:
            p.kill(signal.SIGCONT)
            p.kill(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in live:
            p.wait(max(0.1, deadline - time.monotonic()))

    def sanitizer_reports(self):
        """One string per process whose log holds a sanitizer report: its
        name, how it ended, its log's path and the reports."""
        out = []
        for p in self.procs:
            reports = p.sanitizer_reports()
            if reports:
                rc = p.popen.returncode
                out.append("---- %s (pid %d, %s; log %s) ----\n%s" % (
                    p.name, p.pid, "alive" if rc is None else "exit status %s" % rc,
                    p.log_path, "\n".join(reports)))
        return out

    def dump_logs(self, limit=4000):
        out = []
        for p in self.procs:
            text = p.log()
            out.append("---- %s (pid %d, %s) ----\n%s" % (
                p.name, p.pid, "alive" if p.alive() else "exited %s" % p.popen.returncode,
                text[-limit:]))
        return "\n".join(out)


class Discovery:
    """A running muster-discovery."""

    def __init__(self, group, name="discovery", data_dir=None, port=0, args=()):
        self.group = group
        self.data_dir = data_dir or group.path(name + ".data")
        self.args = list(args)
        self.name = name
        self.port = port
        self.proc = None
        self.url = None
        self.start()

    def start(self):
        argv = [DISCOVERY, "--listen-url", "http://127.0.0.1:%d" % self.port,
                "--data-dir", self.data_dir] + self.args
        self.proc = self.group.start(self.name, argv)

        def serving():
            if not self.proc.alive():
                raise AssertionError("muster-discovery exited:\n" + self.proc.log())
            for rec in self.proc.log_lines_json():
                if rec.get("msg") == "serving":
                    return rec
            return None

        rec = wait_for(serving, 20, "muster-discovery to log \"serving\"")
        self.url = rec["url"].rstrip("/")
        self.port = urllib.parse.urlsplit(self.url).port
        wait_for(lambda: self.request("GET", "/health")[0] == 200, 10, "/health to answer 200")
        return self

    def restart(self):
        self.proc.close()
        return self.start()

    def kill9(self):
        self.proc.kill(signal.SIGKILL)
        self.proc.wait(10)

    def request(self, method, path, body=None, headers=None, timeout=10):
        return request(self.url, method, path, body, headers, timeout)

    def metric(self, name):
        """The value of an unlabelled metric in /metrics."""
        status, _, body = self.request("GET", "/metrics")
        assert status == 200, status
        for line in body.decode().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == name:
                return float(parts[1])
        raise AssertionError("metric %s not in /metrics" % name)

    def new_token(self, size=3):
        status, _, body = self.request("PUT", "/new?size=%d" % size)
        if status != 201:
            raise AssertionError("/new?size=%d answered %d: %r" % (size, status, body))
        return body.decode().strip()


def request(base_url, method, path, body=None, headers=None, timeout=10):
    """One HTTP request on a fresh connection: (status, headers dict with
    lower-case names, body bytes)."""
    u = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        h = dict(headers or {})
        if isinstance(body, str):
            body = body.encode()
        if body is not None and "Content-Type" not in h:
            h["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def get_json(url, timeout=10):
    u = urllib.parse.urlsplit(url)
    path = u.path + ("?" + u.query if u.query else "")
    status, headers, body = request(url, "GET", path, timeout=timeout)
    return status, headers, (json.loads(body) if body.strip() else None)


def raw_exchange(port, data, timeout=5.0):
    """Sends raw bytes and returns everything read until the server closes
    (or the timeout passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                c = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not c:
                break
            chunks.append(c)
            # One response is enough unless the caller asked for more.
        return b"".join(chunks)


class Etcd:
    """A real etcd 3.4 process on free loopback ports."""

    def __init__(self, group, name, extra_args=(), enable_v2=False):
        self.group = group
        self.name = name
        self.peer_port = free_port()
        self.client_port = free_port()
        self.data_dir = group.path(name + ".etcd")
        self.peer_url = "http://127.0.0.1:%d" % self.peer_port
        self.client_url = "http://127.0.0.1:%d" % self.client_port
        argv = [ETCD, "--name", name, "--data-dir", self.data_dir,
                "--listen-peer-urls", self.peer_url,
                "--initial-advertise-peer-urls", self.peer_url,
                "--listen-client-urls", self.client_url,
                "--advertise-client-urls", self.client_url,
                "--heartbeat-interval", "50", "--election-timeout", "500",
                "--logger", "zap", "--log-outputs", "stderr"] + list(extra_args)
        if enable_v2:
            argv.append("--enable-v2")
        self.proc = group.start("etcd-" + name, argv)

    def healthy(self):
        try:
            status, _, body = request(self.client_url, "GET", "/health", timeout=2)
            return status == 200 and b'"true"' in body
        except OSError:
            return False

    def member_names(self):
        """Names in `etcdctl member list` (v3 API), or None on failure."""
        env = dict(os.environ, ETCDCTL_API="3")
        r = subprocess.run([ETCDCTL, "--endpoints", self.client_url, "--dial-timeout", "2s",
                            "--command-timeout", "3s", "member", "list", "-w", "json"],
                           env=env, capture_output=True, timeout=10)
        if r.returncode != 0:
            return None
        doc = json.loads(r.stdout)
        return sorted(m.get("name", "") for m in doc.get("members", []))

    def is_proxy(self):
        """etcd 3.4 fell back to its v2 proxy: it says so in its log and
        keeps its state in <data-dir>/proxy."""
        return ("falling back to proxy" in self.proc.log()
                and os.path.isdir(os.path.join(self.data_dir, "proxy")))
