"""Proxy overhead on loopback: sequential requests on one keep-alive client
connection, straight to the member the proxy uses and through the proxy.
Not a test (not registered with CTest); figures go to
docs/benchmarks-proxy.md.  Run: MUSTER_BIN_DIR=build/bin python3 bench_proxy.py
"""

import http.client
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxy_helpers import Cluster, Proxy, b64, call, member_id_of  # noqa: E402

N = int(os.environ.get("BENCH_REQUESTS", "2000"))


def run(port, n, path, body):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise AssertionError("status %d" % r.status)
        lat.append(time.perf_counter() - t)
    conn.close()
    lat.sort()
    return lat


def main():
    c = Cluster(3)
    try:
        c.start()
        c.wait_healthy()
        ic = ",".join("%s=%s" % (m.name, m.peer_url) for m in c.members)
        p = Proxy(c.group).start(["--proxy", "on", "--initial-cluster", ic])
        p.wait_serving()
        call(c.members[0].client_port, "/v3/kv/put", {"key": b64("k"), "value": b64("v")})
        st, _, j = p.call("/v3/kv/range", {"key": b64("k")})
        used = next(m for m in c.members
                    if member_id_of(m.client_port) == j["header"]["member_id"])
        cases = [("serializable range", "/v3/kv/range",
                  json.dumps({"key": b64("k"), "serializable": True})),
                 ("put", "/v3/kv/put", json.dumps({"key": b64("k"), "value": b64("v")}))]
        for name, path, body in cases:
            for label, port in (("direct", used.client_port), ("via proxy", p.port)):
                run(port, 200, path, body)  # warm up
                t = time.perf_counter()
                lat = run(port, N, path, body)
                el = time.perf_counter() - t
                print("%-20s %-10s %6.0f req/s  p50 %.3f ms  p99 %.3f ms" % (
                    name, label, N / el, lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.99)] * 1e3))
    finally:
        c.close()


if __name__ == "__main__":
    main()
