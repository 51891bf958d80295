"""A fault-injecting TCP relay in front of every member's peer port.

Each member listens on a private peer port and advertises a *front* port
owned by the relay, so every peer connection in the cluster crosses the
relay.  The relay knows which member dialed (it looks the connecting socket
up in /proc: the process that owns it), and which member was dialed (the
front), so faults are per directed link "bytes from a to b", whichever side
opened the connection.  The members run unmodified.

Faults on a directed link a->b:
  - blocked: bytes from a to b are held back (not read further, so the
    sender's buffers fill and its writes stall), exactly what TCP does
    while packets are being dropped; they flow again when the link heals,
    unless the connection is cut first.  New connections are accepted and
    held the same way.
  - delay (+ jitter): each chunk is forwarded after delay + U(0, jitter)
    milliseconds, in order.  Within one TCP stream bytes are never
    reordered (TCP forbids it); messages on different connections are, by
    their independent random delays.
  - cut: every open connection between two members is reset at once.
  - hold snapshots: a snapshot stream a dials to b (muster's peer
    protocol: the dialer's first frame is a Handshake with stream
    STREAM_SNAPSHOT) passes its handshake and the MsgSnap that opens it,
    then holds the chunks until the link heals; a's other connections to b
    are untouched.  The receiver has begun the snapshot (it holds its
    install slot) and gets the rest after whatever the test does meanwhile
    (an election), as from a sender paused mid-stream.
Connections from processes that are not members (a test's own GET
/members, a joining member not yet registered) are relayed unfaulted.

Everything runs on one asyncio loop in a daemon thread; the control
methods are thread-safe.
"""

import asyncio
import os
import random
import socket
import threading
import time


def _hex_port(port):
    return "%04X" % port


def _socket_inode(local_port, remote_port):
    """The inode of the IPv4 loopback socket 127.0.0.1:local_port ->
    127.0.0.1:remote_port, from /proc/net/tcp (None if absent)."""
    want_local = "0100007F:" + _hex_port(local_port)
    want_remote = "0100007F:" + _hex_port(remote_port)
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[1] == want_local and parts[2] == want_remote:
                    return parts[9]
    except OSError:
        return None
    return None


def _pid_owning(inode, pids):
    target = "socket:[%s]" % inode
    for pid in pids:
        d = "/proc/%d/fd" % pid
        try:
            for fd in os.listdir(d):
                try:
                    if os.readlink(os.path.join(d, fd)) == target:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


class Link:
    """Fault settings of one directed link (a -> b)."""

    def __init__(self):
        self.blocked = False
        self.delay_ms = 0.0
        self.jitter_ms = 0.0
        self.hold_snapshots = False


