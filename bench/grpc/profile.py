#!/usr/bin/env python3
"""Where a 3-member cluster spends its CPU under one grpc-bench load.

Starts one cluster (muster by default, or etcd), runs grpc-bench against it
and, during the measured part of the run, `perf record -g` on every member
(cpu-clock samples: these machines have no hardware counters).  Prints the
load's summary, each member's CPU seconds per 10k requests, and the top of
`perf report` for the leader and for the members together.

    bench/grpc/profile.py --clients 256 --duration 8            # muster, puts
    bench/grpc/profile.py --system etcd --clients 64
    bench/grpc/profile.py --op range-s --clients 256 --top 40

Needs perf (Debian linux-perf).  The perf data files are kept in --out
(default a temp dir, printed) for `perf report -i`.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
sys.path.insert(0, HERE)
from harness import ProcessGroup, request  # noqa: E402
from compare import Cluster, conns_for  # noqa: E402


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick  # utime + stime


def leader_index(cluster):
    for i, (proc, url) in enumerate(cluster.members):
        st, _, body = request(url, "POST", "/v3/maintenance/status", body=b"{}", timeout=2)
        if st == 200:
            j = json.loads(body)
            if j.get("leader") and j["leader"] == j["header"]["member_id"]:
                return i
    return 0


TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4"


def alloc_probes():
    """uprobes on tcmalloc's entry points (operator new and new[] are aliases
    of tc_new and tc_newarray); returns the perf event names."""
    names = ["malloc", "tc_new", "tc_newarray", "calloc", "realloc"]
    for n in names:
        subprocess.run(["perf", "probe", "-q", "-x", TCMALLOC, "--add", n],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return ["probe_libtcmalloc:" + n for n in names]


def alloc_sites(data, top):
    """Folds each sampled allocation's stack to its innermost frame in muster's
    own code (not the allocator, libstdc++, protobuf or asio internals)."""
    rep = subprocess.run(["perf", "script", "-i", data, "-F", "comm,ip,sym,dso"],
                         capture_output=True, text=True)
    counts = {}
    total = 0
    site = None
    for line in rep.stdout.splitlines() + [""]:
        if not line.strip():
            if total or site is not None:
                counts[site or "(no muster frame)"] = counts.get(site or "(no muster frame)", 0) + 1
            site = None
            total += 1 if line == "" else 0
            continue
        if line[0] not in " \t":
            site = None
            continue
        parts = line.split()
        if site is None and len(parts) >= 3 and parts[-1].endswith("/muster)"):
            sym = " ".join(parts[1:-1])
            if not re.match(r"(std::|boost::|google::|absl::|__gnu_cxx::|operator new)", sym):
                site = sym
    n = sum(counts.values()) or 1
    rows = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
    return "\n".join("%5.1f%% %s" % (100.0 * c / n, s[:150]) for s, c in rows)


def perf_stat(pid, events, path, duration):
    """`perf stat` counting `events` in process `pid` into `path`, for the
    measured part of the load (its duration less the warm-up second)."""
    return subprocess.Popen(
        ["perf", "stat", "-x", ",", "-o", path, "-e", ",".join(events), "-p", str(pid),
         "--", "sleep", "%g" % max(1.0, duration - 1.0)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def perf_stat_counts(path):
    """{event: count} from a `perf stat -x ,` file."""
    counts = {}
    with open(path) as fh:
        for line in fh:
            parts = line.split(",")
            if len(parts) > 2 and parts[0].strip().isdigit():
                counts[parts[2].strip()] = counts.get(parts[2].strip(), 0) + int(parts[0])
    return counts


# The system calls --count-syscalls counts (tracepoint names).
SYSCALLS = ["fdatasync", "fsync", "write", "pwrite64", "writev", "sendmsg", "read", "recvmsg",
            "futex", "epoll_wait", "epoll_pwait"]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", default="muster", choices=["muster", "etcd"])
    ap.add_argument("--muster", default=os.path.join(ROOT, "build", "bin", "muster"))
    ap.add_argument("--etcd", default="/usr/bin/etcd")
    ap.add_argument("--bench", default=os.path.join(ROOT, "build", "bin", "grpc-bench"))
    ap.add_argument("--op", default="put", choices=["put", "range-l", "range-s"])
    ap.add_argument("--clients", type=int, default=256)
    ap.add_argument("--max-conns", type=int, default=16)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--out", default="")
    ap.add_argument("--extra-flags", default="")
    ap.add_argument("--count-allocs", action="store_true",
                    help="instead of sampling, count heap allocations per request on each "
                         "member (uprobes on tcmalloc's malloc and operator new; muster only)")
    ap.add_argument("--alloc-sites", action="store_true",
                    help="with --count-allocs: also record each allocation's call stack "
                         "(DWARF) on the leader and one follower and list the muster "
                         "functions that allocate most")
    ap.add_argument("--count-syscalls", action="store_true",
                    help="instead of sampling, count each member's system calls per request "
                         "(syscall tracepoints: fdatasync, writes, reads, futex, epoll waits); "
                         "muster or etcd")
    ap.add_argument("--dwarf", action="store_true",
                    help="unwind with DWARF (call graphs through code without frame pointers)")
    args = ap.parse_args()

    out = args.out or tempfile.mkdtemp(prefix="muster-profile-")
    os.makedirs(out, exist_ok=True)
    group = ProcessGroup(prefix="muster-profile-")
    try:
        binary = args.muster if args.system == "muster" else args.etcd
        c = Cluster(group, "p", args.system, binary, args.extra_flags.split())
        c.wait_healthy()
        lead = leader_index(c)
        conns = conns_for(args.clients, args.max_conns)
        argv = [args.bench, "put" if args.op == "put" else "range", "--endpoints", c.endpoints,
                "--clients", str(args.clients), "--conns", str(conns), "--json",
                "--duration", "%gs" % args.duration, "--warmup", "%gs" % args.warmup]
        if args.op == "put":
            argv += ["--val-size", "256"]
        else:
            argv += ["--consistency", args.op[-1]]
        load = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(args.warmup)
        pids = [p.pid for p, _ in c.members]
        before = [cpu_seconds(p) for p in pids]
        load_before = cpu_seconds(load.pid)
        perfs = []
        if args.count_allocs:
            events = alloc_probes()
            stat_files = [os.path.join(out, "allocs%d.txt" % i) for i in range(len(pids))]
            for pid, f in zip(pids, stat_files):
                perfs.append(perf_stat(pid, events, f, args.duration))
            if args.alloc_sites:
                follower = next(i for i in range(len(pids)) if i != lead)
                for i in (lead, follower):
                    perfs.append(subprocess.Popen(
                        ["perf", "record", "-q", "-e", ",".join(events), "-p", str(pids[i]),
                         "--call-graph", "dwarf,8192", "-o",
                         os.path.join(out, "allocs%d%s.data" % (i, "-leader" if i == lead else "")),
                         "--", "sleep", "2"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        syscall_files = []
        if args.count_syscalls:
            events = ["syscalls:sys_enter_" + n for n in SYSCALLS]
            syscall_files = [os.path.join(out, "syscalls%d.txt" % i) for i in range(len(pids))]
            for pid, f in zip(pids, syscall_files):
                perfs.append(perf_stat(pid, events, f, args.duration))
        sampling = not args.count_allocs and not args.count_syscalls
        for i, pid in enumerate(pids if sampling else []):
            data = os.path.join(out, "member%d%s.data" % (i, "-leader" if i == lead else ""))
            perfs.append(subprocess.Popen(
                ["perf", "record", "-q", "-e", "cpu-clock", "-p", str(pid)] +
                (["--call-graph", "dwarf,16384", "-F", "199"] if args.dwarf else ["-g", "-F", "999"]) +
                [
                 "-o", data, "--", "sleep", "%g" % max(1.0, args.duration - 1.0)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for p in perfs:
            p.wait()
        after = [cpu_seconds(p) for p in pids]
        load_after = cpu_seconds(load.pid)
        stdout, stderr = load.communicate(timeout=args.duration + 120)
        sys.stdout.write(stderr)
        res = json.loads(stdout.strip().splitlines()[-1])
        window = max(1.0, args.duration - 1.0)
        reqs_in_window = res["rps"] * window
        print("\nCPU seconds per 10k requests (during %.0f s of the load):" % window)
        for i, (b, a) in enumerate(zip(before, after)):
            print("  member %d%s: %.2f" % (i, " (leader)" if i == lead else "",
                                          (a - b) / reqs_in_window * 1e4))
        print("  all three: %.2f" % ((sum(after) - sum(before)) / reqs_in_window * 1e4))
        print("  the load generator (grpc-bench): %.2f" %
              ((load_after - load_before) / reqs_in_window * 1e4))
        if args.system == "muster":
            print("\nbatching (averages over the whole run, from /metrics):")
            for i, (proc, url) in enumerate(c.members):
                st, _, body = request(url, "GET", "/metrics", timeout=5)
                vals = {}
                for line in body.decode().splitlines():
                    if line.startswith("#") or " " not in line:
                        continue
                    name, v = line.rsplit(" ", 1)
                    vals[name] = float(v)
                def avg(h):
                    n = vals.get(h + "_count", 0)
                    return vals.get(h + "_sum", 0) / n if n else 0
                print("  member %d%s: entries per log save %.1f, entries per apply write %.1f, "
                      "fsync %.2f ms, log saves %d" % (
                          i, " (leader)" if i == lead else "",
                          avg("muster_server_entries_per_log_save"),
                          avg("muster_server_apply_batch_entries"),
                          avg("etcd_disk_wal_fsync_duration_seconds") * 1000,
                          vals.get("etcd_disk_wal_fsync_duration_seconds_count", 0)))
        if args.count_allocs:
            print("\nheap allocations per request (malloc + operator new, during the window):")
            for i, f in enumerate(stat_files):
                total = sum(perf_stat_counts(f).values())
                print("  member %d%s: %.1f" % (i, " (leader)" if i == lead else "",
                                               total / reqs_in_window))
        if args.count_syscalls:
            print("\nsystem calls per request (during the window):")
            print("  %-18s %s" % ("", " ".join("%11s" % n for n in SYSCALLS)))
            totals = [0.0] * len(SYSCALLS)
            for i, f in enumerate(syscall_files):
                counts = perf_stat_counts(f)
                row = [counts.get("syscalls:sys_enter_" + n, 0) / reqs_in_window for n in SYSCALLS]
                totals = [t + r for t, r in zip(totals, row)]
                print("  %-18s %s" % ("member %d%s" % (i, " (leader)" if i == lead else ""),
                                      " ".join("%11.3f" % r for r in row)))
            print("  %-18s %s" % ("all three", " ".join("%11.3f" % t for t in totals)))
        if args.alloc_sites:
            for f in sorted(os.listdir(out)):
                if f.startswith("allocs") and f.endswith(".data"):
                    print("\n%s: muster functions that allocate (share of allocations, the "
                          "innermost muster frame of each stack):" % f)
                    print(alloc_sites(os.path.join(out, f), args.top))
        for i in range(len(pids)):
            if i != lead or not sampling:
                continue
            data = os.path.join(out, "member%d-leader.data" % i)
            rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio",
                                  "--percent-limit", "0.7", "-g", "none",
                                  "--sort", "dso,symbol"], capture_output=True, text=True)
            # perf pads its columns to the widest symbol; long C++ names are cut.
            lines = [re.sub(r"\s+", " ", l.rstrip(" -")).strip()[:160]
                     for l in rep.stdout.splitlines() if l.strip() and not l.startswith("#")]
            print("\nleader, top symbols (self time):")
            print("\n".join(lines[:args.top]))
        print("\nperf data in %s" % out)
    finally:
        group.close()


if __name__ == "__main__":
    main()
