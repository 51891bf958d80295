"""Members bootstrapping from DNS SRV records (--discovery-srv) served by a
real dnsmasq on loopback: plain `_etcd-server._tcp` records (which etcd 3.4
ignores), and `_etcd-server-ssl._tcp` with https peers whose certificates
are checked against the SRV domain.

SRV targets are `localhost`, except in the test of names only the test's
DNS server knows: with --dns-server the members resolve peer host names
through that server too.
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bootstrap import BootTest, BootCluster, ProcessGroup, make_certs, start_dnsmasq, wait_for  # noqa: E402

DOMAIN = "example.test"


class SrvBootstrapTest(BootTest):
    PREFIX = "muster-srv-test-"

    def srv_cluster(self, size, service, scheme):
        c = BootCluster(size, group=self.group, host="localhost", scheme=scheme)
        _, server = start_dnsmasq(self.group, DOMAIN,
                                  [(service, "localhost", m.peer_port) for m in c.members])
        boot = ["--discovery-srv", DOMAIN, "--dns-server", server]
        return c, boot

    def check_one_cluster(self, c):
        c.wait_healthy()
        names = sorted(m.name for m in c.members)
        for m in c.members:
            wait_for(lambda: c.member_names(m) == names, 10, "full member list on " + m.name)
        self.assertEqual(len({m.status()["header"]["cluster_id"] for m in c.members}), 1)
        st, j = c.members[0].put("srv", "yes")
        self.assertEqual(st, 200, j)
        self.assertEqual(c.members[-1].value("srv"), "yes")

    def test_plain_srv_records_form_one_cluster_and_restarts_keep_it(self):
        c, boot = self.srv_cluster(3, "_etcd-server._tcp", "http")
        c.start(boot)
        self.check_one_cluster(c)
        log = c.members[0].proc.log()
        self.assertIn("got bootstrap from DNS for etcd-server", log)
        # A restart reads the data dir, not DNS: stop dnsmasq first.
        for p in self.group.procs:
            if p.name == "dnsmasq":
                p.close()
        c.stop_all()
        c.start(None)
        c.wait_healthy()
        self.assertEqual(c.members[1].value("srv"), "yes")
        for m in c.members:
            self.assertNotIn("got bootstrap from DNS", m.proc.log())

    def test_srv_targets_only_the_dns_server_knows(self):
        # The targets (and the advertised peer URLs) are names only the
        # private DNS server resolves, not the system resolver: the members
        # must dial each other through --dns-server too.
        c = BootCluster(3, group=self.group, scheme="http")
        for m in c.members:
            m.host = "%s.%s" % (m.name, DOMAIN)
        _, server = start_dnsmasq(self.group, DOMAIN,
                                  [("_etcd-server._tcp", m.host, m.peer_port) for m in c.members],
                                  hosts=[(m.host, "127.0.0.1") for m in c.members])
        c.start(["--discovery-srv", DOMAIN, "--dns-server", server])
        self.check_one_cluster(c)

    def _ssl_cluster(self, sans):
        c, boot = self.srv_cluster(3, "_etcd-server-ssl._tcp", "https")
        certs = self.group.path("certs")
        os.makedirs(certs, exist_ok=True)
        ca, cert, key = make_certs(certs, sans)
        for m in c.members:
            # No --peer-trusted-ca-file: etcd's rule then checks peer
            # certificates against the SRV domain.  The test CA is trusted
            # through OpenSSL's default verify paths (SSL_CERT_FILE).
            m.extra = ["--peer-cert-file", cert, "--peer-key-file", key]
            m.env = {"SSL_CERT_FILE": ca}
        return c, boot

    def test_ssl_srv_records_verify_peers_against_the_srv_domain(self):
        c, boot = self._ssl_cluster([DOMAIN, "localhost", "127.0.0.1"])
        c.start(boot)
        self.check_one_cluster(c)
        # Restarted members use their data dir (and, as in etcd, check peers
        # against the peer URL's host, which the certificate also names).
        c.stop_all()
        c.start(None)
        c.wait_healthy()
        self.assertEqual(c.members[0].value("srv"), "yes")

    def test_ssl_certificate_without_the_srv_domain_is_rejected(self):
        # Valid for the peers' host name (localhost) but not for the domain:
        # a forged SRV target must not be trusted, so peers refuse it.
        c, boot = self._ssl_cluster(["localhost", "127.0.0.1"])
        c.start(boot)
        wait_for(lambda: any("certificate verify failed" in m.proc.log() for m in c.members), 20,
                 "a peer to refuse a certificate without the SRV domain")
        self.assertFalse(any(m.healthy() for m in c.members))

    def test_existing_member_joins_with_srv_records(self):
        # The records after `member add`: the grown set is published under
        # another --discovery-srv-name, so the first three members' bootstrap
        # sees three records and the joiner sees four.
        c = BootCluster(4, group=self.group, host="localhost", scheme="http")
        first, m4 = c.members[:3], c.members[3]
        records = [("_etcd-server._tcp", "localhost", m.peer_port) for m in first]
        records += [("_etcd-server-grown._tcp", "localhost", m.peer_port) for m in c.members]
        _, server = start_dnsmasq(self.group, DOMAIN, records)
        c.start(["--discovery-srv", DOMAIN, "--dns-server", server], members=first)
        c.wait_healthy(members=first)

        def added():
            st, j = first[0].call("/v3/cluster/member/add", {"peerURLs": [m4.peer_url]})
            if st == 503:
                return None  # "unhealthy cluster" until the voters are connected for a while
            self.assertEqual(st, 200, j)
            return j
        wait_for(added, 30, "member add to be accepted")
        m4.start(["--discovery-srv", DOMAIN, "--discovery-srv-name", "grown",
                  "--dns-server", server, "--initial-cluster-state", "existing"])
        self.check_one_cluster(c)
        self.assertIn("joining an existing cluster", m4.proc.log())

    def test_no_srv_records_is_a_clear_error(self):
        c, boot = self.srv_cluster(1, "_etcd-client._tcp", "http")  # no server records
        m = c.members[0]
        m.start(boot)
        self.assertEqual(m.exit_code(20), 1)
        self.assertIn("error setting up initial cluster", m.proc.log())
        self.assertIn("_etcd-server._tcp." + DOMAIN, m.proc.log())


if __name__ == "__main__":
    unittest.main()