class Relay:
    def __init__(self, seed=0):
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._fronts = {}  # name -> (front_port, target_port)
        self._pids = {}  # pid -> member name
        self._links = {}  # (a, b) -> Link
        self._conns = set()  # open _Conn objects
        self._servers = {}
        self._changed = None  # asyncio.Event, set on every rule change
        self.stats = {"connections": 0, "unknown_sources": 0, "bytes": 0,
                      "held_snapshot_streams": 0}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)
        self._thread.start()
        self._call(self._init)

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coro_fn, *args):
        fut = asyncio.run_coroutine_threadsafe(coro_fn(*args), self._loop)
        return fut.result(timeout=30)

    async def _init(self):
        self._changed = asyncio.Event()

    # ---------------------------------------------------------------- setup

    def add_front(self, name, front_port, target_port):
        """Listen on front_port (member `name`'s advertised peer port) and
        relay to target_port (where it really listens)."""
        self._call(self._add_front, name, front_port, target_port)

    async def _add_front(self, name, front_port, target_port):
        srv = await asyncio.start_server(
            lambda r, w: self._spawn(self._accept(name, front_port, target_port, r, w)),
            host="127.0.0.1", port=front_port, reuse_address=True)
        with self._lock:
            self._fronts[name] = (front_port, target_port)
            self._servers[name] = srv

    def set_pid(self, name, pid):
        """Member `name` now runs as `pid` (after every start)."""
        with self._lock:
            for p, n in list(self._pids.items()):
                if n == name:
                    del self._pids[p]
            if pid:
                self._pids[pid] = name

    def close(self):
        async def shut():
            for srv in self._servers.values():
                srv.close()
            for c in list(self._conns):
                c.abort()
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            self._call(shut)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    # ---------------------------------------------------------------- faults

    def _link(self, a, b):
        return self._links.setdefault((a, b), Link())

    def _notify(self):
        self._loop.call_soon_threadsafe(self._wake)

    def _wake(self):
        ev = self._changed
        self._changed = asyncio.Event()
        ev.set()

    def block(self, a, b):
        """Stop bytes from a to b."""
        with self._lock:
            self._link(a, b).blocked = True
        self._notify()

    def partition(self, side_a, side_b, cut=False):
        """No bytes between any member of side_a and any of side_b, either
        way.  cut=True also resets the open connections between them."""
        with self._lock:
            for a in side_a:
                for b in side_b:
                    self._link(a, b).blocked = True
                    self._link(b, a).blocked = True
        self._notify()
        if cut:
            self.cut(side_a, side_b)

    def cut(self, side_a, side_b):
        sa, sb = set(side_a), set(side_b)

        async def do():
            for c in list(self._conns):
                if (c.src in sa and c.dst in sb) or (c.src in sb and c.dst in sa):
                    c.abort()
        self._call(do)

    def hold_snapshots(self, a, b):
        """Hold snapshot streams from a to b after their handshake (see
        the top of the file) until heal()."""
        with self._lock:
            self._link(a, b).hold_snapshots = True
        self._notify()

    def set_delay(self, a, b, delay_ms, jitter_ms=0.0):
        with self._lock:
            link = self._link(a, b)
            link.delay_ms = float(delay_ms)
            link.jitter_ms = float(jitter_ms)
        self._notify()

    def heal(self):
        """Every link back to normal (no block, no delay)."""
        with self._lock:
            self._links.clear()
        self._notify()

    def describe(self):
        with self._lock:
            out = []
            for (a, b), l in sorted(self._links.items()):
                if l.blocked or l.delay_ms or l.jitter_ms or l.hold_snapshots:
                    out.append("%s->%s%s%s%s" % (a, b, " blocked" if l.blocked else "",
                                               " hold-snapshots" if l.hold_snapshots else "",
                                               " delay=%g+%g" % (l.delay_ms, l.jitter_ms)
                                               if l.delay_ms or l.jitter_ms else ""))
            return out

    # ---------------------------------------------------------------- data path

    def _holds_snapshots(self, a, b):
        with self._lock:
            l = self._links.get((a, b))
            return l is not None and l.hold_snapshots

    def _rule(self, a, b):
        with self._lock:
            l = self._links.get((a, b))
            if l is None:
                return False, 0.0
            delay = l.delay_ms + (self._rng.uniform(0, l.jitter_ms) if l.jitter_ms else 0.0)
            return l.blocked, delay / 1000.0

    @staticmethod
    def _spawn(coro):
        # The connection's task is ours, not asyncio's: when start_server
        # gets a coroutine, Python 3.11 asks the finished task for its
        # exception, which raises (and logs a traceback) for a task that
        # close() cancelled before it ever ran.
        def done(task):
            if not task.cancelled() and task.exception() is not None:
                task.get_loop().call_exception_handler({
                    "message": "relay connection failed", "exception": task.exception()})

        asyncio.get_running_loop().create_task(coro).add_done_callback(done)

    async def _accept(self, dst, front_port, target_port, reader, writer):
        try:
            await self._relay(dst, front_port, target_port, reader, writer)
        except (asyncio.CancelledError, OSError):
            writer.transport.abort()

    async def _relay(self, dst, front_port, target_port, reader, writer):
        peer = writer.get_extra_info("peername")
        src = None
        if peer:
            inode = _socket_inode(peer[1], front_port)
            if inode:
                with self._lock:
                    pids = dict(self._pids)
                pid = _pid_owning(inode, pids)
                src = pids.get(pid)
        self.stats["connections"] += 1
        if src is None:
            self.stats["unknown_sources"] += 1
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            writer.close()
            return
        conn = _Conn(self, src, dst, writer, uw)
        self._conns.add(conn)
        try:
            await asyncio.gather(conn.pump(reader, uw, src, dst), conn.pump(ur, writer, dst, src),
                                 return_exceptions=True)
        finally:
            conn.abort()
            self._conns.discard(conn)

    async def wait_change(self):
        await self._changed.wait()


