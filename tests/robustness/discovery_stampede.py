#!/usr/bin/env python3
"""muster-discovery under kill -9 during a stampede of registrations.

Registrars register members into a few tokens as fast as they can while the
nemesis kills muster-discovery with SIGKILL and restarts it on the same port
and data directory; an observer reads every token throughout.  Checked:
  - every acknowledged registration (201) is there at the end, with the
    createdIndex it was acknowledged with;
  - no member is listed twice, no createdIndex is used twice in the store;
  - once a token has `size` members, its first `size` (by createdIndex) never
    change: every observation and the final listing agree (what etcd's
    discovery client relies on to tell members from late joiners).

    discovery_stampede.py [--seed N] [--kills K] [--registrars R]
Exit status 0 when everything holds, 1 on a violation.
"""

import argparse
import json
import os
import random
import sys
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from harness import Discovery, ProcessGroup, request, wait_for  # noqa: E402


def listing(d, path):
    """(members by id -> createdIndex, ordered ids) of a token, or None."""
    try:
        status, _, body = request(d.url, "GET", path, timeout=2)
    except OSError:
        return None
    if status != 200:
        return None
    doc = json.loads(body)
    nodes = doc.get("node", {}).get("nodes", []) or []
    out = {}
    order = []
    for n in sorted(nodes, key=lambda n: n["createdIndex"]):
        mid = n["key"].rsplit("/", 1)[1]
        if mid in out:
            raise AssertionError("member %s listed twice in %s: %r" % (mid, path, nodes))
        out[mid] = (n["createdIndex"], n.get("value"))
        order.append(mid)
    return out, order


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kills", type=int, default=4)
    ap.add_argument("--registrars", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=4)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    group = ProcessGroup(prefix="muster-discovery-stampede-")
    keep = False
    try:
        d = Discovery(group)
        sizes = [rng.choice([1, 3, 5, 7]) for _ in range(args.tokens)]
        tokens = []
        for s in sizes:
            url = d.new_token(s)
            tokens.append((urllib.parse.urlsplit(url).path, s))
        stop = threading.Event()
        lock = threading.Lock()
        acked = {}  # (token path, id) -> createdIndex
        attempts = {"ok": 0, "refused": 0, "unknown": 0}
        firsts = {}  # token path -> first `size` ids, once seen
        violations = []

        def registrar(i):
            r = random.Random(args.seed * 100 + i)
            while not stop.is_set():
                with lock:
                    path, _ = r.choice(tokens[-6:])
                mid = "%016x" % r.getrandbits(64)
                body = "value=" + urllib.parse.quote("%s=http://127.0.0.1:%d" % (mid, 2380 + i))
                try:
                    status, _, raw = request(d.url, "PUT", "%s/%s?prevExist=false" % (path, mid),
                                             body=body, timeout=2)
                except OSError:
                    with lock:
                        attempts["unknown"] += 1
                    time.sleep(0.02)
                    continue
                with lock:
                    if status == 201:
                        attempts["ok"] += 1
                        acked[(path, mid)] = json.loads(raw)["node"]["createdIndex"]
                    elif status >= 500:
                        attempts["unknown"] += 1
                    else:
                        attempts["refused"] += 1

        def observer():
            while not stop.is_set():
                with lock:
                    current = list(tokens)
                for path, size in current:
                    got = listing(d, path)
                    if got is None:
                        continue
                    _, order = got
                    if len(order) >= size:
                        first = order[:size]
                        with lock:
                            if path not in firsts:
                                firsts[path] = first
                            elif firsts[path] != first:
                                violations.append("%s: first %d changed from %s to %s" % (
                                    path, size, firsts[path], first))
                time.sleep(0.01)

        def creator():
            # New tokens keep coming, so registrations keep being accepted
            # (a token takes 4 x size + 16 before its quota refuses more).
            while not stop.is_set():
                try:
                    status, _, body = request(d.url, "PUT", "/new?size=%d" % rng.choice([1, 3, 5]),
                                              timeout=2)
                except OSError:
                    status = 0
                if status == 201:
                    url = body.decode().strip()
                    got = None
                    try:
                        st2, _, raw = request(d.url, "GET",
                                              urllib.parse.urlsplit(url).path + "/_config/size",
                                              timeout=2)
                        if st2 == 200:
                            got = int(json.loads(raw)["node"]["value"])
                    except OSError:
                        pass
                    if got:
                        with lock:
                            tokens.append((urllib.parse.urlsplit(url).path, got))
                time.sleep(0.2)

        threads = [threading.Thread(target=registrar, args=(i,), daemon=True)
                   for i in range(args.registrars)]
        threads.append(threading.Thread(target=creator, daemon=True))
        threads.append(threading.Thread(target=observer, daemon=True))
        for t in threads:
            t.start()
        for k in range(args.kills):
            time.sleep(rng.uniform(0.3, 1.5))
            d.kill9()
            time.sleep(rng.uniform(0.05, 0.5))
            d.start()  # same port, same data directory
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(timeout=10)

        # Final: everything acknowledged is there, unchanged.
        indexes = {}
        for path, size in tokens:
            got = wait_for(lambda: listing(d, path), 10, "listing of %s" % path)
            members, order = got
            for mid, (idx, _) in members.items():
                if idx in indexes:
                    violations.append("createdIndex %d used by %s and %s" % (idx, indexes[idx],
                                                                            (path, mid)))
                indexes[idx] = (path, mid)
            if len(order) >= size and path in firsts and firsts[path] != order[:size]:
                violations.append("%s: first %d at the end %s, observed earlier %s" % (
                    path, size, order[:size], firsts[path]))
        for (path, mid), idx in acked.items():
            got = listing(d, path)
            members = got[0] if got else {}
            if mid not in members:
                violations.append("acknowledged registration %s in %s (createdIndex %d) lost"
                                  % (mid, path, idx))
            elif members[mid][0] != idx:
                violations.append("registration %s in %s acknowledged with createdIndex %d, "
                                  "listed with %d" % (mid, path, idx, members[mid][0]))
        print("discovery stampede seed=%d: %d kills, registrations ok=%d refused=%d unknown=%d, "
              "%d tokens full; %s" % (args.seed, args.kills, attempts["ok"], attempts["refused"],
                                      attempts["unknown"], len(firsts),
                                      "PASS" if not violations else "FAIL"))
        for v in violations[:20]:
            print("  " + v)
        if attempts["ok"] == 0 or len(firsts) == 0:
            print("  the stampede did not get going: nothing was checked")
            violations.append("no registrations")
        keep = bool(violations)
        if keep:
            print("  logs and data: %s" % group.dir)
        return 1 if violations else 0
    finally:
        group.keep = keep
        group.close()


if __name__ == "__main__":
    sys.exit(main())
