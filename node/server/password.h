// node/server/password.h: bcrypt password hashes for the auth users, with
// libxcrypt's crypt_r (OpenSSL has no bcrypt).  Hashes are "$2b$<cost>$..."
// strings; hashes etcd wrote ("$2a$", Go's bcrypt) verify too.
//
// Both calls are slow on purpose (cost 10: tens of milliseconds): run them
// off the transport threads.  Thread-safe.  Nothing here logs a password.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace muster::server::password {

// bcrypt hash of `password` at `cost` (4..31), salted from the OS's random
// source; nullopt when the password cannot be hashed (it contains a NUL
// byte, which bcrypt's C interface cannot carry, or the cost is invalid).
std::optional<std::string> hash(std::string_view password, int cost);

// Whether `password` matches `hashed` (compared in constant time).  False
// for a hash that is not a bcrypt hash.
bool verify(std::string_view password, const std::string& hashed);

}  // namespace muster::server::password
