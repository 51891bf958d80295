"""The deployment examples, checked as far as this machine allows:

- deploy/local-cluster.sh --check, in both bootstrap modes (muster-discovery
  and DNS SRV through dnsmasq), and its Ctrl-C path: every process it started
  is gone afterwards and its temporary directory is removed;
- deploy/Procfile: every line run as a Procfile runner would (sh -c, from the
  repository root, MUSTER_TOKEN set after `musterctl discovery new`), with the
  fixed ports and /tmp paths moved to free ones; three members and a proxy form;
- deploy/kubernetes/*.yaml: structure, real muster flags, and an SRV name that
  matches the headless Service's port name, protocol and namespace;
- deploy/cloud-init/user-data.yaml: valid #cloud-config, the systemd unit is
  deploy/systemd/muster.service verbatim, and the EnvironmentFile its script
  writes starts a real muster that registers with a real muster-discovery.

Python 3 standard library plus python3-yaml (deploy/install-deps.sh installs it).
"""

import os
import re
import signal
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "node"))
from harness import Discovery, ProcessGroup, free_port, request, wait_for  # noqa: E402
from cluster import MUSTER  # noqa: E402

import yaml  # python3-yaml, installed by deploy/install-deps.sh

BIN_DIR = os.environ.get("MUSTER_BIN_DIR", "")
MUSTERCTL = os.path.join(BIN_DIR, "musterctl")
SCRIPT = os.path.join(ROOT, "deploy", "local-cluster.sh")
DNSMASQ = next((p for p in ("/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/usr/local/sbin/dnsmasq")
                if os.path.exists(p)), None)


def script_env(**extra):
    env = dict(os.environ)
    env.update({"BUILD_DIR": os.path.dirname(BIN_DIR), "MUSTER_SKIP_BUILD": "1",
                "MUSTER_DISCOVERY_PORT": str(free_port())})
    env.pop("MUSTER_KEEP", None)
    env.update(extra)
    return env


