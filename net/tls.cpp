#include "net/tls.h"

#include <boost/asio/ssl.hpp>
#include <functional>
#include <stdexcept>
#include <utility>

namespace muster::net {

namespace ssl = boost::asio::ssl;

static void load(const char* what, const std::string& file, const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("cannot load ") + what + " \"" + file + "\": " + e.what());
  }
}

std::shared_ptr<ssl::context> make_server_tls_context(const TlsOptions& o) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                   ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                   ssl::context::single_dh_use);
  load("certificate", o.cert_file, [&] { ctx->use_certificate_chain_file(o.cert_file); });
  load("private key", o.key_file,
       [&] { ctx->use_private_key_file(o.key_file, ssl::context::pem); });
  if (!o.trusted_ca_file.empty())
    load("trusted CA file", o.trusted_ca_file, [&] { ctx->load_verify_file(o.trusted_ca_file); });
  if (o.client_cert_auth) {
    if (o.trusted_ca_file.empty())
      throw std::runtime_error("--client-cert-auth needs --trusted-ca-file");
    ctx->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
  }
  return ctx;
}

std::shared_ptr<ssl::context> make_client_tls_context(const TlsOptions& o) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                   ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  if (o.insecure_skip_verify) {
    ctx->set_verify_mode(ssl::verify_none);
  } else {
    if (!o.trusted_ca_file.empty())
      load("trusted CA file", o.trusted_ca_file, [&] { ctx->load_verify_file(o.trusted_ca_file); });
    else
      ctx->set_default_verify_paths();
    ctx->set_verify_mode(ssl::verify_peer);
  }
  if (o.has_certificate()) {
    load("client certificate", o.cert_file, [&] { ctx->use_certificate_chain_file(o.cert_file); });
    load("client key", o.key_file,
         [&] { ctx->use_private_key_file(o.key_file, ssl::context::pem); });
  }
  return ctx;
}

}  // namespace muster::net