class _Conn:
    def __init__(self, relay, src, dst, down_writer, up_writer):
        self.relay = relay
        self.src = src  # member that dialed (None: not a member)
        self.dst = dst
        self._writers = (down_writer, up_writer)
        self._closed = False
        self._head = b""  # a length, or the handshake, not yet whole
        self._left = None  # bytes left in the dialer's current frame
        self._frames = 0  # the dialer's whole frames so far (counted up to 2)
        self.snapshot_stream = None  # known once the handshake frame is read

    def abort(self):
        if self._closed:
            return
        self._closed = True
        for w in self._writers:
            try:
                w.transport.abort()
            except Exception:
                pass

    def _classify(self, data):
        """Splits the dialer's bytes into (its first two frames' bytes, the
        rest) and decides from the first whether the connection is a
        snapshot stream.  Frame: a 4-byte big-endian length N, a type byte
        (1: Handshake), N-1 bytes of protobuf; Handshake.stream is field 5
        (varint), STREAM_SNAPSHOT 1.  The second frame opens the stream (a
        MsgSnap on a snapshot stream).  Any other first frame (a Raft
        stream, or not muster's protocol at all: etcd speaks HTTP) ends the
        classification at once; only the handshake's bytes are kept."""
        passed = 0
        while self._frames < 2 and passed < len(data):
            if self._left is None:  # a frame's 4-byte length
                take = data[passed:passed + 4 - len(self._head)]
                self._head += take
                passed += len(take)
                if len(self._head) == 4:
                    self._left = int.from_bytes(self._head, "big")
                    self._head = b""
                    if self._frames == 0 and not 1 <= self._left <= 4096:
                        self.snapshot_stream = False
                        self._frames = 2
            else:
                take = data[passed:passed + self._left]
                passed += len(take)
                self._left -= len(take)
                if self._frames == 0:
                    self._head += take
                if self._left == 0:
                    self._left = None
                    self._frames += 1
                    if self._frames == 1:
                        f, self._head = self._head, b""
                        self.snapshot_stream = f[0] == 1 and _varint_field(f[1:], 5) == 1
                        if not self.snapshot_stream:
                            self._frames = 2
        return data[:passed], data[passed:]

    async def pump(self, reader, writer, a, b):
        """Bytes from member a (reader) to member b (writer).  A clean end
        of the stream is passed on (half-close); an error on either side
        resets the whole connection, as the kernel would for the real peer."""
        relay = self.relay
        queue = asyncio.Queue()

        async def deliver():
            try:
                while True:
                    item = await queue.get()
                    if item is None:
                        if not self._closed:
                            writer.write_eof()
                        return
                    due, data, after_opening = item
                    counted = False
                    while True:
                        blocked, _ = relay._rule(a, b) if a and b else (False, 0.0)
                        if not blocked and after_opening and self.snapshot_stream and \
                                relay._holds_snapshots(a, b):
                            blocked = True
                            if not counted:
                                counted = True
                                relay.stats["held_snapshot_streams"] += 1
                        if not blocked:
                            break
                        await relay.wait_change()
                    wait = due - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    writer.write(data)
                    relay.stats["bytes"] += len(data)
                    await writer.drain()
            except (OSError, RuntimeError, ConnectionError):
                self.abort()

        sender = asyncio.ensure_future(deliver())
        last_due = 0.0
        try:
            while not self._closed:
                data = await reader.read(65536)
                if not data:
                    break
                _, delay = relay._rule(a, b) if a and b else (False, 0.0)
                due = max(time.monotonic() + delay, last_due)
                last_due = due
                if a == self.src and self._frames < 2:
                    head, data = self._classify(data)
                    if head:
                        queue.put_nowait((due, head, False))
                if data:
                    queue.put_nowait((due, data, True))
                # Back-pressure: stop reading while 64 chunks wait (a blocked
                # link fills the sender's buffers, as a lossy network does).
                while queue.qsize() > 64 and not self._closed and not sender.done():
                    await asyncio.sleep(0.01)
            queue.put_nowait(None)
            await sender
        except (OSError, ConnectionError):
            self.abort()
        finally:
            if not sender.done():
                sender.cancel()


