"""A small etcd v3 client over the JSON gateway (/v3/...), which etcd 3.4
and muster both serve, for the robustness workload.  Standard library only.

Every call returns (status, body): status "ok" with the decoded JSON,
"error" with the server's error object (the request reached a member and was
refused or failed; it may still have taken effect for a write), or
"unreachable" when no byte of the request can have been processed (the
connection could not be opened), or "timeout"/"broken" when the outcome is
unknown (sent, no answer).
"""

import base64
import http.client
import json
import socket


def b64(s):
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


def unb64(s):
    return base64.b64decode(s).decode("utf-8", "replace") if s else ""


class Endpoint:
    """One keep-alive HTTP connection to one member's client URL."""

    def __init__(self, host, port, timeout):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.conn = None

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    def call(self, path, body, timeout=None):
        t = timeout or self.timeout
        if self.conn is None:
            try:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=t)
                self.conn.connect()
            except OSError:
                self.close()
                return "unreachable", None
        else:
            self.conn.timeout = t
            if self.conn.sock is not None:
                self.conn.sock.settimeout(t)
        data = json.dumps(body).encode()
        try:
            self.conn.request("POST", path, body=data,
                              headers={"Content-Type": "application/json"})
        except (OSError, http.client.HTTPException):
            # A reused connection the server closed meanwhile: nothing of this
            # request was read if the write itself failed before any byte...
            # which we cannot tell apart from a partial write; be safe.
            self.close()
            return "broken", None
        try:
            r = self.conn.getresponse()
            raw = r.read()
        except socket.timeout:
            self.close()
            return "timeout", None
        except (OSError, http.client.HTTPException):
            self.close()
            return "broken", None
        try:
            doc = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return "error", {"error": raw[:200].decode("utf-8", "replace"), "http": r.status}
        if r.status != 200:
            if isinstance(doc, dict):
                doc["http"] = r.status
            return "error", doc
        return "ok", doc


def header_rev(doc):
    return int(doc.get("header", {}).get("revision", 0) or 0)


def kv_of(doc_kv):
    """A KeyValue JSON object -> plain dict with decoded key/value."""
    if not doc_kv:
        return None
    return {
        "key": unb64(doc_kv.get("key", "")),
        "value": unb64(doc_kv.get("value", "")),
        "create_revision": int(doc_kv.get("create_revision", 0) or 0),
        "mod_revision": int(doc_kv.get("mod_revision", 0) or 0),
        "version": int(doc_kv.get("version", 0) or 0),
        "lease": int(doc_kv.get("lease", 0) or 0),
    }


class WatchStream:
    """One /v3/watch exchange: a create request, then result lines."""

    def __init__(self, host, port, key, range_end, start_revision, prev_kv=True, timeout=1.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        create = {"key": b64(key), "range_end": b64(range_end), "prev_kv": prev_kv}
        if start_revision > 0:
            create["start_revision"] = str(start_revision)
        body = json.dumps({"create_request": create}).encode()
        # One request; the answer streams until we close (as `curl -d` does).
        req = ("POST /v3/watch HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
               "Content-Length: %d\r\n\r\n" % (host, port, len(body))).encode()
        self.sock.sendall(req + body)
        self.buf = b""
        self.status = None
        self.chunked = False
        self.pending = b""  # decoded body bytes not yet split into lines

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("watch stream closed")
        self.buf += data

    def _read_headers(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "transfer-encoding" and "chunked" in v.lower():
                self.chunked = True

    def _decode_body(self):
        if not self.chunked:
            self.pending += self.buf
            self.buf = b""
            return
        while True:
            if b"\r\n" not in self.buf:
                return
            size_line, rest = self.buf.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                raise EOFError("watch stream ended")
            if len(rest) < size + 2:
                return
            self.pending += rest[:size]
            self.buf = rest[size + 2:]

    def next(self):
        """The next decoded result object (socket.timeout if none arrives in
        time; EOFError when the stream ends)."""
        if self.status is None:
            self._read_headers()
            if self.status != 200:
                raise EOFError("watch answered HTTP %d" % self.status)
        while True:
            self._decode_body()
            if b"\n" in self.pending:
                line, self.pending = self.pending.split(b"\n", 1)
                line = line.strip()
                if not line:
                    continue
                doc = json.loads(line)
                if "error" in doc and "result" not in doc:
                    raise EOFError("watch stream error: %r" % (doc["error"],))
                return doc.get("result", doc)
            self._fill()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
