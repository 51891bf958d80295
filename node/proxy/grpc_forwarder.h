// node/proxy/grpc_forwarder.h: forwards each gRPC call the proxy accepts
// (etcdctl, clientv3 and grpc-js pointed at a proxy) to a live member, call
// by call, as etcd's grpc-proxy does.
//
// A call is relayed both ways as it happens: request messages, the client's
// half-close and cancellation go up; response messages and the final status
// come back.  Unary calls and streams (Watch, LeaseKeepAlive, Snapshot) are
// the same here.  Endpoints come from the Director in preference order; a
// member that cannot be reached (connect, resolve or TLS failure: nothing was
// sent) is marked failed and the call moves to the next one with the
// messages it had.  Once a member answered anything, a failure ends the call
// with the member's status, as a client connected to that member would see.
//
// Every member URL gets one HTTP/2 connection (net::grpc::Channel) that all
// calls share.  No thread per call.
#pragma once

#include <boost/asio/io_context.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "net/grpc.h"
#include "net/grpc_client.h"
#include "net/tls.h"
#include "node/proxy/director.h"

namespace muster::proxy {

class GrpcForwarder {
 public:
  // `director` outlives this object.  `tls` is used for https member URLs.
  GrpcForwarder(boost::asio::io_context& io, Director& director, net::TlsOptions tls,
                bool readonly);

  // Relays `call`; returns at once.  Called on the accepting connection's
  // strand (net/grpc.h Handler).
  void forward(const std::shared_ptr<net::grpc::Call>& call);

  // Whether `method` ("/etcdserverpb.KV/Put") may change the cluster (a
  // readonly proxy refuses those).
  static bool is_write(const std::string& method);

  class Relay;

 private:
  std::shared_ptr<net::grpc::Channel> channel(const std::string& url);

  boost::asio::io_context& io_;
  Director& director_;
  net::TlsOptions tls_;
  bool readonly_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<net::grpc::Channel>> channels_;
};

}  // namespace muster::proxy