def _varint_field(buf, number):
    """The value of varint field `number` in a protobuf message, or None."""
    i = 0

    def varint():
        nonlocal i
        v = shift = 0
        while i < len(buf):
            b = buf[i]
            i += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return v
        raise ValueError("truncated varint")

    try:
        while i < len(buf):
            key = varint()
            field, wire = key >> 3, key & 7
            if wire == 0:
                v = varint()
                if field == number:
                    return v
            elif wire == 1:
                i += 8
            elif wire == 2:
                i += varint()
            elif wire == 5:
                i += 4
            else:
                return None
    except ValueError:
        return None
    return None


def _self_test_relay():
    """A relay with one front ("b") to a listening socket, and this process
    as member "a": (relay, listener, front port)."""
    r = Relay()
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    front = probe.getsockname()[1]
    probe.close()
    r.add_front("b", front, ls.getsockname()[1])
    r.set_pid("a", os.getpid())
    return r, ls, front


def self_test():
    """A quick check that blocking holds bytes and healing releases them."""
    r, ls, front = _self_test_relay()
    c = socket.create_connection(("127.0.0.1", front))
    s, _ = ls.accept()
    c.sendall(b"x")
    assert s.recv(1) == b"x"
    r.block("a", "b")
    c.sendall(b"y")
    s.settimeout(0.3)
    try:
        s.recv(1)
        raise AssertionError("blocked bytes got through")
    except socket.timeout:
        pass
    r.heal()
    s.settimeout(5)
    assert s.recv(1) == b"y"
    c.close()
    s.close()
    ls.close()
    r.close()


def self_test_hold_snapshots():
    """A snapshot stream passes its handshake and opening MsgSnap and is
    held after them until heal(); a Raft stream on the same link is not."""
    def frame(type_, payload):
        return (len(payload) + 1).to_bytes(4, "big") + bytes([type_]) + payload

    r, ls, front = _self_test_relay()
    r.hold_snapshots("a", "b")
    # Handshake{version: 1, from: 7, stream: STREAM_RAFT (absent)}, then data.
    raft_hs = frame(1, bytes([0x08, 0x01, 0x18, 0x07]))
    snap_hs = frame(1, bytes([0x08, 0x01, 0x18, 0x07, 0x28, 0x01]))
    msg = frame(3, b"MsgSnap")
    chunk = frame(4, b"chunk")

    def recv_exactly(s, n):
        out = b""
        while len(out) < n:
            chunk = s.recv(n - len(out))
            if not chunk:
                break
            out += chunk
        return out

    for hs, held in ((raft_hs, False), (snap_hs, True)):
        c = socket.create_connection(("127.0.0.1", front))
        s, _ = ls.accept()
        s.settimeout(5)
        c.sendall(hs[:3])  # the handshake split across reads
        time.sleep(0.05)
        c.sendall(hs[3:] + msg[:6])
        time.sleep(0.05)
        c.sendall(msg[6:] + chunk)
        assert recv_exactly(s, len(hs) + len(msg)) == hs + msg, "the opening must pass"
        if held:
            s.settimeout(0.3)
            try:
                s.recv(1)
                raise AssertionError("a held snapshot stream's bytes got through")
            except socket.timeout:
                pass
            assert r.stats["held_snapshot_streams"] == 1
            r.heal()
            s.settimeout(5)
        assert recv_exactly(s, len(chunk)) == chunk
        c.close()
        s.close()
    ls.close()
    r.close()
