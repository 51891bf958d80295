"""The traffic of a robustness run: key-value clients, watchers, a lease
client and a status monitor, each a thread recording what it saw into the
run's Recorder.  Nothing here judges; checkers.py does that afterwards.

Operation choices come from seeded random generators (one per client), so a
seed replays the same requests and the same fault schedule; thread
interleavings and timings are the machine's.
"""

import json
import random
import socket
import threading
import time

import client as v3

KEYS = ["/k/%d" % i for i in range(5)]
PAIR = ("/m/a", "/m/b")  # written together by multi-key txns (watch atomicity)
ALL_KEYS = "\0"  # key and range_end "\0": the whole key space


def now():
    return time.monotonic()


class Recorder:
    """Thread-safe logs of one run."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ops = []
        self.watch = []
        self.monitor = []
        self.nemesis = []
        self.leases = []
        self._next_id = 0

    def op(self, rec):
        with self.lock:
            self._next_id += 1
            rec["id"] = self._next_id
            self.ops.append(rec)
        return rec

    def add(self, log, rec):
        with self.lock:
            getattr(self, log).append(rec)

    def save(self, directory):
        import os
        os.makedirs(directory, exist_ok=True)
        with self.lock:
            for name in ("ops", "watch", "monitor", "nemesis", "leases"):
                with open(os.path.join(directory, name + ".jsonl"), "w") as f:
                    for rec in getattr(self, name):
                        f.write(json.dumps(rec, sort_keys=True) + "\n")

    @staticmethod
    def load(directory):
        import os
        r = Recorder()
        for name in ("ops", "watch", "monitor", "nemesis", "leases"):
            path = os.path.join(directory, name + ".jsonl")
            if os.path.exists(path):
                with open(path) as f:
                    setattr(r, name, [json.loads(line) for line in f if line.strip()])
        return r


# Errors that mean the request never entered the log (both etcd and muster
# answer them before proposing, or when the proposal is dropped unappended).
NOT_PROPOSED = ("etcdserver: no leader", "etcdserver: too many requests")


def classify(status, write, doc=None):
    """Recorded status of a call: ok, fail (certainly not applied), unknown."""
    if status == "ok":
        return "ok"
    if status == "unreachable":
        return "fail"
    if not write:
        return "fail"  # a read that failed returned nothing and changed nothing
    if status == "error" and doc and str(doc.get("error", "")) in NOT_PROPOSED:
        return "fail"
    return "unknown"


class KvClient(threading.Thread):
    def __init__(self, run, index, seed):
        super().__init__(name="kv-client-%d" % index, daemon=True)
        self.run_ = run
        self.index = index
        self.rng = random.Random(seed)
        self.seq = 0
        self.last_seen = {}
        self.endpoint = None
        self.member = None
        self.backoff = 0.0

    def pick_member(self):
        live = self.run_.cluster.live()
        if not live:
            return None
        if self.member in live and self.rng.random() > 0.02:
            return self.member
        m = live[(self.index + self.rng.randrange(len(live))) % len(live)]
        if self.endpoint is not None:
            self.endpoint.close()
        self.member = m
        self.endpoint = v3.Endpoint("127.0.0.1", m.client_port, self.run_.op_timeout)
        return m

    def drop_member(self):
        if self.endpoint is not None:
            self.endpoint.close()
        self.endpoint = None
        self.member = None

    def run(self):
        while not self.run_.stop_clients.is_set():
            m = self.pick_member()
            if m is None:
                time.sleep(0.05)
                continue
            try:
                ok = self.one(m)
            except Exception as e:  # a client bug must not look like a clean run
                self.run_.errors.append("client %d: %r" % (self.index, e))
                return
            # Back off while calls fail (no quorum, member down): fewer
            # operations of unknown outcome, which cost the checker most.
            self.backoff = 0.0 if ok else min(1.0, max(0.05, self.backoff * 2))
            if self.backoff:
                self.run_.stop_clients.wait(self.rng.uniform(0, self.backoff))

    def value(self):
        self.seq += 1
        return "c%d-%d" % (self.index, self.seq)

    def one(self, m):
        r = self.rng.random()
        key = self.rng.choice(KEYS)
        rec = {"client": self.index, "member": m.name, "key": key}
        if r < 0.40:
            rec["type"] = "get"
            body = {"key": v3.b64(key)}
            write = False
        elif r < 0.70:
            rec["type"] = "put"
            rec["value"] = self.value()
            body = {"key": v3.b64(key), "value": v3.b64(rec["value"])}
            write = True
        elif r < 0.76:
            rec["type"] = "del"
            body = {"key": v3.b64(key)}
            write = True
        elif r < 0.94:
            rec["type"] = "cas"
            rec["value"] = self.value()
            seen = self.last_seen.get(key)
            expect = seen if self.rng.random() < 0.8 else None
            rec["expect"] = expect
            if expect is None:
                cmp = {"key": v3.b64(key), "target": "VERSION", "result": "EQUAL", "version": "0"}
            else:
                cmp = {"key": v3.b64(key), "target": "VALUE", "result": "EQUAL",
                       "value": v3.b64(expect)}
            body = {"compare": [cmp],
                    "success": [{"request_put": {"key": v3.b64(key),
                                                 "value": v3.b64(rec["value"])}}]}
            write = True
        else:
            rec["type"] = "pair"
            rec["key"] = PAIR[0]
            rec["value"] = self.value()
            body = {"success": [{"request_put": {"key": v3.b64(k), "value": v3.b64(rec["value"])}}
                                for k in PAIR]}
            write = True
        path = {"get": "/v3/kv/range", "put": "/v3/kv/put", "del": "/v3/kv/deleterange",
                "cas": "/v3/kv/txn", "pair": "/v3/kv/txn"}[rec["type"]]
        rec["call"] = now()
        status, doc = self.endpoint.call(path, body)
        t = now()
        rec["status"] = classify(status, write, doc)
        rec["ret"] = t if rec["status"] == "ok" else None
        rec["fail_t"] = t
        if status != "ok":
            rec["error"] = status if doc is None else str(doc.get("error", doc))[:120]
            if status in ("unreachable", "timeout", "broken"):
                self.drop_member()
        else:
            rec["out"] = self.output(rec, doc)
        self.run_.rec.op(rec)
        return status == "ok"

    def output(self, rec, doc):
        out = {"revision": v3.header_rev(doc),
               "member_id": doc.get("header", {}).get("member_id")}
        t = rec["type"]
        if t == "get":
            kvs = [v3.kv_of(k) for k in doc.get("kvs", [])]
            out["value"] = kvs[0]["value"] if kvs else None
            out["mod_revision"] = kvs[0]["mod_revision"] if kvs else 0
            self.last_seen[rec["key"]] = out["value"]
        elif t == "put":
            self.last_seen[rec["key"]] = rec["value"]
        elif t == "del":
            out["deleted"] = int(doc.get("deleted", 0) or 0)
            self.last_seen[rec["key"]] = None
        elif t == "cas":
            out["succeeded"] = bool(doc.get("succeeded", False))
            if out["succeeded"]:
                self.last_seen[rec["key"]] = rec["value"]
        return out


class Watcher(threading.Thread):
    """Watches the whole key space with prev_kv from revision 1, resuming
    from the next revision on another member whenever its stream breaks.
    Watcher 0 stays on a member that is partitioned or paused, and must get
    everything once it is back; the others move on when their member falls
    silent while the cluster moves on."""

    def __init__(self, run, index):
        super().__init__(name="watcher-%d" % index, daemon=True)
        self.run_ = run
        self.index = index
        self.last_rev = 0  # highest event revision received
        self.next_start = 1
        self.stream = None
        self.progress = threading.Event()

    def log(self, kind, **kw):
        kw.update({"watcher": self.index, "t": now(), "kind": kind})
        self.run_.rec.add("watch", kw)

    def run(self):
        rr = self.index
        while not self.run_.stop_watchers.is_set():
            live = self.run_.cluster.live()
            if not live:
                time.sleep(0.05)
                continue
            m = live[rr % len(live)]
            rr += 1
            try:
                self.stream = v3.WatchStream("127.0.0.1", m.client_port, ALL_KEYS, ALL_KEYS,
                                             self.next_start, prev_kv=True, timeout=0.5)
            except OSError:
                time.sleep(0.05)
                continue
            self.log("open", member=m.name, start_rev=self.next_start)
            self.follow(m)
            self.stream.close()
            self.stream = None
            self.log("close", member=m.name)

    def follow(self, m):
        quiet_since = now()
        while not self.run_.stop_watchers.is_set():
            try:
                res = self.stream.next()
            except socket.timeout:
                # Silent while another member is ahead of us: this member is
                # partitioned, paused or dead; resume elsewhere.
                if self.index > 0 and now() - quiet_since > 2.0 and \
                        self.run_.max_revision() > self.last_rev:
                    self.log("stale", member=m.name)
                    return
                continue
            except (EOFError, OSError, ValueError) as e:
                self.log("broken", member=m.name, error=str(e)[:200])
                return
            quiet_since = now()
            hdr = v3.header_rev(res)
            if res.get("created"):
                self.log("created", member=m.name, header_rev=hdr)
            if res.get("canceled"):
                crev = int(res.get("compact_revision", 0) or 0)
                self.log("canceled", member=m.name, header_rev=hdr, compact_revision=crev,
                         reason=res.get("cancel_reason", ""))
                if crev:
                    self.next_start = crev
                return
            events = []
            for e in res.get("events", []):
                kv = v3.kv_of(e.get("kv"))
                events.append({"type": e.get("type", "PUT"), "kv": kv,
                               "prev_kv": v3.kv_of(e.get("prev_kv"))})
            if events:
                self.log("events", member=m.name, header_rev=hdr, events=events)
                top = max(ev["kv"]["mod_revision"] for ev in events)
                if top > self.last_rev:
                    self.last_rev = top
                    self.next_start = top + 1
                self.progress.set()


class LeaseClient(threading.Thread):
    """Grants short leases, attaches a key, keeps each alive a few times,
    lets it lapse, watches for the expiry through TimeToLive, then reads the
    key (a recorded linearizable get)."""

    def __init__(self, run, seed, ttl):
        super().__init__(name="lease-client-%d" % seed, daemon=True)
        self.run_ = run
        self.rng = random.Random(seed)
        self.ttl = ttl

    def call(self, path, body, timeout=None):
        live = self.run_.cluster.live()
        if not live:
            return "unreachable", None, None
        m = self.rng.choice(live)
        ep = v3.Endpoint("127.0.0.1", m.client_port, timeout or self.run_.op_timeout)
        try:
            st, doc = ep.call(path, body)
        finally:
            ep.close()
        return st, doc, m.name

    def run(self):
        while not self.run_.stop_clients.is_set():
            try:
                self.one()
            except Exception as e:
                self.run_.errors.append("lease client: %r" % (e,))
                return

    def one(self):
        rec = {"ttl": self.ttl, "keepalive_calls": [], "keepalive_acks": []}
        rec["grant_call"] = now()
        st, doc, _ = self.call("/v3/lease/grant", {"TTL": str(self.ttl)})
        if st != "ok" or "ID" not in doc:
            time.sleep(0.1)
            return
        lease = int(doc["ID"])
        rec["id"] = lease
        # The granted TTL: a shorter one than asked is raised to the
        # member's minimum (1.5 election timeouts), etcd's and muster's.
        rec["ttl"] = int(doc.get("TTL", self.ttl))
        rec["grant_ack"] = now()
        key = "/l/%d" % lease
        rec["key"] = key
        value = "lease-%d" % lease
        put = {"client": "lease", "type": "put", "key": key, "value": value, "call": now()}
        st, doc, member = self.call("/v3/kv/put", {"key": v3.b64(key), "value": v3.b64(value),
                                                   "lease": str(lease)})
        put["member"] = member
        put["status"] = classify(st, True, doc)
        put["ret"] = now() if st == "ok" else None
        if st == "ok":
            put["out"] = {"revision": v3.header_rev(doc)}
        self.run_.rec.op(put)
        rec["put_status"] = put["status"]
        for _ in range(self.rng.randrange(0, 3)):
            if self.run_.stop_clients.wait(self.ttl / 3.0):
                break
            t = now()
            rec["keepalive_calls"].append(t)
            st, doc, _ = self.call("/v3/lease/keepalive", {"ID": str(lease)})
            if st == "ok" and int(doc.get("result", doc).get("TTL", 0) or 0) > 0:
                rec["keepalive_acks"].append([t, now()])
        # Let it lapse; poll until some member says it is gone (also after
        # the run stopped issuing new work: the run waits for this).
        deadline = now() + self.ttl + 30
        while now() < deadline:
            t = now()
            st, doc, member = self.call("/v3/lease/timetolive", {"ID": str(lease)}, timeout=1.0)
            ttl = int(doc.get("TTL", 0) or 0) if st == "ok" else None
            rec.setdefault("polls", []).append([round(t, 3), member, st, ttl])
            if st == "ok" and ttl >= 0:
                rec["alive_call"] = t  # seen alive (polls that fail see nothing)
            if st == "ok" and int(doc.get("TTL", 0) or 0) == -1:
                rec["expired_call"] = t
                rec["expired_ret"] = now()
                rec["expired_member"] = member
                break
            if st == "error" and "not found" in str(doc.get("error", "")):
                rec["expired_call"] = t
                rec["expired_ret"] = now()
                rec["expired_member"] = member
                break
            time.sleep(0.1)
        if "expired_ret" in rec:
            get = {"client": "lease", "type": "get", "key": key, "call": now()}
            st, doc, member = self.call("/v3/kv/range", {"key": v3.b64(key)})
            get["member"] = member
            get["status"] = classify(st, False)
            get["ret"] = now()
            if st == "ok":
                kvs = [v3.kv_of(k) for k in doc.get("kvs", [])]
                get["out"] = {"revision": v3.header_rev(doc),
                              "value": kvs[0]["value"] if kvs else None,
                              "mod_revision": kvs[0]["mod_revision"] if kvs else 0}
            self.run_.rec.op(get)
        self.run_.rec.add("leases", rec)


class Monitor(threading.Thread):
    """Polls every live member's status: revision, leader, term."""

    def __init__(self, run, interval=0.2):
        super().__init__(name="monitor", daemon=True)
        self.run_ = run
        self.interval = interval
        self.max_rev = 0

    def run(self):
        reported = set()
        while not self.run_.stop_watchers.is_set():
            for m in list(self.run_.cluster.members):
                if m.proc is not None and not m.alive() and not getattr(m, "expect_down", False):
                    key = (m.name, m.incarnation)
                    if key not in reported:
                        reported.add(key)
                        rc = m.proc.popen.returncode
                        self.run_.errors.append(
                            "%s (incarnation %d) exited unexpectedly: %s" % (
                                m.name, m.incarnation,
                                "signal %d" % -rc if rc is not None and rc < 0 else "status %s" % rc))
                if not m.alive() or m.paused:
                    continue
                t = now()
                s = m.status(timeout=0.5)
                if s is None:
                    continue
                rev, leader, term, mid = s
                self.max_rev = max(self.max_rev, rev)
                self.run_.rec.add("monitor", {"t": t, "member": m.name, "incarnation":
                                              m.incarnation, "revision": rev, "leader": leader,
                                              "term": term, "member_id": mid})
            self.run_.stop_watchers.wait(self.interval)
