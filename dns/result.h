// Result<T>: a value or an Error, for the expected failures of DNS work
// (no records, timeouts, unresolvable targets, bad input).  Broken
// invariants are not Results: they abort.
#pragma once

#include <cassert>
#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace muster::dns {

// What went wrong, coarsely, so that callers and tests can branch on it
// without parsing messages.  The message is what a human reads.
enum class ErrorKind {
  kInvalidArgument,  // bad flag value, unparsable URL, empty domain
  kNxDomain,         // the DNS server said the name does not exist
  kNoData,           // the name exists but has no records of that type
  kTimeout,          // no answer within timeout x tries
  kUnreachable,      // connection refused, or the server answered REFUSED/SERVFAIL
  kBadResponse,      // malformed answer, or another resolver failure
  kCancelled,        // the resolver was destroyed while the lookup ran
  kNoRecords,        // SRV: neither service produced a usable entry
  kMemberNotFound,   // SRV: the local member is not among the records
};

struct Error {
  ErrorKind kind;
  std::string message;
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}  // NOLINT: implicit by design

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  // REQUIRES: ok().
  const T& value() const& { return checked_value(); }
  T& value() & { return const_cast<T&>(checked_value()); }
  T&& value() && { return std::move(const_cast<T&>(checked_value())); }
  const T& operator*() const& { return value(); }
  const T* operator->() const { return &value(); }

  // REQUIRES: !ok().
  const Error& error() const {
    if (ok()) std::abort();  // reading the error of a success is a programming error
    return std::get<1>(v_);
  }

 private:
  const T& checked_value() const {
    if (!ok()) std::abort();  // using a failed result's value is a programming error
    return std::get<0>(v_);
  }
  std::variant<T, Error> v_;
};

}  // namespace muster::dns
