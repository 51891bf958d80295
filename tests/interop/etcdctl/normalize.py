"""Turns etcdctl 3.4 output from one cluster into text that can be compared
with the same command's output from another cluster.

What differs between two correct clusters and is replaced:
  - member IDs, the cluster ID, lease IDs (hex and decimal): by member name
    or by order of first appearance (<id1>, <id2> ...),
  - client and peer URLs (ports): by <m1>, <m1-peer> ...,
  - revisions: relative to the revision when the script started,
  - raft term and indexes, db sizes, the server version, timings
    ("took"), KV hashes: by "*",
  - client-side log lines (zap JSON on stderr): dropped, except that a
    retry warning keeps its gRPC error ("rpc error: code = ... desc = ...").
Rows of outputs whose order depends on IDs or on timing (member list,
endpoint health/status with several endpoints) are sorted when the caller
says so.
"""

import json
import re

REV_KEYS = {"revision", "create_revision", "mod_revision", "compact_revision"}
MASK_KEYS = {"raft_term", "raftTerm", "raftIndex", "raftAppliedIndex", "dbSize", "dbSizeInUse",
             "took", "hash", "hash_revision", "compact_revision_hash"}
MASK_COLUMNS = {"VERSION", "DB SIZE", "RAFT TERM", "RAFT INDEX", "RAFT APPLIED INDEX", "HASH",
                "TOOK", "HASH REVISION", "COMPACT REVISION"}
URL_RE = re.compile(r"(https?)://127\.0\.0\.1:(\d+)")
HEX_ID_RE = re.compile(r"\b(?=[0-9a-f]*[a-f])[0-9a-f]{12,16}\b")
DEC_ID_RE = re.compile(r"\b\d{15,20}\b")


class Normalizer:
    def __init__(self, cluster):
        self.ports = {}
        for m in cluster.members:
            self.ports[m.client_port] = "<%s>" % m.name
            self.ports[m.peer_port] = "<%s-peer>" % m.name
        self.ids = {}  # raw text (hex or decimal) -> label
        self.next_id = 1
        self.base_rev = 0

    # --- identifiers ---
    def register_id(self, value, label=None):
        value = int(value)
        if value == 0:
            return None
        for form in ("%x" % value, "%016x" % value, "%d" % value):
            if form in self.ids:
                return self.ids[form]
        if label is None:
            label = "<id%d>" % self.next_id
            self.next_id += 1
        for form in ("%x" % value, "%016x" % value, "%d" % value):
            self.ids[form] = label
        return label

    def discover(self, text):
        """Registers IDs that appear for the first time, in order."""
        for m in re.finditer(r"%s|%s" % (HEX_ID_RE.pattern, DEC_ID_RE.pattern), text):
            tok = m.group(0)
            if tok in self.ids:
                continue
            if tok.isdigit() and len(tok) >= 15:
                self.register_id(int(tok))
            elif not tok.isdigit():
                self.register_id(int(tok, 16))

    def discover_output(self, stdout, stderr):
        """Registers the IDs of one command's output, in order; the client's
        log lines on stderr are not looked at (see stderr_kept)."""
        self.discover(stdout + "\n" + "\n".join(self.stderr_kept(stderr)))

    def text(self, s):
        s = URL_RE.sub(lambda m: self.ports.get(int(m.group(2)), m.group(0)), s)
        s = HEX_ID_RE.sub(lambda m: self.ids.get(m.group(0), m.group(0)), s)
        s = DEC_ID_RE.sub(lambda m: self.ids.get(m.group(0), m.group(0)), s)
        # etcdctl prints IDs with %16x: an ID of fewer hex digits is padded
        # with spaces.
        s = re.sub(r"(Member|cluster|from|to) +<(id|cluster)", r"\1 <\2", s)
        s = re.sub(r"took = [0-9.]+[a-zµ]*s", "took = *", s)
        s = re.sub(r"compacted revision (\d+)",
                   lambda m: "compacted revision %+d" % (int(m.group(1)) - self.base_rev), s)
        s = re.sub(r'"(Revision|CreateRevision|ModRevision)" : (\d+)',
                   lambda m: '"%s" : %+d' % (m.group(1), int(m.group(2)) - self.base_rev), s)
        s = re.sub(r'"RaftTerm" : \d+', '"RaftTerm" : *', s)
        # lease timetolive --keys: the server's order of attached keys is
        # a map's order in etcd.
        s = re.sub(r"attached keys\(\[([^\]]*)\]\)",
                   lambda m: "attached keys([%s])" % " ".join(sorted(m.group(1).split())), s)
        return s

    # --- JSON ---
    def value(self, key, v, unordered):
        if isinstance(v, dict):
            return {k: self.value(k, x, unordered) for k, x in v.items()}
        if isinstance(v, list):
            out = [self.value(key, x, unordered) for x in v]
            if unordered:
                out.sort(key=lambda x: json.dumps(x, sort_keys=True))
            return out
        if key in MASK_KEYS:
            return "*"
        if key == "version" and isinstance(v, str):
            return "*"
        if key in REV_KEYS and isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return "rev%+d" % (v - self.base_rev)
        if isinstance(v, int) and not isinstance(v, bool) and str(v) in self.ids:
            return self.ids[str(v)]
        if isinstance(v, str):
            return self.text(v)
        return v

    def json_lines(self, s, unordered):
        out = []
        for line in s.splitlines():
            line = line.strip()
            if not line:
                continue
            doc = json.loads(line)
            out.append(json.dumps(self.value("", doc, unordered), sort_keys=True))
        return "\n".join(out) + "\n"

    # --- tables ---
    def table(self, s, unordered):
        header = None
        rows = []
        other = []
        for line in s.splitlines():
            if line.startswith("+"):
                continue
            if not line.startswith("|"):
                other.append(self.text(line))
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
                continue
            cells = ["*" if i < len(header) and header[i] in MASK_COLUMNS else self.text(c)
                     for i, c in enumerate(cells)]
            rows.append(" | ".join(cells))
        if unordered:
            rows.sort()
        return "\n".join(other + [" | ".join(header or [])] + rows) + "\n"

    # --- stderr ---
    @staticmethod
    def stderr_kept(s):
        """The lines of stderr a transcript keeps, not yet normalised: zap
        log lines are dropped, a retry warning is reduced to its gRPC error.
        IDs are discovered only here and in stdout: a log line names the
        client's random UUID, whose last group looks like a hex ID and would
        shift the numbering depending on whether a retry was logged."""
        out = []
        for line in s.splitlines():
            if line.startswith('{"level"'):
                try:
                    rec = json.loads(line)
                except ValueError:
                    out.append(line)
                    continue
                if rec.get("level") == "warn" and "error" in rec:
                    item = "(client retry log) " + rec["error"]
                    if not out or out[-1] != item:
                        out.append(item)
                continue
            out.append(line)
        return out

    def stderr(self, s, unordered=False):
        out = [self.text(line) for line in self.stderr_kept(s)]
        if unordered:
            out.sort()
        return "\n".join(out)

    def stdout(self, s, fmt, unordered):
        if fmt == "json" and s.strip().startswith(("{", "[")):
            return self.json_lines(s, unordered)
        if fmt == "table" or (s.startswith("+") and "|" in s):
            return self.table(s, unordered)
        s = self.text(s)
        if unordered:
            s = "\n".join(sorted(s.splitlines())) + "\n"
        return s
