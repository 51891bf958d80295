// Status: the result of a storage operation that can fail for expected
// reasons (bad input, a compacted revision, an I/O error).  Broken invariants
// are not statuses: they abort (see fatal()).
//
// Codes are gRPC status codes, because every v3 error a client sees is one and
// the server maps them straight to the JSON gateway's `code` field; messages
// are etcd's verbatim error strings where etcd has one (errors.h).
#pragma once

#include <string>
#include <utility>

namespace muster::storage {

enum class Code {
  kOk = 0,
  kCanceled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

class Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return {}; }
  bool is_ok() const { return code_ == Code::kOk; }
  explicit operator bool() const { return is_ok(); }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string to_string() const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

// Aborts the process with a message: for broken invariants and for disk
// state this code itself wrote but can no longer read (a member that lost its
// mind must not keep voting).
[[noreturn]] void fatal(const std::string& what);

}  // namespace muster::storage
