// The DNS zone the SRV interop tests run against, as dnsmasq options.  Each
// scenario lives under its own subdomain of muster.test; host addresses are
// distinct loopback addresses (resolved only, never connected to).
#pragma once

#include <string>
#include <vector>

namespace muster::dns::testing {

inline std::vector<std::string> srv_test_zone() {
  std::vector<std::string> z = {
      // ssl only: three members on three addresses.
      "--srv-host=_etcd-server-ssl._tcp.ssl.muster.test,s1.ssl.muster.test,2380",
      "--srv-host=_etcd-server-ssl._tcp.ssl.muster.test,s2.ssl.muster.test,2380",
      "--srv-host=_etcd-server-ssl._tcp.ssl.muster.test,s3.ssl.muster.test,2380",
      "--host-record=s1.ssl.muster.test,127.0.0.11",
      "--host-record=s2.ssl.muster.test,127.0.0.12",
      "--host-record=s3.ssl.muster.test,127.0.0.13",
      // plain only: three members on ONE address, told apart by port.
      "--srv-host=_etcd-server._tcp.plain.muster.test,p1.plain.muster.test,12380",
      "--srv-host=_etcd-server._tcp.plain.muster.test,p2.plain.muster.test,22380",
      "--srv-host=_etcd-server._tcp.plain.muster.test,p3.plain.muster.test,32380",
      "--host-record=p1.plain.muster.test,127.0.0.1",
      "--host-record=p2.plain.muster.test,127.0.0.1",
      "--host-record=p3.plain.muster.test,127.0.0.1",
      // both services.
      "--srv-host=_etcd-server-ssl._tcp.both.muster.test,b1.both.muster.test,2380",
      "--srv-host=_etcd-server-ssl._tcp.both.muster.test,b2.both.muster.test,2380",
      "--srv-host=_etcd-server._tcp.both.muster.test,b3.both.muster.test,2380",
      "--host-record=b1.both.muster.test,127.0.0.21",
      "--host-record=b2.both.muster.test,127.0.0.22",
      "--host-record=b3.both.muster.test,127.0.0.23",
      // --discovery-srv-name c1: its own records next to unsuffixed ones.
      "--srv-host=_etcd-server-ssl-c1._tcp.suffix.muster.test,c1a.suffix.muster.test,2380",
      "--srv-host=_etcd-server-ssl-c1._tcp.suffix.muster.test,c1b.suffix.muster.test,2380",
      "--srv-host=_etcd-server-ssl._tcp.suffix.muster.test,other.suffix.muster.test,2380",
      "--srv-host=_etcd-client-c1._tcp.suffix.muster.test,c1a.suffix.muster.test,2379",
      "--host-record=c1a.suffix.muster.test,127.0.0.31",
      "--host-record=c1b.suffix.muster.test,127.0.0.32",
      "--host-record=other.suffix.muster.test,127.0.0.33",
      // one target without an address record.
      "--srv-host=_etcd-server._tcp.drop.muster.test,d1.drop.muster.test,2380",
      "--srv-host=_etcd-server._tcp.drop.muster.test,d2.drop.muster.test,2380",
      "--srv-host=_etcd-server._tcp.drop.muster.test,gone.drop.muster.test,2380",
      "--host-record=d1.drop.muster.test,127.0.0.41",
      "--host-record=d2.drop.muster.test,127.0.0.42",
      // no target has an address record.
      "--srv-host=_etcd-server._tcp.unres.muster.test,u1.unres.muster.test,2380",
      "--srv-host=_etcd-server._tcp.unres.muster.test,u2.unres.muster.test,2380",
      // IPv6: v6-only targets, a dual-stack target, an IP-literal client target.
      "--srv-host=_etcd-server._tcp.v6.muster.test,v1.v6.muster.test,2380",
      "--srv-host=_etcd-server._tcp.v6.muster.test,v2.v6.muster.test,2381",
      "--srv-host=_etcd-server._tcp.v6.muster.test,dual.v6.muster.test,2382",
      "--host-record=v1.v6.muster.test,::1",
      "--host-record=v2.v6.muster.test,::1",
      "--host-record=dual.v6.muster.test,127.0.0.51,::1",
      "--srv-host=_etcd-client._tcp.v6.muster.test,::1,2379",
      "--srv-host=_etcd-client._tcp.v6.muster.test,v1.v6.muster.test,2379,1",
      // client endpoints with priorities and weights.
      "--srv-host=_etcd-client-ssl._tcp.weights.muster.test,heavy.weights.muster.test,2379,0,90",
      "--srv-host=_etcd-client-ssl._tcp.weights.muster.test,light.weights.muster.test,2379,0,10",
      "--srv-host=_etcd-client-ssl._tcp.weights.muster.test,backup.weights.muster.test,2379,10,100",
      "--srv-host=_etcd-client._tcp.weights.muster.test,plain.weights.muster.test,2379,0,0",
      "--srv-host=_etcd-client._tcp.weights.muster.test,heavy.weights.muster.test,2379,5,0",
  };
  // 50 members on one address: an answer too big for UDP (c-ares retries
  // over TCP).
  for (int i = 0; i < 50; ++i) {
    const std::string n = (i < 10 ? "m0" : "m") + std::to_string(i);
    z.push_back("--srv-host=_etcd-server._tcp.many.muster.test," + n + ".many.muster.test," +
                std::to_string(3000 + i));
    z.push_back("--host-record=" + n + ".many.muster.test,127.0.0.1");
  }
  return z;
}

}  // namespace muster::dns::testing
