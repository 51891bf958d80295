#!/usr/bin/env python3
"""Two 3-member clusters under the same clientv3 load (grpc-bench).

By default a muster cluster against an etcd 3.4 cluster (/usr/bin/etcd);
`--systems etcd,etcd` puts two etcd clusters side by side to see how much
two identical systems differ on this machine (the noise floor).

Both clusters run for the whole run on loopback, with the same heartbeat
and election settings and their data directories in one temp dir (one
filesystem).  For every operation and client count the two clusters get the
same grpc-bench command; the order alternates from cell to cell.  Clients
share connections (clients/8, at least 1, at most --max-conns), and the
connections go round robin to the three members.  After the run the
resident memory of each cluster (sum of its members' VmRSS) is recorded.

Prints a markdown table with A/B ratios and, with --json, the raw
grpc-bench results as JSON lines.

    bench/grpc/compare.py                              # muster vs etcd
    bench/grpc/compare.py --systems etcd,etcd --clients 1,64 --duration 3
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
from harness import ProcessGroup, free_port, request, wait_for  # noqa: E402


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Cluster:
    def __init__(self, group, label, kind, binary, extra):
        self.label = label
        self.kind = kind
        self.members = []
        ports = [(free_port(), free_port()) for _ in range(3)]
        initial = ",".join("%s%d=http://127.0.0.1:%d" % (label, i + 1, p[1])
                           for i, p in enumerate(ports))
        for i, (cport, pport) in enumerate(ports):
            name = "%s%d" % (label, i + 1)
            argv = [binary, "--name", name, "--data-dir", group.path(name + ".data"),
                    "--listen-client-urls", "http://127.0.0.1:%d" % cport,
                    "--advertise-client-urls", "http://127.0.0.1:%d" % cport,
                    "--listen-peer-urls", "http://127.0.0.1:%d" % pport,
                    "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % pport,
                    "--initial-cluster", initial,
                    "--initial-cluster-token", "grpc-bench-" + label,
                    "--initial-cluster-state", "new"] + list(extra)
            if kind == "etcd":
                argv += ["--logger", "zap", "--log-level", "warn"]
            proc = group.start(name, argv)
            self.members.append((proc, "http://127.0.0.1:%d" % cport))

    @property
    def endpoints(self):
        return ",".join(url for _, url in self.members)

    def wait_healthy(self, timeout=60):
        for proc, url in self.members:
            def ok(proc=proc, url=url):
                if not proc.alive():
                    raise AssertionError("%s exited:\n%s" % (proc.name, proc.log()[-3000:]))
                st, _, body = request(url, "GET", "/health", timeout=2)
                return st == 200 and b'"true"' in body
            wait_for(ok, timeout, "%s to be healthy" % proc.name, interval=0.05)

    def rss_mib(self):
        return sum(rss_kib(p.pid) for p, _ in self.members) / 1024.0

    def alive(self):
        return all(p.alive() for p, _ in self.members)


def conns_for(clients, max_conns):
    return max(1, min(max_conns, clients // 8))


def run_bench(bench, cluster, op, clients, conns, args):
    argv = [bench, "put" if op == "put" else "range", "--endpoints", cluster.endpoints,
            "--clients", str(clients), "--conns", str(conns), "--json",
            "--max-errors", str(args.max_errors)]
    if args.total:
        argv += ["--total", str(args.total)]
    else:
        argv += ["--duration", "%gs" % args.duration]
    if args.warmup:
        argv += ["--warmup", "%gs" % args.warmup]
    if op == "put":
        argv += ["--val-size", "256", "--key-space-size", str(args.key_space)]
    else:
        argv += ["--consistency", op[-1]]
    r = subprocess.run(argv, capture_output=True, text=True,
                       timeout=(args.total and 600) or (args.duration + args.warmup + 120))
    sys.stderr.write("  %s %s: %s" % (cluster.label, cluster.kind, r.stderr))
    if r.returncode != 0 or not r.stdout.strip():
        raise SystemExit("grpc-bench against %s failed (%d):\n%s" % (cluster.label, r.returncode,
                                                                     r.stderr))
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["system"] = cluster.kind
    res["cluster"] = cluster.label
    return res


def ratio(a, b):
    return "%.2f" % (a / b) if b else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default="muster,etcd", help="A,B: muster or etcd each")
    ap.add_argument("--muster", default=os.path.join(ROOT, "build", "bin", "muster"))
    ap.add_argument("--etcd", default="/usr/bin/etcd")
    ap.add_argument("--bench", default="", help="grpc-bench binary (default: build it)")
    ap.add_argument("--ops", default="put,range-l,range-s")
    ap.add_argument("--clients", default="1,16,64,256,1024")
    ap.add_argument("--max-conns", type=int, default=16)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per cell and cluster")
    ap.add_argument("--total", type=int, default=0, help="requests per cell instead of --duration")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per cell and cluster (alternating); the median by req/s is shown")
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--key-space", type=int, default=100000)
    ap.add_argument("--heartbeat-interval", default="100")
    ap.add_argument("--election-timeout", default="1000")
    ap.add_argument("--extra-flags", default="", help="flags given to both systems' members")
    ap.add_argument("--max-errors", type=int, default=1000,
                    help="a cell fails when more requests than this fail")
    ap.add_argument("--json", action="store_true", help="also print the raw results")
    args = ap.parse_args()

    kinds = args.systems.split(",")
    if len(kinds) != 2 or any(k not in ("muster", "etcd") for k in kinds):
        ap.error("--systems takes two of muster, etcd")
    if args.bench:
        bench = args.bench
    else:
        # Built next to the muster binary (build/bin by default).
        out = os.path.join(os.path.dirname(os.path.abspath(args.muster)), "grpc-bench")
        r = subprocess.run([os.path.join(HERE, "build.sh"), out], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit("bench/grpc/build.sh failed:\n" + r.stderr)
        bench = r.stdout.strip()
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass

    group = ProcessGroup(prefix="muster-grpc-bench-")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        extra = ["--heartbeat-interval", args.heartbeat_interval,
                 "--election-timeout", args.election_timeout] + args.extra_flags.split()
        clusters = []
        for label, kind in zip("ab", kinds):
            binary = args.muster if kind == "muster" else args.etcd
            clusters.append(Cluster(group, label, kind, binary, extra))
        for c in clusters:
            c.wait_healthy()
        rss_before = [c.rss_mib() for c in clusters]
        rows = []
        cell = 0
        for op in args.ops.split(","):
            for clients in [int(x) for x in args.clients.split(",")]:
                conns = conns_for(clients, args.max_conns)
                sys.stderr.write("%s, %d clients, %d conns\n" % (op, clients, conns))
                order = clusters if cell % 2 == 0 else clusters[::-1]
                cell += 1
                runs = {c.label: [] for c in clusters}
                for _ in range(args.repeat):
                    for c in order:
                        runs[c.label].append(run_bench(bench, c, op, clients, conns, args))
                        if not c.alive():
                            raise SystemExit("a member of cluster %s died:\n%s" %
                                             (c.label, group.dump_logs()))
                    order = order[::-1]
                # The median run by requests/s stands for the cell.
                res = {k: sorted(v, key=lambda r: r["rps"])[len(v) // 2] for k, v in runs.items()}
                rows.append((op, clients, conns, res["a"], res["b"]))
        rss_after = [c.rss_mib() for c in clusters]
    finally:
        group.close()

    a, b = kinds
    if a == b:
        a, b = a + " A", b + " B"
    print("| op | clients | conns | %s req/s | %s req/s | A/B | %s p50/p99 ms | %s p50/p99 ms "
          "| A/B p99 |" % (a, b, a, b))
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for op, clients, conns, ra, rb in rows:
        print("| %s | %d | %d | %.0f | %.0f | %s | %.2f / %.2f | %.2f / %.2f | %s |" % (
            op, clients, conns, ra["rps"], rb["rps"], ratio(ra["rps"], rb["rps"]),
            ra["p50_ms"], ra["p99_ms"], rb["p50_ms"], rb["p99_ms"],
            ratio(ra["p99_ms"], rb["p99_ms"])))
    print()
    print("| resident memory (3 members) | %s | %s | A/B |" % (a, b))
    print("|---|---:|---:|---:|")
    print("| before the run | %.0f MiB | %.0f MiB | %s |" % (rss_before[0], rss_before[1],
                                                          ratio(rss_before[0], rss_before[1])))
    print("| after the run | %.0f MiB | %.0f MiB | %s |" % (rss_after[0], rss_after[1],
                                                         ratio(rss_after[0], rss_after[1])))
    errors = sum(r[k]["errors"] for r in rows for k in (3, 4))
    if errors:
        print("\n%d requests failed in total (see the JSON lines)" % errors)
    if args.json:
        print()
        for row in rows:
            for r in row[3:]:
                print(json.dumps(r))


if __name__ == "__main__":
    main()
