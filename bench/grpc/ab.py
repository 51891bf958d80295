#!/usr/bin/env python3
"""A/B two (or more) muster builds under the same gRPC put load, alternating.

For each round and each binary in turn: start a fresh 3-member cluster of
that binary on loopback (compare.py's Cluster: same flags, data dirs in a
temp dir), run grpc-bench puts against it, and measure over the middle of
the run the members' CPU seconds (utime+stime from /proc) and the load
generator's.  Binaries alternate within every round, so a slow spell of a
shared machine hits both builds alike; medians over the rounds are printed
at the end.

Build each side into its own bin/ dir and copy it away first (never rebuild a
bin dir a benchmark is using), e.g.:

    cp -r build/bin /tmp/B && cp -r ../base/build/bin /tmp/A
    bench/grpc/ab.py /tmp/A/muster /tmp/B/muster --rounds 5 --clients 256
    bench/grpc/ab.py /tmp/A/muster /tmp/B/muster+--unsafe-no-fsync   # extra flags after '+'

Each line: requests/s, p50/p99 latency (ms), members' CPU seconds per 10k
puts, load generator's CPU seconds per 10k puts, the 1-minute load average.
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
sys.path.insert(0, HERE)
from harness import ProcessGroup  # noqa: E402
from compare import Cluster, conns_for  # noqa: E402
from profile import cpu_seconds  # noqa: E402


def one_run(spec, args):
    binary, *extra = spec.split("+")
    group = ProcessGroup(prefix="ab-")
    try:
        cluster = Cluster(group, "p", "muster", binary, extra)
        cluster.wait_healthy()
        argv = [args.bench, "put", "--endpoints", cluster.endpoints,
                "--clients", str(args.clients), "--conns", str(conns_for(args.clients, 16)),
                "--json", "--duration", "%gs" % args.duration, "--warmup", "%gs" % args.warmup,
                "--val-size", "256", "--key-space-size", str(args.key_space)]
        load = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Measure CPU over the middle of the run: after the warm-up, before the end.
        time.sleep(args.warmup + 0.5)
        pids = [proc.pid for proc, _ in cluster.members]
        m0 = sum(cpu_seconds(p) for p in pids)
        l0 = cpu_seconds(load.pid)
        t0 = time.time()
        time.sleep(max(1.0, args.duration - 2))
        m1 = sum(cpu_seconds(p) for p in pids)
        l1 = cpu_seconds(load.pid)
        t1 = time.time()
        out, err = load.communicate(timeout=args.duration + args.warmup + 120)
        if load.returncode != 0 or not out.strip():
            raise SystemExit("grpc-bench failed (%d):\n%s" % (load.returncode, err))
        r = json.loads(out.strip().splitlines()[-1])
        n = r["rps"] * (t1 - t0)
        return {"rps": r["rps"], "p50": r["p50_ms"], "p99": r["p99_ms"],
                "members": (m1 - m0) / n * 1e4, "gen": (l1 - l0) / n * 1e4,
                "load": os.getloadavg()[0]}
    finally:
        group.close()


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("binaries", nargs="+", help="muster binaries, each optionally +flag+flag")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--clients", type=int, default=256)
    p.add_argument("--duration", type=float, default=6)
    p.add_argument("--warmup", type=float, default=1)
    p.add_argument("--key-space", type=int, default=100000)
    p.add_argument("--bench", default=os.path.join(ROOT, "build", "bin", "grpc-bench"),
                   help="grpc-bench binary (bench/grpc/build.sh builds it)")
    args = p.parse_args()
    if not os.access(args.bench, os.X_OK):
        raise SystemExit("no grpc-bench at %s: run bench/grpc/build.sh" % args.bench)
    res = {b: [] for b in args.binaries}
    for rnd in range(args.rounds):
        for b in args.binaries:
            r = one_run(b, args)
            res[b].append(r)
            print("round %d %-48s rps %7.0f p50 %6.2f p99 %6.2f members %.3f gen %.3f load %.1f"
                  % (rnd + 1, b, r["rps"], r["p50"], r["p99"], r["members"], r["gen"],
                     r["load"]), flush=True)
    print("medians over %d rounds, %d clients:" % (args.rounds, args.clients))
    for b in args.binaries:
        xs = res[b]
        print("%-48s rps %7.0f p50 %6.2f p99 %6.2f members CPU s/10k %.3f (load %.1f)"
              % (b, median(x["rps"] for x in xs), median(x["p50"] for x in xs),
                 median(x["p99"] for x in xs), median(x["members"] for x in xs),
                 median(x["load"] for x in xs)))


if __name__ == "__main__":
    main()