def processes_mentioning(text):
    """PIDs of live processes whose command line contains `text`."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open("/proc/%s/stat" % pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmd and state != "Z":
            out.append(int(pid))
    return out


def muster_flags():
    """Every --flag `muster --help` lists."""
    out = subprocess.run([MUSTER, "--help"], capture_output=True, text=True, timeout=10)
    flags = set(re.findall(r"^\s+(--[a-z0-9-]+)", out.stdout + out.stderr, re.M))
    assert len(flags) > 30, "muster --help listed too few flags: %r" % out
    return flags


def ctl(*args, timeout=30):
    return subprocess.run([MUSTERCTL] + list(args), capture_output=True, text=True, timeout=timeout)


class LocalClusterTest(unittest.TestCase):
    def run_check(self, *args):
        r = subprocess.run([SCRIPT] + list(args) + ["--check"], env=script_env(),
                           capture_output=True, text=True, timeout=150)
        out = r.stdout + r.stderr
        self.assertEqual(r.returncode, 0, out)
        self.assertIn("check passed", out)
        # Three started members in the table, three healthy endpoints, the
        # key written through the proxy read back from m3.
        self.assertEqual(len(re.findall(r"\| started \|", out)), 3, out)
        self.assertEqual(out.count("is healthy: successfully committed proposal"), 3, out)
        self.assertRegex(out, r"demo-key\nhello from ")
        work = re.search(r"data:\s+(\S+)/m\{1,2,3\}\.data", out).group(1)
        # Stopped: nothing runs with its data dir any more, and it is removed.
        self.assertEqual(processes_mentioning(work), [], out)
        self.assertFalse(os.path.exists(work))
        return out

    def test_check_with_discovery(self):
        out = self.run_check()
        self.assertIn("discovery token (size 3): http://127.0.0.1:", out)
        self.assertIn("local-cluster: stopped 5 processes", out)

    @unittest.skipUnless(DNSMASQ, "dnsmasq not installed")
    def test_check_with_srv(self):
        out = self.run_check("--srv")
        self.assertIn("serves _etcd-server._tcp.muster.test", out)
        self.assertIn("local-cluster: stopped 5 processes", out)  # dnsmasq + 3 members + proxy

    def interrupt(self, args, to_group):
        p = subprocess.Popen([SCRIPT] + args, env=script_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.addCleanup(lambda: p.poll() is None and os.killpg(p.pid, signal.SIGKILL))
        lines = []
        deadline = time.monotonic() + 90
        for line in p.stdout:  # the script prints this line once everything is verified
            lines.append(line)
            if "Ctrl-C stops everything" in line or time.monotonic() > deadline:
                break
        out = "".join(lines)
        self.assertIn("Ctrl-C stops everything", out)
        work = re.search(r"data:\s+(\S+)/m\{1,2,3\}\.data", out).group(1)
        children = processes_mentioning(work)
        self.assertEqual(len(children), 5, out)  # discovery or dnsmasq, m1..m3, proxy m4
        if to_group:
            os.killpg(p.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground group
        else:
            os.kill(p.pid, signal.SIGINT)  # kill -INT <script>
        rest = p.communicate(timeout=60)[0]
        self.assertEqual(p.returncode, 130, out + rest)
        self.assertIn("stopped 5 processes", rest)
        self.assertNotIn("ignored SIGTERM", rest)  # each exited on SIGTERM, not SIGKILL
        self.assertEqual(processes_mentioning(work), [])
        self.assertFalse(os.path.exists(work))

    def test_sigint_stops_every_process_it_started(self):
        self.interrupt([], to_group=False)

    @unittest.skipUnless(DNSMASQ, "dnsmasq not installed")
    def test_ctrl_c_to_the_process_group_stops_everything_in_srv_mode(self):
        self.interrupt(["--srv"], to_group=True)

    def test_busy_discovery_port_fails_loudly(self):
        group = ProcessGroup(prefix="muster-deploy-test-")
        self.addCleanup(group.close)
        port = str(Discovery(group).port)  # something already serving on the port
        r = subprocess.run([SCRIPT, "--check"], env=script_env(MUSTER_DISCOVERY_PORT=port),
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 1)
        self.assertIn("port %s is taken" % port, r.stderr)
        self.assertNotIn("kept in", r.stdout + r.stderr)  # nothing was written: nothing left


    def test_member_that_does_not_come_up_fails_with_its_log_tail(self):
        # A bad value in the environment (etcd's ETCD_* variables) makes
        # every member exit at start: the script must say which, show the
        # logs, stop the rest, and keep the directory for inspection.
        r = subprocess.run([SCRIPT, "--check"], env=script_env(ETCD_ELECTION_TIMEOUT="soon"),
                           capture_output=True, text=True, timeout=90)
        m = re.search(r"data dirs and logs kept in (\S+)", r.stdout + r.stderr)
        if m:
            self.addCleanup(subprocess.run, ["rm", "-rf", m.group(1)])
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertRegex(r.stderr, r"FAILED: m[1-4] exited")
        self.assertIn("---- last lines of", r.stderr)
        self.assertIn("ETCD_ELECTION_TIMEOUT", r.stderr)  # the member's own error, from its log
        self.assertIsNotNone(m)
        self.assertEqual(processes_mentioning(m.group(1)), [])


class ProcfileTest(unittest.TestCase):
    def test_every_line_runs_and_the_cluster_forms(self):
        group = ProcessGroup(prefix="muster-procfile-test-")
        self.addCleanup(group.close)
        self.addCleanup(lambda: self._dump(group))
        entries = []
        with open(os.path.join(ROOT, "deploy", "Procfile")) as f:
            for line in f:
                line = line.rstrip("\n")
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                m = re.match(r"^([A-Za-z0-9_-]+):\s+(.+)$", line)
                self.assertIsNotNone(m, "not a Procfile line: %r" % line)
                entries.append((m.group(1), m.group(2)))
        self.assertEqual([n for n, _ in entries], ["discovery", "m1", "m2", "m3", "m4"])

        # Move the fixed ports and the /tmp directory to free/temporary ones,
        # and build/bin to the build tree under test; nothing else changes.
        ports = sorted({int(p) for _, c in entries for p in re.findall(r"127\.0\.0\.1:(\d+)", c)})
        moved = {p: free_port() for p in ports}

        def localize(cmd):
            cmd = re.sub(r"127\.0\.0\.1:(\d+)", lambda m: "127.0.0.1:%d" % moved[int(m.group(1))], cmd)
            cmd = cmd.replace("/tmp/muster-procfile", group.path("procfile"))
            return cmd.replace("build/bin/", BIN_DIR.rstrip("/") + "/")
        cmds = {n: localize(c) for n, c in entries}
        for n in ("m1", "m2", "m3", "m4"):
            self.assertIn("--discovery ${MUSTER_TOKEN}", cmds[n])
        disco_url = re.search(r"--listen-url (\S+)", cmds["discovery"]).group(1)

        # The setup step the Procfile's header prescribes: a token in the
        # discovery data dir, made while muster-discovery runs, kept across
        # its restart.
        os.makedirs(group.path("procfile"))
        setup = group.start("setup-discovery", ["sh", "-c", "exec " + cmds["discovery"]], env=dict(os.environ))
        wait_for(lambda: request(disco_url, "GET", "/health")[0] == 200, 20, "muster-discovery (setup)")
        r = ctl("discovery", "new", "--size", "3", "--endpoint", disco_url)
        self.assertEqual(r.returncode, 0, r.stderr)
        token = r.stdout.strip()
        setup.kill(signal.SIGTERM)
        self.assertEqual(setup.wait(15), 0, setup.log())

        env = dict(os.environ, MUSTER_TOKEN=token)
        procs = {n: group.start(n, ["sh", "-c", "exec " + c], env=env) for n, c in cmds.items()}
        clients = {n: re.search(r"--listen-client-urls (\S+)", cmds[n]).group(1)
                   for n in ("m1", "m2", "m3", "m4")}

        def healthy(url):
            try:
                st, _, body = request(url, "GET", "/health", timeout=3)
                return st == 200 and b'"health":"true"' in body
            except OSError:
                return False

        def all_up():
            for n, p in procs.items():
                self.assertTrue(p.alive(), "%s exited:\n%s" % (n, p.log()))
            return all(healthy(u) for u in clients.values())
        wait_for(all_up, 60, "three members and a proxy to answer /health")
        proxies = [n for n in clients if os.path.isdir(group.path("procfile", n, "proxy"))]
        self.assertEqual(len(proxies), 1, "exactly one joiner should have become a proxy")
        self.assertIn("falling back to proxy", procs[proxies[0]].log())
        members = [n for n in clients if n not in proxies]
        eps = ",".join(clients[n] for n in members)
        r = ctl("--endpoints", eps, "member", "list")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sorted(re.findall(r", started, (m\d),", r.stdout)), sorted(members), r.stdout)
        r = ctl("--endpoints", clients[proxies[0]], "put", "procfile", "works")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = ctl("--endpoints", clients[members[-1]], "get", "procfile")
        self.assertEqual(r.stdout.split(), ["procfile", "works"], r.stderr)

    def _dump(self, group):
        outcome = getattr(self, "_outcome", None)
        if outcome is not None and not getattr(outcome, "success", True):
            print(group.dump_logs(2000), file=sys.stderr)


class KubernetesTest(unittest.TestCase):
    def setUp(self):
        self.docs = {}
        kdir = os.path.join(ROOT, "deploy", "kubernetes")
        for fn in sorted(os.listdir(kdir)):
            if fn.endswith(".yaml"):
                with open(os.path.join(kdir, fn)) as f:
                    for d in yaml.safe_load_all(f):
                        if d:
                            self.docs.setdefault(d["kind"], []).append(d)

    def test_statefulset_bootstraps_from_the_headless_services_srv_records(self):
        sts = self.docs["StatefulSet"][0]
        spec = sts["spec"]
        self.assertEqual(spec["replicas"], 3)
        self.assertEqual(spec["podManagementPolicy"], "Parallel")
        svc = next(s for s in self.docs["Service"] if s["metadata"]["name"] == spec["serviceName"])
        self.assertEqual(svc["spec"]["clusterIP"], "None")
        self.assertTrue(svc["spec"]["publishNotReadyAddresses"])
        labels = spec["template"]["metadata"]["labels"]
        for k, v in svc["spec"]["selector"].items():
            self.assertEqual(labels.get(k), v)
        self.assertEqual(spec["selector"]["matchLabels"], {k: labels[k] for k in spec["selector"]["matchLabels"]})

        c = spec["template"]["spec"]["containers"][0]
        env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
        self.assertEqual(env, {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"})
        self.assertEqual(c["command"], ["/usr/local/bin/muster"])
        args = dict(a[2:].split("=", 1) for a in c["args"])
        known = muster_flags()
        for a in c["args"]:
            self.assertTrue(a.startswith("--") and "=" in a, a)
            self.assertIn(a.split("=", 1)[0], known, "not a muster flag: " + a)
        # Every $(VAR) is one Kubernetes expands (declared in env).
        for a in c["args"]:
            for var in re.findall(r"\$\((\w+)\)", a):
                self.assertIn(var, env)

        # The SRV name queried is _etcd-server._tcp.<service>.<namespace>.svc.cluster.local;
        # Kubernetes publishes it for the Service port named etcd-server, TCP.
        namespace = svc["metadata"].get("namespace", "$(POD_NAMESPACE)")
        self.assertEqual(args["discovery-srv"],
                         "%s.%s.svc.cluster.local" % (svc["metadata"]["name"], namespace))
        port = next(p for p in svc["spec"]["ports"] if p["name"] == "etcd-server")
        self.assertEqual(port.get("protocol", "TCP"), "TCP")
        self.assertEqual(args["discovery-srv-name"] if "discovery-srv-name" in args else "", "")
        # Each pod advertises its stable DNS name <pod>.<service>.<ns>.svc.cluster.local
        # at the SRV port: what the SRV target:port resolves to, so it finds itself.
        self.assertEqual(args["initial-advertise-peer-urls"],
                         "http://$(POD_NAME).%s:%d" % (args["discovery-srv"], port["port"]))
        self.assertEqual(args["listen-peer-urls"], "http://0.0.0.0:%d" % port["targetPort"])
        # A pod back with an empty volume takes its dead member's seat.
        self.assertRegex(args["discovery-replace-dead"], r"^[1-9][0-9]*m$")
        self.assertNotIn("initial-cluster", args)  # excludes --discovery-srv
        self.assertNotIn("discovery", args)
        cports = {p["name"]: p["containerPort"] for p in c["ports"]}
        self.assertEqual(cports["etcd-server"], port["targetPort"])

        # Readiness on /health at the client port; data on a claim template.
        probe = c["readinessProbe"]["httpGet"]
        self.assertEqual(probe["path"], "/health")
        self.assertEqual(probe["port"], int(args["listen-client-urls"].rsplit(":", 1)[1]))
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        claims = [t["metadata"]["name"] for t in spec["volumeClaimTemplates"]]
        self.assertIn(claims[0], mounts)
        self.assertEqual(mounts[claims[0]], args["data-dir"])

    @unittest.skipUnless(DNSMASQ, "dnsmasq not installed")
    def test_each_pod_finds_itself_in_the_records_kubernetes_would_publish(self):
        # dnsmasq serves what Kubernetes DNS publishes for this Service (one
        # SRV record per pod of the StatefulSet under the named port, and the
        # pods' A records); `musterctl srv` then runs the member's SRV
        # bootstrap with each pod's expanded arguments.
        sts = self.docs["StatefulSet"][0]
        svc = next(s for s in self.docs["Service"] if s["metadata"]["name"] == sts["spec"]["serviceName"])
        ns = "demo"
        zone = "%s.%s.svc.cluster.local" % (svc["metadata"]["name"], ns)
        port = next(p for p in svc["spec"]["ports"] if p["name"] == "etcd-server")
        pods = ["%s-%d" % (sts["metadata"]["name"], i) for i in range(sts["spec"]["replicas"])]
        group = ProcessGroup(prefix="muster-k8s-test-")
        self.addCleanup(group.close)
        dns_port = free_port()
        argv = [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                "--listen-address=127.0.0.1", "--bind-interfaces", "--port=%d" % dns_port,
                "--pid-file=" + group.path("dnsmasq.pid"), "--log-facility=-",
                "--local=/cluster.local/"]
        if os.geteuid() == 0:
            argv.append("--user=root")
        for i, pod in enumerate(pods):
            argv.append("--srv-host=_%s._%s.%s,%s.%s,%d" % (
                port["name"], port.get("protocol", "TCP").lower(), zone, pod, zone, port["port"]))
            argv.append("--host-record=%s.%s,10.244.%d.10" % (pod, zone, i + 1))
        dns = group.start("dnsmasq", argv)
        c = sts["spec"]["template"]["spec"]["containers"][0]
        for pod in pods:
            args = {}
            for a in c["args"]:
                k, v = a[2:].split("=", 1)
                args[k] = v.replace("$(POD_NAME)", pod).replace("$(POD_NAMESPACE)", ns)

            def srv():
                self.assertTrue(dns.alive(), dns.log())
                r = ctl("srv", args["discovery-srv"], "--dns-server", "127.0.0.1:%d" % dns_port,
                        "--name", args["name"],
                        "--initial-advertise-peer-urls", args["initial-advertise-peer-urls"])
                return r if r.returncode == 0 else None
            r = wait_for(srv, 15, "musterctl srv for " + pod)
            entries = r.stdout.strip().split(",")
            self.assertEqual(len(entries), len(pods), r.stdout)
            self.assertIn("%s=%s" % (pod, args["initial-advertise-peer-urls"]), entries)


    def test_pod_disruption_budget_keeps_quorum(self):
        pdb = self.docs["PodDisruptionBudget"][0]
        sts = self.docs["StatefulSet"][0]
        self.assertEqual(pdb["apiVersion"], "policy/v1")
        self.assertEqual(pdb["spec"]["minAvailable"], sts["spec"]["replicas"] // 2 + 1)
        self.assertEqual(pdb["spec"]["selector"]["matchLabels"], sts["spec"]["selector"]["matchLabels"])


class CloudInitTest(unittest.TestCase):
    def setUp(self):
        path = os.path.join(ROOT, "deploy", "cloud-init", "user-data.yaml")
        with open(path) as f:
            self.text = f.read()
        self.data = yaml.safe_load(self.text)
        self.files = {w["path"]: w for w in self.data["write_files"]}

    def test_user_data_is_cloud_config_with_the_repository_unit(self):
        self.assertTrue(self.text.startswith("#cloud-config\n"))
        with open(os.path.join(ROOT, "deploy", "systemd", "muster.service")) as f:
            self.assertEqual(self.files["/etc/systemd/system/muster.service"]["content"], f.read())
        unit = self.files["/etc/systemd/system/muster.service"]["content"]
        self.assertIn("EnvironmentFile=/etc/muster/muster.env", unit)
        cmds = [" ".join(c) if isinstance(c, list) else c for c in self.data["runcmd"]]
        self.assertIn("/usr/local/sbin/muster-write-env", cmds)
        self.assertTrue(any("enable" in c and "muster.service" in c for c in cmds), cmds)
        self.assertLess(cmds.index("/usr/local/sbin/muster-write-env"),
                        next(i for i, c in enumerate(cmds) if "enable" in c))

    def test_environment_file_starts_a_member_that_registers(self):
        group = ProcessGroup(prefix="muster-cloudinit-test-")
        self.addCleanup(group.close)
        script = group.path("muster-write-env")
        with open(script, "w") as f:
            f.write(self.files["/usr/local/sbin/muster-write-env"]["content"])
        env_file = group.path("etc", "muster.env")
        r = subprocess.run(["sh", script, env_file], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(os.stat(env_file).st_mode & 0o777, 0o600)
        values = {}
        with open(env_file) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    k, v = line.split("=", 1)
                    values[k] = v
        known = {"ETCD_" + f[2:].upper().replace("-", "_") for f in muster_flags()}
        for k in values:
            self.assertIn(k, known)
        # Hands-free replacement of a dead instance (the header says why).
        self.assertRegex(values["ETCD_DISCOVERY_REPLACE_DEAD"], r"^[1-9][0-9]*m$")
        ip = re.match(r"http://([0-9.]+):2380$", values["ETCD_INITIAL_ADVERTISE_PEER_URLS"]).group(1)
        self.assertEqual(values["ETCD_LISTEN_PEER_URLS"], "http://%s:2380" % ip)
        self.assertEqual(values["ETCD_ADVERTISE_CLIENT_URLS"], "http://%s:2379" % ip)

        # Start it for real: this machine's ports and a size-1 token of a real
        # muster-discovery instead of the placeholder; the data dir from the
        # unit's Environment= line.
        disco = Discovery(group)
        token = disco.new_token(size=1)
        peer, client, local = free_port(), free_port(), free_port()
        values = {k: v.replace("http://%s:2380" % ip, "http://127.0.0.1:%d" % peer)
                  .replace("http://%s:2379" % ip, "http://127.0.0.1:%d" % client)
                  .replace("http://127.0.0.1:2379", "http://127.0.0.2:%d" % local)
                  for k, v in values.items()}
        values["ETCD_DISCOVERY"] = token
        values["ETCD_DATA_DIR"] = group.path("data")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        env.update(values)
        m = group.start("member", [MUSTER], env=env)
        client_url = "http://127.0.0.1:%d" % client

        def healthy():
            self.assertTrue(m.alive(), m.log())
            st, _, body = request(client_url, "GET", "/health", timeout=3)
            return st == 200 and b'"health":"true"' in body
        wait_for(healthy, 30, "the cloud-init member to be healthy")
        log = m.log()
        self.assertNotIn("unrecognized environment variable", log)
        for k in values:
            self.assertIn("recognized and used environment variable " + k, log)
        r = ctl("discovery", "show", token)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("complete", r.stdout)
        self.assertIn(values["ETCD_NAME"], r.stdout)


if __name__ == "__main__":
    unittest.main()
